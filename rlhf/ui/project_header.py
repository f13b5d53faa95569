"""The header: pick or create the project every tab works in; log in (a Space), or sign in as an owner (a team
server, where Gradio's login would be a mock)."""

from __future__ import annotations

import gradio as gr

from rlhf import access
from rlhf.access import require_owner
from rlhf.store import Store, list_projects
from rlhf.ui.common import code, login_available, owner_sessions, session_id, user_errors, username

DEFAULT_PROJECT = "default"


def ensure_a_project() -> list[str]:
    """Projects to offer; a first start creates `default` so a newcomer can generate straight away."""
    names = list_projects()
    if not names:
        Store.open(DEFAULT_PROJECT, create=True)
        names = list_projects()
    return names


@user_errors
def create_project(name: str, profile: gr.OAuthProfile | None = None, request: gr.Request = None):
    require_owner("project", username(profile, request))
    store = Store.open(name, create=True)
    gr.Info(f"Project {store.name!r} is ready.")
    return gr.update(choices=list_projects(), value=store.name), ""


@user_errors
def sign_in(token: str, request: gr.Request = None):
    """Team server: the Hub confirms whose token this is; an owner's browser session is then signed in. The token is
    not kept (the box is cleared)."""
    owner = access.verify_owner_token(token)
    owner_sessions.sign_in(session_id(request), owner)
    return "", f"Signed in as owner **{code(owner)}** (this page; reloading signs out)."


def sign_out(request: gr.Request = None):
    owner_sessions.sign_out(session_id(request))
    return "Signed out."


def build() -> gr.Dropdown:
    names = ensure_a_project()
    with gr.Row():
        project = gr.Dropdown(
            choices=names, value=DEFAULT_PROJECT if DEFAULT_PROJECT in names else names[0],
            label="Project", info="Each project has its own prompts, votes, guidelines and checkpoints.",
            allow_custom_value=True,  # projects made by the CLI or another visitor appear without a restart
            elem_id="project", scale=3,
        )
        new_name = gr.Textbox(label="New project", placeholder="e.g. opossum-tutor", elem_id="new-project", scale=2)
        create = gr.Button("Create project", elem_id="create-project", scale=1, size="md")
        if login_available():  # one login for the app: annotator identity and owner rights
            gr.LoginButton(scale=1)
    if access.team_server():
        with gr.Accordion("Owner sign-in (team server)", open=False):
            gr.Markdown("Owners (`RLHF_OWNERS`) sign in with a Hugging Face token, checked with the Hub once and not "
                        "kept. Everyone else labels and chats as a guest.")
            with gr.Row():
                token = gr.Textbox(label="Hugging Face token", type="password", elem_id="owner-token", scale=3)
                sign_in_button = gr.Button("Sign in as owner", elem_id="owner-sign-in", scale=1)
                sign_out_button = gr.Button("Sign out", elem_id="owner-sign-out", scale=1)
            signed_in = gr.Markdown(elem_id="owner-status")
        sign_in_button.click(sign_in, token, [token, signed_in], api_visibility="private")
        token.submit(sign_in, token, [token, signed_in], api_visibility="private")
        sign_out_button.click(sign_out, None, signed_in, api_visibility="private")
    create.click(create_project, [new_name], [project, new_name], api_visibility="private")
    new_name.submit(create_project, [new_name], [project, new_name], api_visibility="private")
    project.focus(lambda: gr.update(choices=list_projects()), None, project, queue=False, api_visibility="private")
    return project
