"""The header: pick or create the project every tab works in."""

from __future__ import annotations

import gradio as gr

from rlhf.store import Store, list_projects
from rlhf.access import require_owner
from rlhf.ui.common import login_available, user_errors, username

DEFAULT_PROJECT = "default"


def ensure_a_project() -> list[str]:
    """Projects to offer; a first start creates `default` so a newcomer can generate straight away."""
    names = list_projects()
    if not names:
        Store.open(DEFAULT_PROJECT, create=True)
        names = list_projects()
    return names


@user_errors
def create_project(name: str, profile: gr.OAuthProfile | None = None):
    require_owner("project", username(profile))
    store = Store.open(name, create=True)
    gr.Info(f"Project {store.name!r} is ready.")
    return gr.update(choices=list_projects(), value=store.name), ""


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
        if login_available():  # one login for the app: annotator identity, owner rights, Hub pushes
            gr.LoginButton(scale=1)
    create.click(create_project, [new_name], [project, new_name], api_visibility="private")
    new_name.submit(create_project, [new_name], [project, new_name], api_visibility="private")
    project.focus(lambda: gr.update(choices=list_projects()), None, project, queue=False, api_visibility="private")
    return project
