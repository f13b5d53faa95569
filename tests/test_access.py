"""Owner vs visitor: the rules (rlhf.access), the UI handlers that apply them, and a real Gradio server refusing a
visitor's API call while it takes their vote."""

import subprocess
import sys
import time

import gradio as gr
import pytest

from conftest import REPO, free_port
from rlhf import access
from rlhf.config import RLHFError
from rlhf.store import Store


def profile(name: str) -> gr.OAuthProfile:
    """What Gradio hands a handler for a logged-in user (the OAuth userinfo)."""
    return gr.OAuthProfile({"name": name.title(), "preferred_username": name, "profile": f"https://hf.co/{name}",
                            "picture": ""})


@pytest.fixture
def space(monkeypatch):
    """This process looks like a public Space by `owner`, with `helper` added as an owner."""
    monkeypatch.setenv("SPACE_ID", "owner/rlhf-space")
    monkeypatch.setenv("SPACE_AUTHOR_NAME", "owner")
    monkeypatch.setenv("RLHF_OWNERS", "helper")


def test_locally_everyone_may_do_everything(monkeypatch):
    for name in ("SPACE_ID", "SPACE_AUTHOR_NAME", "RLHF_OWNERS"):
        monkeypatch.delenv(name, raising=False)
    assert not access.enforced()
    assert all(access.may(action, None) for action in access.OWNER_ACTIONS)


def test_on_a_space_only_the_author_and_listed_owners_may(space):
    assert access.owners() == ["owner", "helper"]
    for action in access.OWNER_ACTIONS:
        assert access.may(action, "owner") and access.may(action, "helper")
        assert not access.may(action, "visitor") and not access.may(action, None)
    with pytest.raises(ValueError, match="unknown action"):
        access.may("label", "owner")  # labelling is not an owner action: asking about it is a programming error


def test_refusals_say_why_and_what_to_do(space):
    with pytest.raises(RLHFError) as anonymous:
        access.require_owner("train", None)
    assert "start training" in str(anonymous.value) and "log in" in str(anonymous.value)
    assert "owner, helper" in str(anonymous.value)
    with pytest.raises(RLHFError) as visitor:
        access.require_owner("push", "visitor")
    message = str(visitor.value)
    assert "logged in as 'visitor'" in message and "push to the Hub" in message and "Duplicate the Space" in message


def test_rlhf_owners_turns_the_rules_on_locally(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("SPACE_AUTHOR_NAME", raising=False)
    monkeypatch.setenv("RLHF_OWNERS", " ana , ben ")
    assert access.enforced() and access.owners() == ["ana", "ben"]
    assert access.may("delete", "ben") and not access.may("delete", "carl")


def test_ui_handlers_refuse_a_visitor_and_change_nothing(space, store):
    """The real handlers of each owner action, called as Gradio calls them, with a visitor's profile."""
    from rlhf.ui import hub_tab, prefer_tab, project_header, train_tab

    store.save_guidelines("Tutor: facts first.", author="owner")
    visitor = profile("visitor")
    calls = {
        "guidelines": lambda: prefer_tab.save_guidelines(store.name, "Vandalised", "", profile=visitor),
        "train": lambda: train_tab.start(visitor, store.name, "reward", "bundled", "latest",
                                         *([1] * 4), *([1] * 9), *([1] * 4)),
        "delete": lambda: train_tab.remove_run(store.name, "ppo-1", True, profile=visitor),
        "stop": lambda: train_tab.stop(profile=visitor),
        "generate": lambda: train_tab.start_next_round(store.name, profile=visitor),
        "push": lambda: hub_tab.push_dataset(store.name, "", True, profile=visitor),
        "pull": lambda: hub_tab.pull(store.name, "dataset", "a/b", "", profile=visitor),
        "project": lambda: project_header.create_project("visitors-project", profile=visitor),
    }
    for action, call in calls.items():
        with pytest.raises(gr.Error, match="only the owner of this Space") as refused:
            call()
        assert access.OWNER_ACTIONS[action] in str(refused.value), action
    assert store.guidelines() == "Tutor: facts first." and store.guidelines_version() == 2
    assert "visitors-project" not in [p.name for p in store.folder.parent.iterdir()]
    # the owner is let through (saving guidelines is cheap: a real call)
    prefer_tab.save_guidelines(store.name, "Tutor: facts first, briefly.", "", profile=profile("helper"))
    assert store.guidelines_version() == 3


def test_a_real_server_refuses_a_visitors_generate_but_takes_their_vote(tiny_model_dir, tmp_path):
    """`python -m rlhf serve` with RLHF_OWNERS set (the rules on, as on a Space); a visitor through the API."""
    import os

    from gradio_client import Client

    from rlhf.generate import generate_candidates
    from rlhf.models import load_model
    from rlhf.config import ModelConfig, SamplingConfig

    home = tmp_path / "server-home"
    project = Store.open("shared", create=True, root=home)
    loaded = load_model(ModelConfig(spec=str(tiny_model_dir), device="cpu", dtype="fp32"))
    generate_candidates(project, loaded, ["What is an opossum?"], SamplingConfig(num_candidates=2, max_new_tokens=8))
    port = free_port()
    env = {**os.environ, "RLHF_HOME": str(home), "RLHF_OWNERS": "owner"}
    server = subprocess.Popen([sys.executable, "-m", "rlhf", "serve", "--port", str(port), "--model",
                               str(tiny_model_dir)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        client = None
        for _ in range(240):
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:
                assert server.poll() is None, server.stderr.read()[-3000:]
                time.sleep(0.5)
        assert client is not None
        with pytest.raises(Exception, match="(?i)only the owner of this Space may generate"):
            client.predict("shared", "Tell me a joke.", str(tiny_model_dir), 2, 8, 0.8, 0.95, None,
                           api_name="/generate")
        assert project.counts()["generation_runs"] == 1  # nothing generated for the visitor
        shown = client.predict("shared", "visitor", api_name="/next_pair")
        voted = client.predict("shared", shown["presentation_id"], "a", "visitor", "", api_name="/vote")
        assert voted["created"] and [v["annotator"] for v in project.votes()] == ["visitor"]
    finally:
        server.terminate()
        server.wait(timeout=30)
