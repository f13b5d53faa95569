"""What the tabs share: readable errors shown as text, who the caller is, the heavy-work queue, stop signals."""

from __future__ import annotations

import atexit
import functools
import hashlib
import html
import inspect
import re
import shutil
import tempfile
import threading
from pathlib import Path

import gradio as gr

from rlhf import access
from rlhf.config import RLHFError, default_model_spec
from rlhf.store import Store

MODEL_QUEUE = "model"
"""concurrency_id of every event that runs a model: one at a time, so two users never fight over one CPU/GPU."""


def error_toast(error: Exception) -> gr.Error:
    """A `gr.Error` that shows the message as text: Gradio renders a toast's message as HTML, and messages quote what
    the caller sent (a project name, the start of a prompt), which must not become an image or a link."""
    return gr.Error(html.escape(str(error), quote=False))


def user_errors(fn):
    """Show an `RLHFError` as a `gr.Error` (a readable toast, no traceback); works for plain and generator handlers."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except RLHFError as error:
                raise error_toast(error) from error

        return generator_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RLHFError as error:
            raise error_toast(error) from error

    return wrapper


_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def as_text(text: str) -> str:
    """Text that a gr.Markdown shows as written: every ASCII punctuation character backslash-escaped (CommonMark lets
    any of them be), so `![x](http://...)`, `<img>` or `**` in an error message stay characters."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", str(text))


def code(text: str) -> str:
    """Text safe inside a markdown code span (a backtick would end it)."""
    return str(text).replace("`", "'")


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


class OwnerSessions:
    """Team servers: the browser sessions whose owner proved a Hugging Face token (`access.verify_owner_token`).
    In memory on purpose: a restart signs everyone out, and the token itself is never kept."""

    def __init__(self):
        self._owners: dict[str, str] = {}
        self._lock = threading.Lock()

    def sign_in(self, session: str, owner: str) -> None:
        with self._lock:
            self._owners[session] = owner

    def sign_out(self, session: str) -> None:
        with self._lock:
            self._owners.pop(session, None)

    def owner(self, session: str) -> str | None:
        with self._lock:
            return self._owners.get(session)


owner_sessions = OwnerSessions()


def username(profile: gr.OAuthProfile | None, request: gr.Request | None = None) -> str | None:
    """Who the caller is logged in as (None: nobody), the identity rlhf.access checks: the Hugging Face login on a
    Space, an owner who signed in with a token on a team server (never Gradio's mock login there)."""
    signed_in = owner_sessions.owner(session_id(request)) if request is not None else None
    return access.trusted_login(profile.username if profile is not None else None, signed_in)


def annotator_name(store: Store, typed: str, profile: gr.OAuthProfile | None, request: gr.Request | None,
                   browser_key: str | None = None) -> str:
    """Who votes (Prefer, ranking, the arena, the API): the login, else `guest:NAME` held by this browser (the key
    the page keeps in local storage; API clients: their Gradio session). A name another browser holds is refused,
    so nobody votes or undoes under someone else's name."""
    name = access.annotator_identity(username(profile, request), typed, store.setting("logins_only"))
    if access.is_guest(name) and not store.claim_guest(name, access.holder_key(browser_key, session_id(request))):
        raise RLHFError(f"annotator: the name {name.removeprefix('guest:')!r} is in use in another browser in project "
                        f"{store.name!r}; type another name, or log in to keep one name wherever you label.")
    return name


def offered_models(project: str | None = None) -> list[str]:
    """The model specs a visitor may use: the default model and, in `project` (or every project, for Chat, which has
    no project), the tuned policies and pulled models: what the model pickers list."""
    from rlhf.store import list_projects

    projects = [project] if project else list_projects()
    specs = [default_model_spec()]
    for name in projects:
        specs += [spec for _, spec in model_choices(name)[1:]]
    return specs


def offered_model(spec: str, project: str | None, profile: gr.OAuthProfile | None, request: gr.Request | None) -> str:
    """The spec, when the caller may use it (`access.require_offered_model`)."""
    return access.require_offered_model(spec, offered_models(project), username(profile, request))


CHOICE_WORDS = {"a": "left better", "b": "right better", "tie": "tie", "both_bad": "both bad", "skip": "skipped"}
"""A vote as shown, in words, for the line that confirms it."""


@functools.cache
def login_available() -> bool:
    """Show the Login button? Always on a Space. Never on a team server (rules on, off a Space): there Gradio's mock
    login would hand every visitor this machine's account. On your own machine Gradio mocks the login with the account
    of HF_TOKEN (or the cached login), asked once at start: without a token that answers, the button would stop
    the app."""
    if access.on_space():
        return True
    if access.enforced():
        return False
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

    try:
        ids = [m["id"] for m in reversed(list_checkpoints(Store.open(project), kinds))]
    except RLHFError:  # a project name still being typed
        ids = []
    return gr.update(choices=["latest", *ids])


def refresh_models(project: str):
    """Dropdown update with the project's current model list (new checkpoints appear without a restart)."""
    return gr.update(choices=model_choices(project))
