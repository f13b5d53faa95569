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
    def make(profile: gr.OAuthProfile | None = None, request: gr.Request = None):
        require_owner("project", username(profile, request))
        names = create_walkthrough_projects()
        gr.Info("Created opossum-tutor and opossum-memes; opossum-tutor is selected.")
        return gr.update(choices=list_projects(), value=names[0])

    create.click(make, None, project, api_visibility="private")


def build_demo() -> gr.Blocks:
    # Gradio keeps a copy of every file it serves (export archives): files older than an hour go, checked hourly.
    with gr.Blocks(title="RLHF Space", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO.format(data=data_dir()))
        project = project_header.build()
        # This browser's key for its guest names, in its local storage: fixed names, so it survives a restart.
        browser_key = gr.BrowserState(None, storage_key="rlhf-browser-key", secret="rlhf-browser-key")
        with gr.Tabs():
            with gr.Tab("Start here", id="start"):
                walkthrough_tab(project)
            with gr.Tab("Generate", id="generate"):
                generate_tab.build(project)
            with gr.Tab("Prefer", id="prefer"):
                guidelines, labelling = prefer_tab.build(project, browser_key)
            with gr.Tab("Train", id="train"):
                command_inputs, command = train_tab.build(project)
            with gr.Tab("Chat", id="chat"):
                chat_tab.build(project, browser_key)
            with gr.Tab("Hub", id="hub"):
                login_line = hub_tab.build(project)
        demo.load(None, browser_key, browser_key, js=prefer_tab.BROWSER_KEY_JS)
        demo.load(prefer_tab.load_guidelines, project, guidelines, api_visibility="private")
        demo.load(prefer_tab.show_labelling, project, labelling, api_visibility="private")
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


class LimitRequestSize:
    """ASGI middleware: answer 413 to a request whose body is over `max_bytes` (uploads aside: Gradio's
    `max_file_size` bounds those while it reads them), by its Content-Length or as the body streams in."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].rstrip("/").endswith("/upload"):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send):
        body = f"Request body over {self.max_bytes} bytes; send less.".encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


STARTUP_CHECK_S = 60.0
"""How long `serve` lets Gradio's check that the server answers on localhost keep trying."""
GRADIO_URL_OK = gr.networking.url_ok
"""Gradio's own localhost check, kept before `serve` puts `patient_url_ok` in its place."""


def patient_url_ok(url: str, within_s: float = STARTUP_CHECK_S) -> bool:
    """Gradio's localhost check (`GRADIO_URL_OK`), asked again until it passes or `within_s` seconds are over.
    Gradio's own gives up at the first request that takes over 3 s, and `launch` then raises "When localhost is not
    accessible, a shareable link must be created" and the server exits: seen on a loaded 2-core machine, where the
    app's first page took longer than that. Gradio has no setting for it, so `serve` swaps the function."""
    import time

    deadline = time.monotonic() + within_s
    while not GRADIO_URL_OK(url):
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)
    return True


def serve(demo: gr.Blocks, server_name: str, server_port: int, **kwargs) -> gr.Blocks:
    """Queue and launch `demo` with the public-server bounds (rlhf.access): a queue of `QUEUE_SIZE` events, request
    bodies of `MAX_REQUEST_BYTES`, uploads of `MAX_UPLOAD`."""
    from starlette.middleware import Middleware

    from rlhf import access

    gr.networking.url_ok = patient_url_ok  # `Blocks.launch` reads it when it runs: a slow first page is not a crash
    demo.queue(default_concurrency_limit=4, max_size=access.QUEUE_SIZE)
    demo.launch(
        server_name=server_name, server_port=server_port, theme=gr.themes.Soft(), max_file_size=access.MAX_UPLOAD,
        app_kwargs={"middleware": [Middleware(LimitRequestSize, max_bytes=access.MAX_REQUEST_BYTES)]}, **kwargs,
    )
    return demo


def launch(server_name: str | None = None, server_port: int | None = None, **kwargs) -> gr.Blocks:
    """Build and serve the app; on a Space, Gradio's own environment variables pick the address."""
    from rlhf.backup import backup_from_environment

    backup_from_environment()  # RLHF_BACKUP_REPO set: restore empty projects first, then back up every 5 minutes
    warm_up_default_model()
    return serve(build_demo(), server_name or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                 server_port or int(os.environ.get("GRADIO_SERVER_PORT", 7860)), **kwargs)
