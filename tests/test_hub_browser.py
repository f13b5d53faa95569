"""A team server in a real Chromium, against the in-memory Hub: Gradio's mock login is not offered (it would make every
visitor this machine's account, an owner), a visitor is refused, the owner signs in with a token the Hub confirms and
pushes the dataset and a checkpoint (both loaded back with the standard libraries) and downloads an export.

The app runs as `python -m rlhf serve` in a subprocess whose huggingface_hub talks to tests/hub_server.py; with
RLHF_OWNERS naming the Hub's user, the owner rules are on as they are on a Space. Its data directory lies outside
its working directory and its temp directory, as `/data` does on a Space with persistent storage, where Gradio
refuses to serve files from.
"""

import json
import subprocess
import sys

import pytest

from conftest import ARTIFACTS, REPO, serve
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
    (home / "server-tmp").mkdir()  # the server's temp dir; its data dir is a sibling, like /data on a Space
    env = client_env(hub, home, HF_HUB_OFFLINE="0", RLHF_HOME=str(home / "data"), RLHF_OWNERS=hub.user,
                     TMPDIR=str(home / "server-tmp"))
    server, url = serve(env, str(tiny_model_dir))
    yield url, home / "data"
    server.terminate()
    server.wait(timeout=30)


def open_hub_tab(browser, url):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#project")
    return context, page


def sign_in(page, token: str) -> str:
    """The header's owner sign-in of a team server; returns what it said (the status line, or the refusal)."""
    if not page.locator("#owner-token").is_visible():
        page.get_by_text("Owner sign-in (team server)", exact=True).click()
    messages = "[data-testid=toast-text]"  # one per message (Gradio groups messages of a kind in one toast)
    shown = page.locator(messages).count()
    page.fill("#owner-token input", token)
    page.click("#owner-sign-in")
    page.wait_for_function("([selector, n]) => document.querySelector('#owner-status').innerText.includes('Signed in')"
                           " || document.querySelectorAll(selector).length > n", arg=[messages, shown],
                           timeout=30_000)
    if "Signed in" in page.inner_text("#owner-status"):
        return page.inner_text("#owner-status")
    return page.locator(messages).last.inner_text()


def test_the_mock_login_is_never_an_owner_and_the_owner_signs_in_with_a_token_to_push(browser, served, hub,
                                                                                     tiny_model_dir, tmp_path):
    import torch

    from rlhf.config import PPOConfig
    from rlhf.ppo import RewardSource, train_ppo

    url, data = served
    store = Store.open("default", root=data)
    labelled_project(store)
    train_ppo(store, PPOConfig(steps=1, batch_size=2, mini_batch_size=2, max_new_tokens=4), str(tiny_model_dir),
              RewardSource(lambda prompts, responses: torch.zeros(len(prompts)), "function:zero"), prompts=["a", "b"],
              device="cpu")

    # A visitor: no login button (Gradio's mock would log them in as the server's own account), no mock route behind
    # it, and a push is refused with the reason; nothing reaches the Hub.
    context, page = open_hub_tab(browser, url)
    assert page.get_by_role("button", name="Sign in with Hugging Face").count() == 0
    assert context.request.get(f"{url}login/huggingface", max_redirects=0).status == 404
    page.get_by_role("tab", name="Hub").click()
    page.click("#hub-push-dataset")
    page.wait_for_selector("text=Only the owner of this Space may push to the Hub", timeout=30_000)
    # a token the Hub refuses, and a real user's token who is no owner: both refused
    assert "did not confirm this token" in sign_in(page, "hf_not_a_token")
    hub.visitors["hf_visitor_token"] = "visitor"
    assert "belongs to 'visitor', who is not an owner" in sign_in(page, "hf_visitor_token")
    page.click("#hub-push-dataset")
    page.wait_for_selector("text=Only the owner of this Space may push to the Hub", timeout=30_000)
    assert hub.repos == {}
    context.close()

    # The owner signs in with their token (checked with the Hub, not kept) and pushes.
    context, page = open_hub_tab(browser, url)
    assert f"Signed in as owner {hub.user}" in sign_in(page, hub.token)
    assert page.input_value("#owner-token input") == ""  # the box is cleared
    page.get_by_role("tab", name="Hub").click()
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


def test_the_owner_downloads_an_export_where_the_data_lives_outside_what_gradio_serves(browser, served, hub,
                                                                                        tmp_path):
    """On a Space with persistent storage the projects live under /data, which Gradio does not serve: the archive is
    written where it does, and the download goes through the real server to the browser. Visitors are refused."""
    import zipfile

    url, data = served
    store = Store.open("exports", create=True, root=data)
    labelled_project(store)

    context, page = open_hub_tab(browser, url)
    page.locator("#project input").fill("exports")
    page.locator("#project input").press("Enter")
    page.get_by_role("tab", name="Prefer").click()
    page.get_by_text("Export the preference dataset (owners)", exact=True).click()
    page.click("#export")
    page.wait_for_selector("text=Only the owner of this Space may export the preference dataset", timeout=30_000)
    assert not (store.folder / "exports").exists()
    assert f"Signed in as owner {hub.user}" in sign_in(page, hub.token)
    page.click("#export")
    page.wait_for_selector("#export-status:has-text('Exported train 3')", timeout=60_000)
    with page.expect_download() as download:
        page.locator("#export-file a").first.click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    context.close()
    with zipfile.ZipFile(saved) as archive:
        names = set(archive.namelist())
        assert {"README.md", "data/train.parquet", "rlhf_export.json"} <= names
        assert "Meme bot: funny beats correct." in archive.read("README.md").decode()
