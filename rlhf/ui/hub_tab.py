"""Hub tab: push the preference dataset and policy checkpoints to the Hugging Face Hub, pull datasets and models.

A thin layer over rlhf.hub. Who may: the owners (rlhf.access). Which token pushes: the server's own, `HF_TOKEN` (on
a Space, a secret the owner adds; locally also the cached `hf auth login`), never a visitor's: the Space's OAuth asks
visitors for their identity only, not for rights over their account. A token is passed to huggingface_hub and
nowhere else: never shown, logged or saved.
"""

from __future__ import annotations

import os
from functools import partial

import gradio as gr
import pandas as pd

from rlhf import access, hub
from rlhf.checkpoints import POLICY_KINDS
from rlhf.config import RLHFError
from rlhf.store import Store
from rlhf.ui.common import checkpoint_picker, code, user_errors, username

PUSHED_COLUMNS = ["what", "repo", "revision", "when"]


def require_push_token() -> None:
    """Pushes use the server's `HF_TOKEN` (huggingface_hub reads it): on a Space, say how to add it when it is
    missing, instead of failing half-way through an upload."""
    if access.on_space() and not os.environ.get("HF_TOKEN"):
        raise RLHFError("push: this Space has no HF_TOKEN secret. Add a write token of the account to push to as the "
                        "secret HF_TOKEN (Space settings > Variables and secrets); pushes then go to that account.")


def pushed_table(project: str) -> pd.DataFrame:
    """What this project pushed to and pulled from the Hub (its hub.json), newest first."""
    try:
        record = hub.read_record(Store.open(project))
    except RLHFError:
        return pd.DataFrame(columns=PUSHED_COLUMNS)
    rows = []
    if record["dataset"]:
        d = record["dataset"]
        rows.append(("dataset (pushed)", d["repo_id"], d["revision"][:7], d["pushed_at"]))
    for checkpoint_id, c in record["checkpoints"].items():
        rows.append((f"{checkpoint_id} (pushed)", c["repo_id"], c["revision"][:7], c["pushed_at"]))
    for pulled in record["pulls"]:
        rows.append(("dataset (pulled)", pulled["repo_id"], pulled["revision"][:7], pulled["pulled_at"]))
    for repo_id, m in record["models"].items():
        rows.append(("model (pulled)", repo_id, m["revision"][:7], m["pulled_at"]))
    return pd.DataFrame(sorted(rows, key=lambda row: row[3], reverse=True), columns=PUSHED_COLUMNS)


def who(profile: gr.OAuthProfile | None = None, request: gr.Request = None) -> str:
    """Who pushes and who may do what here, and where the votes are backed up."""
    return f"{login_line(profile, request)}\n\n{backup_line()}"


def backup_line() -> str:
    from rlhf import backup

    if backup.ACTIVE is not None:
        return (f"Votes are backed up to the private dataset repo `{backup.ACTIVE.repo_id}` every "
                f"{backup.ACTIVE.every:g} minutes, and restored from it when the Space restarts empty.")
    return ("Votes are not backed up to the Hub: set the `RLHF_BACKUP_REPO` variable and an `HF_TOKEN` secret (see "
            "README) so a Space without persistent storage keeps them across restarts.")


def login_line(profile: gr.OAuthProfile | None, request: gr.Request | None = None) -> str:
    caller = username(profile, request)
    if access.on_space():
        if caller is None:
            rule = "Log in to push" if access.owners() else "Pushing needs a login"
            return f"Not logged in. {rule}; labelling and chat are open to everyone."
        role = "an owner of this Space" if access.may("push", caller) else \
            "a visitor (label and chat; only the owners push)"
        return (f"Logged in as **{code(caller)}**, {role}. Pushes use the Space's `HF_TOKEN` secret, to that "
                "account's namespace unless you name a repo.")
    line = ("Run locally: pushes use `HF_TOKEN` or your `hf auth login`, to that account's namespace unless you name "
            "a repo.")
    if access.enforced():
        line += f" Owners here (RLHF_OWNERS): {', '.join(access.owners())}."
        line += f" Signed in as owner **{code(caller)}**." if caller else " Owners sign in at the top to push."
    return line


@user_errors
def push_dataset(project: str, repo_id: str, private: bool, profile: gr.OAuthProfile | None = None,
                 request: gr.Request = None, progress=gr.Progress()):
    access.require_owner("push", username(profile, request))
    require_push_token()
    progress(0, desc="Exporting and uploading the preference dataset...")
    pushed = hub.push_dataset(Store.open(project), (repo_id or "").strip() or None, private=bool(private))
    rows = ", ".join(f"{n} {split}" for split, n in pushed["rows"].items() if n) or "no rows"
    return (f"Pushed the preference dataset ({rows}) to [{pushed['repo_id']}]({pushed['url']}) at revision "
            f"`{pushed['revision'][:7]}`.", pushed_table(project))


@user_errors
def push_checkpoint(project: str, checkpoint: str, repo_id: str, private: bool, merged: bool,
                    profile: gr.OAuthProfile | None = None, request: gr.Request = None, progress=gr.Progress()):
    access.require_owner("push", username(profile, request))
    require_push_token()
    progress(0, desc="Staging the checkpoint and its card, uploading...")
    pushed = hub.push_checkpoint(Store.open(project), checkpoint or "latest", (repo_id or "").strip() or None,
                                 private=bool(private), merged=bool(merged))
    lines = [f"Pushed checkpoint `{pushed['checkpoint']}` ({len(pushed['files'])} files) to "
             f"[{pushed['repo_id']}]({pushed['url']}) at revision `{pushed['revision'][:7]}`."]
    lines += [f"- Note: {warning}" for warning in pushed["warnings"]]
    if hub.read_record(Store.open(project))["dataset"]:
        lines.append("- Push the dataset again so its card lists this model.")
    return "\n".join(lines), pushed_table(project)


@user_errors
def pull(project: str, kind: str, repo_id: str, revision: str, profile: gr.OAuthProfile | None = None,
         request: gr.Request = None, progress=gr.Progress()):
    access.require_owner("pull", username(profile, request))
    repo_id = (repo_id or "").strip()
    if not repo_id:
        raise RLHFError("pull: name the repo, as owner/name.")
    store = Store.open(project)
    progress(0, desc=f"Downloading {repo_id}...")
    revision = (revision or "").strip() or None
    if kind == "dataset":
        pulled = hub.pull_dataset(store, repo_id, revision)
        text = (f"Imported {pulled['rows']} rows from {repo_id} at `{pulled['revision'][:7]}`: {pulled['pairs']} "
                f"pairs, {pulled['votes_added']} new votes"
                + (f", {pulled['guidelines']} guideline versions" if pulled["guidelines"] else "") + ".")
    else:
        path = hub.pull_model(store, repo_id, revision)
        text = f"Downloaded {repo_id} to `{path}`: it is now in the model pickers of this project."
    return text, pushed_table(project)


def build(project: gr.Dropdown) -> gr.Markdown:
    """The tab; returns the login line, which the page fills on load (it depends on who is logged in)."""
    login_line = gr.Markdown(who(), elem_id="hub-who")
    with gr.Row():
        with gr.Column():
            gr.Markdown("### Push the preference dataset\nThe export (TRL preference format) and a card with the "
                        "guidelines, annotators, agreement, processing and the models trained on it.")
            dataset_repo = gr.Textbox(label="Dataset repo", placeholder="default: YOU/PROJECT-preferences",
                                      elem_id="hub-dataset-repo")
            push_data = gr.Button("Push dataset", variant="primary", elem_id="hub-push-dataset")
        with gr.Column():
            gr.Markdown("### Push a policy checkpoint\nThe LoRA adapter (or full weights), metrics and a card with "
                        "its lineage: base model, dataset revision, reward model, hyperparameters, curves, evaluation.")
            checkpoint = gr.Dropdown(["latest"], value="latest", label="Checkpoint", allow_custom_value=True,
                                     elem_id="hub-checkpoint")
            model_repo = gr.Textbox(label="Model repo", placeholder="default: YOU/PROJECT-CHECKPOINT",
                                    elem_id="hub-model-repo")
            merged = gr.Checkbox(label="Also upload the merged full model (loads without PEFT)")
            push_model = gr.Button("Push checkpoint", variant="primary", elem_id="hub-push-checkpoint")
    private = gr.Checkbox(label="Create new repos as private", value=True, elem_id="hub-private")
    with gr.Accordion("Pull from the Hub", open=False):
        with gr.Row():
            kind = gr.Radio(["dataset", "model"], value="dataset", label="What",
                            info="dataset: import its preferences into this project; model: add it as a model spec")
            pull_repo = gr.Textbox(label="Repo", placeholder="owner/name", elem_id="hub-pull-repo")
            revision = gr.Textbox(label="Revision", placeholder="main", elem_id="hub-pull-revision")
        pull_button = gr.Button("Pull", elem_id="hub-pull")
    status = gr.Markdown(elem_id="hub-status")
    history = gr.Dataframe(pushed_table(project.value), headers=PUSHED_COLUMNS, interactive=False,
                           label="Pushed and pulled", elem_id="hub-history")

    private_api = dict(api_visibility="private")
    push_data.click(push_dataset, [project, dataset_repo, private], [status, history], **private_api)
    push_model.click(push_checkpoint, [project, checkpoint, model_repo, private, merged], [status, history],
                     **private_api)
    pull_button.click(pull, [project, kind, pull_repo, revision], [status, history], **private_api)
    project.change(pushed_table, project, history, **private_api)
    policies = partial(checkpoint_picker, kinds=POLICY_KINDS)
    project.change(lambda name: {**policies(name), "value": "latest"}, project, checkpoint, **private_api)
    checkpoint.focus(policies, project, checkpoint, **private_api)
    return login_line
