"""The Gradio UI: a thin layer over the library. `build_demo()` assembles the header and one module per tab."""

from __future__ import annotations

import logging
import os
import threading

import gradio as gr

from rlhf.access import require_owner
from rlhf.config import ModelConfig, data_dir
from rlhf.models import load_model, on_zero_gpu, registry
from rlhf.ui import chat_tab, generate_tab, hub_tab, prefer_tab, project_header, train_tab
from rlhf.ui.common import user_errors, username

INTRO = """# RLHF Space
Run the whole RLHF loop on a small language model: **generate** candidate answers, **prefer** the better ones,
**train** a reward model and the policy, **chat** with the result. Data lives in `{data}`."""


def walkthrough_tab(project: gr.Dropdown) -> None:
    from rlhf.store import list_projects
    from rlhf.walkthrough import STEPS, create_walkthrough_projects

    gr.Markdown(STEPS)
    create = gr.Button("Create the walkthrough projects", elem_id="create-walkthrough")

    @user_errors
    def make(profile: gr.OAuthProfile | None = None):
        require_owner("project", username(profile))
        names = create_walkthrough_projects()
        gr.Info("Created opossum-tutor and opossum-memes; opossum-tutor is selected.")
        return gr.update(choices=list_projects(), value=names[0])

    create.click(make, None, project, api_visibility="private")


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="RLHF Space") as demo:
        gr.Markdown(INTRO.format(data=data_dir()))
        project = project_header.build()
        with gr.Tabs():
            with gr.Tab("Start here", id="start"):
                walkthrough_tab(project)
            with gr.Tab("Generate", id="generate"):
                generate_tab.build(project)
            with gr.Tab("Prefer", id="prefer"):
                guidelines = prefer_tab.build(project)
            with gr.Tab("Train", id="train"):
                command_inputs, command = train_tab.build(project)
            with gr.Tab("Chat", id="chat"):
                chat_tab.build(project)
            with gr.Tab("Hub", id="hub"):
                login_line = hub_tab.build(project)
        demo.load(prefer_tab.load_guidelines, project, list(guidelines), api_visibility="private")
        demo.load(None, js=prefer_tab.HOTKEYS_JS)
        demo.load(train_tab.cli_equivalent, command_inputs, command, api_visibility="private")
        demo.load(hub_tab.who, None, login_line, api_visibility="private")
    return demo


def warm_up_default_model() -> threading.Thread:
    """Load the default model in the background, so the first Generate or Chat does not wait for it.

    On ZeroGPU the model is loaded on the CPU and dropped: that fetches or converts its files (the bundled GGUF's
    conversion takes ~14 s) and no more. The GPU exists only inside @spaces.GPU calls, which run in a worker process
    forked from this one; here, outside the main thread, `spaces` does not fake CUDA and moving a model to cuda raises,
    and a registry lock held by this thread during a load would be inherited held by a worker forked meanwhile.
    """

    def load():
        try:
            if on_zero_gpu():
                load_model(ModelConfig(device="cpu"))
            else:
                registry.get(ModelConfig())
        except Exception as error:  # a convenience only: the tab that needs the model says what is wrong, readably
            logging.getLogger(__name__).warning("default model not warmed up: %s", error)

    thread = threading.Thread(target=load, daemon=True, name="rlhf-warm-up")
    thread.start()
    return thread


def launch(server_name: str | None = None, server_port: int | None = None, **kwargs) -> gr.Blocks:
    """Build and serve the app; on a Space, Gradio's own environment variables pick the address."""
    from rlhf.backup import backup_from_environment

    backup_from_environment()  # RLHF_BACKUP_REPO set: restore empty projects first, then back up every 5 minutes
    warm_up_default_model()
    demo = build_demo()
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=server_name or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=server_port or int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
        theme=gr.themes.Soft(),
        **kwargs,
    )
    return demo
