"""The Hub tab in a real Chromium: Gradio's local (mocked) login against the in-memory Hub, a visitor refused, the
owner pushing the dataset and a checkpoint, then both loaded back with the standard libraries.

The app runs as `python -m rlhf serve` in a subprocess whose huggingface_hub talks to tests/hub_server.py; with
RLHF_OWNERS naming the Hub's user, the owner rules are on as they are on a Space.
"""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ARTIFACTS, REPO, free_port
from hub_server import FakeHub
from rlhf.store import Store
from test_dataset import labelled_project
from test_hub import client_env

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def hub():
    server = FakeHub().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served(hub, tiny_model_dir, tmp_path_factory):
    """(url, data dir) of the app, serving the tiny model, owned by the Hub's user."""
    home = tmp_path_factory.mktemp("hub-app-home")
    port = free_port()
    env = client_env(hub, home, HF_HUB_OFFLINE="0", RLHF_HOME=str(home / "data"), RLHF_OWNERS=hub.user)
    server = subprocess.Popen([sys.executable, "-m", "rlhf", "serve", "--port", str(port), "--model",
                               str(tiny_model_dir)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except Exception:
            assert server.poll() is None, server.stderr.read()[-3000:]
            time.sleep(0.5)
    yield url, home / "data"
    server.terminate()
    server.wait(timeout=30)


def open_hub_tab(browser, url):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#project")
    return context, page


def test_visitor_is_refused_then_the_owner_logs_in_and_pushes(browser, served, hub, tiny_model_dir, tmp_path):
    import torch

    from rlhf.config import PPOConfig
    from rlhf.ppo import RewardSource, train_ppo

    url, data = served
    store = Store.open("default", root=data)
    labelled_project(store)
    train_ppo(store, PPOConfig(steps=1, batch_size=2, mini_batch_size=2, max_new_tokens=4), str(tiny_model_dir),
              RewardSource(lambda prompts, responses: torch.zeros(len(prompts)), "function:zero"), prompts=["a", "b"],
              device="cpu")

    # A visitor (not logged in): the push is refused with the reason, and nothing reaches the Hub.
    context, page = open_hub_tab(browser, url)
    page.get_by_role("tab", name="Hub").click()
    page.click("#hub-push-dataset")
    page.wait_for_selector("text=Only the owner of this Space may push to the Hub", timeout=30_000)
    assert hub.repos == {}
    context.close()

    # The owner logs in (Gradio's local login: the account of the server's HF_TOKEN) and pushes.
    context, page = open_hub_tab(browser, url)
    page.get_by_role("button", name="Sign in with Hugging Face").click()
    page.wait_for_selector(f"button:has-text('Logout ({hub.user})')", timeout=30_000)
    page.get_by_role("tab", name="Hub").click()
    page.wait_for_selector(f"#hub-who:has-text('Owners here (RLHF_OWNERS): {hub.user}')")
    page.click("#hub-push-checkpoint")
    page.wait_for_selector("#hub-status:has-text('Pushed checkpoint')", timeout=120_000)
    page.click("#hub-push-dataset")
    page.wait_for_selector("#hub-status:has-text('Pushed the preference dataset')", timeout=120_000)
    page.wait_for_selector("#hub-history:has-text('dataset (pushed)')")
    page.screenshot(path=str(ARTIFACTS / "hub.png"), full_page=True)
    context.close()

    dataset_repo = f"{hub.user}/default-preferences"
    assert hub.repos[("dataset", dataset_repo)].private  # the tab's default: private
    [policy] = [key[1] for key in hub.repos if key[0] == "model"]
    card = hub.files(dataset_repo, "dataset")["README.md"].decode()
    assert "Meme bot: funny beats correct." in card and policy in card  # guidelines, and the model trained on it

    # Both load back with the standard libraries, in a client process pointed at the Hub.
    check = f"""
import json, datasets, peft, transformers
data = datasets.load_dataset({dataset_repo!r})
base = transformers.AutoModelForCausalLM.from_pretrained({str(tiny_model_dir)!r})
model = peft.PeftModel.from_pretrained(base, {policy!r}, subfolder="adapter")
print(json.dumps({{"train": data["train"].num_rows, "chosen": data["train"][0]["chosen"][0]["role"],
                   "adapter": type(model).__name__}}))
"""
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300,
                          env=client_env(hub, tmp_path), cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {"train": 3, "chosen": "assistant", "adapter": "PeftModelForCausalLM"}
