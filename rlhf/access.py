"""Who may do what: on a public Space, visitors label and chat; the owner trains, generates, pushes and deletes.

A Space's owner is its author (`SPACE_AUTHOR_NAME`, set by Hugging Face) plus anyone listed in `RLHF_OWNERS`
(comma-separated usernames, a Space variable). Run locally, nothing is enforced: the person at the keyboard owns the
data folder. Setting `RLHF_OWNERS` locally turns the same rules on, for a team server shared on a network.

Identity comes from the Hugging Face login (`gr.LoginButton`, OAuth): a name typed into the Annotator box is a
label, not an identity, so it never grants anything.
"""

from __future__ import annotations

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
}
"""Actions that change what everyone sees or spend the Space's compute; labelling and chat are open to all."""


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


def may(action: str, username: str | None) -> bool:
    if action not in OWNER_ACTIONS:
        raise ValueError(f"unknown action {action!r}; known: {', '.join(OWNER_ACTIONS)}")
    return not enforced() or (username is not None and username in owners())


def require_owner(action: str, username: str | None) -> None:
    """Raise a readable `RLHFError` when `username` (None: not logged in) may not do `action` here."""
    if may(action, username):
        return
    what = OWNER_ACTIONS[action]
    listed = ", ".join(owners()) or "nobody (set RLHF_OWNERS)"
    if username is None:
        raise RLHFError(f"Only the owner of this Space may {what} (owners: {listed}). If that is you, log in with "
                        "the Hugging Face button at the top; otherwise duplicate the Space to train your own. "
                        "Labelling and chat are open to everyone.")
    raise RLHFError(f"You are logged in as {username!r}; only the owner of this Space may {what} (owners: {listed}). "
                    "Duplicate the Space to run your own, or ask the owner to add you to RLHF_OWNERS. "
                    "Labelling and chat are open to everyone.")
