"""Who may do what, and how much a visitor may ask for: the rules every handler applies to the caller.

Every Gradio event is an HTTP endpoint (`POST /gradio_api/call/<name>`, whatever its `api_visibility`), so these
checks run inside the handlers, on what the server itself knows about the caller, never on what the caller typed.

Owners. A Space's owners are its author (`SPACE_AUTHOR_NAME`, set by Hugging Face) plus anyone listed in
`RLHF_OWNERS` (comma-separated usernames). Run locally, nothing is enforced: the person at the keyboard owns the data
folder. Setting `RLHF_OWNERS` locally turns the rules on for a team server.

Logins (`trusted_login`). On a Space the Hugging Face login (OAuth) is the identity. Off a Space, Gradio's login is a
mock: every visitor who presses the button gets this machine's own account, and the session cookie is signed with a
public constant. So on a team server the mock is never an identity: the login button is not offered, and an owner
signs in by pasting a Hugging Face token, which is checked with the Hub (`verify_owner_token`) and never kept.

Annotators (`annotator_identity`). A login votes as itself. A typed name is a guest name, `guest:NAME`: it can never
equal a login (Hugging Face usernames have no colon), and the store binds it to the browser that first used it, so
nobody else can vote or undo under it. A project can take votes from logged-in users only.

Limits. What a visitor (anyone but an owner, where the rules apply) may ask for: the models the Space offers (its
default, the projects' own checkpoints, pulled models), a bounded number of new tokens; and what the server accepts
from anyone: a queue of bounded length and request bodies of bounded size.
"""

from __future__ import annotations

import hashlib
import os

from rlhf.config import RLHFError

OWNER_ACTIONS = {
    "train": "start training",
    "stop": "stop a training run",
    "generate": "generate candidates",
    "push": "push to the Hub",
    "pull": "pull from the Hub into a project",
    "guidelines": "edit the guidelines",
    "delete": "delete a run",
    "project": "create a project",
    "export": "export the preference dataset",
    "labelling": "change who may label a project or exclude an annotator",
    "model": "load a model this Space does not offer",
}
"""Actions that change what everyone sees, take the project's data away or spend the Space's compute; labelling and
chat with the offered models are open to all."""

VISITOR_MAX_NEW_TOKENS = 256
"""Most new tokens a visitor's chat answer or arena answer may have (`RLHF_VISITOR_MAX_NEW_TOKENS` overrides it):
seconds of work on a CPU Space, not the minutes that the slider's 1024 would cost everyone waiting behind it."""
QUEUE_SIZE = 32
"""Events waiting in the server's queue at most; the next one is refused with "Queue is full" (HTTP 503)."""
MAX_REQUEST_BYTES = 1_000_000
"""Largest request body the server reads (HTTP 413 beyond), uploads aside: the biggest legitimate request is a chat
history or a prompt list, far below this."""
MAX_UPLOAD = "2mb"
"""Largest file a visitor may upload (the prompt file of the Generate tab), Gradio's `max_file_size`."""


def on_space() -> bool:
    return bool(os.environ.get("SPACE_ID"))


def owners() -> list[str]:
    """The usernames allowed to do `OWNER_ACTIONS`: the Space's author and the `RLHF_OWNERS` list."""
    names = [name.strip() for name in os.environ.get("RLHF_OWNERS", "").split(",") if name.strip()]
    author = os.environ.get("SPACE_AUTHOR_NAME", "").strip()
    if author and author not in names:
        names.insert(0, author)
    return names


def enforced() -> bool:
    """Rules apply on a Space, or locally when `RLHF_OWNERS` names who owns this server."""
    return on_space() or bool(os.environ.get("RLHF_OWNERS", "").strip())


def team_server() -> bool:
    """Rules on, off a Space: Gradio's login is a mock here, so owners sign in with a token instead."""
    return enforced() and not on_space()


def is_owner(username: str | None) -> bool:
    return not enforced() or (username is not None and username in owners())


def may(action: str, username: str | None) -> bool:
    if action not in OWNER_ACTIONS:
        raise ValueError(f"unknown action {action!r}; known: {', '.join(OWNER_ACTIONS)}")
    return is_owner(username)


def require_owner(action: str, username: str | None) -> None:
    """Raise a readable `RLHFError` when `username` (None: not logged in) may not do `action` here."""
    if may(action, username):
        return
    what = OWNER_ACTIONS[action]
    listed = ", ".join(owners()) or "nobody (set RLHF_OWNERS)"
    if username is None:
        how = ("sign in with your Hugging Face token under *Owner sign-in* at the top" if team_server() else
               "log in with the Hugging Face button at the top")
        raise RLHFError(f"Only the owner of this Space may {what} (owners: {listed}). If that is you, {how}; "
                        "otherwise duplicate the Space to train your own. Labelling and chat are open to everyone.")
    raise RLHFError(f"You are logged in as {username!r}; only the owner of this Space may {what} (owners: {listed}). "
                    "Duplicate the Space to run your own, or ask the owner to add you to RLHF_OWNERS. "
                    "Labelling and chat are open to everyone.")


# identity -----------------------------------------------------------------------------------------------------------
def trusted_login(profile_username: str | None, signed_in_owner: str | None) -> str | None:
    """The login a request may act as, from Gradio's OAuth profile and the owner sign-in of a team server.

    On a Space: the Hugging Face login. On a team server: only an owner whose token the Hub confirmed (Gradio's mock
    login would make every visitor this machine's account). On your own machine, rules off: the mock login is you.
    """
    if on_space():
        return profile_username
    if enforced():
        return signed_in_owner
    return signed_in_owner or profile_username


GUEST_PREFIX = "guest:"
"""A name typed into the app is stored as `guest:NAME`, a namespace apart from Hugging Face logins (which have no
colon), so a typed name can never vote as a login."""
MAX_NAME = 64


def validate_annotator(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise RLHFError("annotator: no name; log in, or type your name in the Annotator field.")
    if len(name.removeprefix(GUEST_PREFIX)) > MAX_NAME:
        raise RLHFError(f"annotator: the name is longer than {MAX_NAME} characters; shorten it.")
    return name


def guest_name(typed: str | None) -> str:
    """The stored name of a name typed into the app (or sent to the API): `guest:NAME`."""
    return GUEST_PREFIX + validate_annotator(typed)


def is_guest(annotator: str) -> bool:
    return annotator.startswith(GUEST_PREFIX)


def annotator_identity(login: str | None, typed: str | None, logins_only: bool) -> str:
    """Who a vote is by: the login when there is one (the typed name is then ignored), else the guest name; refused
    when the project takes votes from logged-in users only."""
    if login:
        return login
    if logins_only:
        how = "sign in as an owner at the top" if team_server() else "log in with the Hugging Face button at the top"
        raise RLHFError(f"This project takes votes from logged-in users only: {how} to label.")
    return guest_name(typed)


def holder_key(browser_key: str | None, session: str) -> str:
    """What a guest name is bound to, hashed before it is stored: the random key the app keeps in this browser's
    local storage, or (API clients) the Gradio session. The two never collide: each is prefixed."""
    raw = f"browser:{browser_key}" if browser_key else f"session:{session}"
    return hashlib.sha256(raw.encode()).hexdigest()


def verify_owner_token(token: str | None) -> str:
    """The owner a Hugging Face token belongs to, asked of the Hub; a readable refusal otherwise. Team servers only:
    the token is checked once and never stored, shown or logged."""
    from huggingface_hub import whoami

    token = (token or "").strip()
    if not token:
        raise RLHFError("sign in: paste a Hugging Face access token (huggingface.co/settings/tokens; read access is "
                        "enough) to prove you are an owner.")
    try:
        user = whoami(token=token)
    except Exception as error:  # a wrong token (401), no connection, offline mode: all say the same to the caller
        raise RLHFError(f"sign in: the Hugging Face Hub did not confirm this token ({type(error).__name__}); check "
                        "the token, and that this server can reach the Hub.") from error
    name = user.get("name")
    if user.get("type") != "user" or name not in owners():
        raise RLHFError(f"sign in: this token belongs to {name!r}, who is not an owner of this server (owners: "
                        f"{', '.join(owners())}). Labelling and chat are open to everyone.")
    return name


# what a visitor may ask for -----------------------------------------------------------------------------------------
def require_offered_model(spec: str | None, offered: list[str], username: str | None) -> str:
    """`spec` when a visitor may use it (it is one of the offered models) or the caller is an owner.

    Decided on the string alone, before anything is fetched, loaded or looked up on disk: a visitor learns nothing
    about the server's files, and the Space's token never downloads what a visitor names."""
    spec = (spec or "").strip()
    if spec in offered or is_owner(username):
        return spec
    raise RLHFError("model: visitors may use the models in the list only (the base model, the project's tuned "
                    "policies and the models its owner pulled); pick one there, or duplicate the Space to load "
                    "other models.")


def visitor_max_new_tokens() -> int:
    return int(os.environ.get("RLHF_VISITOR_MAX_NEW_TOKENS") or VISITOR_MAX_NEW_TOKENS)


def cap_new_tokens(asked: int, username: str | None) -> int:
    """How many new tokens the caller gets: what they asked for, at most `visitor_max_new_tokens()` for a visitor."""
    asked = int(asked)
    return asked if is_owner(username) else min(asked, visitor_max_new_tokens())
