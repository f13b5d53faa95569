"""What the tabs share: turning library errors into readable UI messages, the heavy-work queue, stop signals."""

from __future__ import annotations

import atexit
import functools
import hashlib
import inspect
import shutil
import tempfile
import threading
from pathlib import Path

import gradio as gr

from rlhf.config import RLHFError, default_model_spec

MODEL_QUEUE = "model"
"""concurrency_id of every event that runs a model: one at a time, so two users never fight over one CPU/GPU."""


def user_errors(fn):
    """Show an `RLHFError` as a `gr.Error` (a readable toast, no traceback); works for plain and generator handlers."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except RLHFError as error:
                raise gr.Error(str(error)) from error

        return generator_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RLHFError as error:
            raise gr.Error(str(error)) from error

    return wrapper


class StopSignal:
    """A stop request the running handler checks (`is_set`), seen across processes.

    On ZeroGPU a @spaces.GPU handler runs in a worker forked from the server process, while the Stop/Cancel click is
    handled in the server process: a threading.Event set there never reaches the worker. The click creates a flag
    file that both processes see; `set()` (the handler's own "stop now", when its stream is closed) stays local.
    """

    def __init__(self, flag: Path):
        self.flag = flag
        self._local = threading.Event()

    def is_set(self) -> bool:
        return self._local.is_set() or self.flag.exists()

    def set(self) -> None:
        self._local.set()


class StopSignals:
    """One stop signal per browser session and action, so a Stop/Cancel button reaches the running handler.

    (Signals cannot live in gr.State: Gradio deep-copies state values, and an Event holds a lock.) The flag files live
    in a folder made when the server starts, which a forked worker inherits by name.
    """

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="rlhf-stop-"))
        atexit.register(shutil.rmtree, self.folder, True)  # a forked worker ends with os._exit: only the server runs it

    def _flag(self, session: str, action: str) -> Path:
        # The session id comes from the client: hashed, it cannot name a path outside the folder.
        return self.folder / hashlib.sha256(f"{session}\0{action}".encode()).hexdigest()

    def start(self, session: str, action: str) -> StopSignal:
        """A fresh signal for a run that starts now (a click from before it started does not stop it)."""
        flag = self._flag(session, action)
        flag.unlink(missing_ok=True)
        return StopSignal(flag)

    def stop(self, session: str, action: str) -> None:
        self._flag(session, action).touch()


stop_signals = StopSignals()


def session_id(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "api"


def username(profile: gr.OAuthProfile | None) -> str | None:
    """Who is logged in with Hugging Face (None: nobody); the identity rlhf.access checks."""
    return profile.username if profile is not None else None


def annotator_name(typed: str, profile: gr.OAuthProfile | None) -> str:
    """Who votes: the Hugging Face login when someone is logged in, else the typed name (Prefer and the arena)."""
    from rlhf.prefer import validate_annotator

    if profile is not None:
        return profile.username
    return validate_annotator(typed)


CHOICE_WORDS = {"a": "left better", "b": "right better", "tie": "tie", "both_bad": "both bad", "skip": "skipped"}
"""A vote as shown, in words, for the line that confirms it."""


@functools.cache
def login_available() -> bool:
    """Show the Login button? Always on a Space. Locally Gradio mocks the login with the account of HF_TOKEN (or
    the cached login), asked once at start: without a token that answers, the button would stop the app."""
    from rlhf.access import on_space

    if on_space():
        return True
    from huggingface_hub import constants, get_token, whoami

    if constants.HF_HUB_OFFLINE or get_token() is None:
        return False
    try:
        return whoami().get("type") == "user"
    except Exception:  # no connection, a bad token: run without the button
        return False


def model_choices(project: str | None = None) -> list[tuple[str, str]]:
    """Models offered in the model pickers: the default base model, the project's tuned policies (newest first),
    then models pulled from the Hub into the project."""
    from rlhf.checkpoints import POLICY_KINDS, list_checkpoints
    from rlhf.hub import read_record
    from rlhf.store import Store

    choices = [(f"{default_model_spec()} (base)", default_model_spec())]
    try:
        store = Store.open(project) if project else None
    except RLHFError:
        store = None
    if store is not None:
        for meta in reversed(list_checkpoints(store, POLICY_KINDS)):
            choices.append((f"{meta['id']} ({meta['kind']})", meta["path"]))
        for repo_id, pulled in read_record(store)["models"].items():
            choices.append((f"{repo_id} (pulled)", pulled["path"]))
    return choices


def checkpoint_picker(project: str, kinds: tuple[str, ...]):
    """Dropdown update: `latest`, then the project's checkpoints of these kinds, newest first."""
    from rlhf.checkpoints import list_checkpoints
    from rlhf.store import Store

    try:
        ids = [m["id"] for m in reversed(list_checkpoints(Store.open(project), kinds))]
    except RLHFError:  # a project name still being typed
        ids = []
    return gr.update(choices=["latest", *ids])


def refresh_models(project: str):
    """Dropdown update with the project's current model list (new checkpoints appear without a restart)."""
    return gr.update(choices=model_choices(project))
