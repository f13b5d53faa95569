"""Owner vs visitor: the rules (rlhf.access), the UI handlers that apply them, and a real Gradio server refusing a
visitor's API call while it takes their vote."""

import os
import time

import gradio as gr
import pytest

from conftest import REPO, serve
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
        "train": lambda: train_tab.start(visitor, None, store.name, "reward", "bundled", "latest",
                                         *([1] * 6), *([1] * 8), *([1] * 5)),
        "delete": lambda: train_tab.remove_run(store.name, "ppo-1", True, profile=visitor),
        "stop": lambda: train_tab.stop(profile=visitor),
        "generate": lambda: train_tab.start_next_round(store.name, profile=visitor),
        "push": lambda: hub_tab.push_dataset(store.name, "", True, profile=visitor),
        "pull": lambda: hub_tab.pull(store.name, "dataset", "a/b", "", profile=visitor),
        "project": lambda: project_header.create_project("visitors-project", profile=visitor),
        "export": lambda: prefer_tab.export(store.name, profile=visitor),
        "labelling": lambda: prefer_tab.set_logins_only(store.name, True, profile=visitor),
    }
    for action, call in calls.items():
        with pytest.raises(gr.Error, match="only the owner of this Space") as refused:
            call()
        assert access.OWNER_ACTIONS[action] in str(refused.value), action
    assert store.guidelines() == "Tutor: facts first." and store.guidelines_version() == 2
    assert "visitors-project" not in [p.name for p in store.folder.parent.iterdir()]
    assert not (store.folder / "exports").exists() and store.setting("logins_only") is False
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
    server, url = serve({**os.environ, "RLHF_HOME": str(home), "RLHF_OWNERS": "owner"}, str(tiny_model_dir))
    try:
        client = Client(url, verbose=False)
        with pytest.raises(Exception, match="(?i)only the owner of this Space may generate"):
            client.predict("shared", "Tell me a joke.", str(tiny_model_dir), 2, 8, 0.8, 0.95, None,
                           api_name="/generate")
        assert project.counts()["generation_runs"] == 1  # nothing generated for the visitor
        shown = client.predict("shared", "visitor", api_name="/next_pair")
        voted = client.predict("shared", shown["presentation_id"], "a", "visitor", "", api_name="/vote")
        assert voted["created"] and [v["annotator"] for v in project.votes()] == ["guest:visitor"]
    finally:
        server.terminate()
        server.wait(timeout=30)


# identity: logins, guest names, the browser that holds them ----------------------------------------------------------
def test_a_typed_name_is_a_guest_name_that_can_never_be_a_login():
    assert access.annotator_identity(None, " alice ", logins_only=False) == "guest:alice"
    assert access.annotator_identity("bob", "alice", logins_only=False) == "bob"  # a login ignores the box
    with pytest.raises(RLHFError, match="logged-in users only"):
        access.annotator_identity(None, "alice", logins_only=True)
    assert access.annotator_identity("bob", "", logins_only=True) == "bob"


def test_off_a_space_gradios_mock_login_is_never_an_owner(monkeypatch):
    """Off a Space, Gradio's login hands every visitor this machine's account: with the rules on (a team server) the
    profile counts for nothing; only an owner who signed in with a token does. On a Space, the OAuth login counts."""
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("SPACE_AUTHOR_NAME", raising=False)
    monkeypatch.setenv("RLHF_OWNERS", "owner")
    assert access.team_server()
    assert access.trusted_login("owner", None) is None and not access.may("push", access.trusted_login("owner", None))
    assert access.trusted_login("owner", "owner") == "owner"  # a token the Hub confirmed
    from rlhf.ui.common import login_available

    login_available.cache_clear()
    try:
        assert not login_available()  # no login button, so no mock routes and no session cookie to forge
    finally:
        login_available.cache_clear()
    monkeypatch.setenv("SPACE_ID", "owner/rlhf-space")
    assert access.trusted_login("owner", None) == "owner"
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.delenv("RLHF_OWNERS")
    assert access.trusted_login("me", None) == "me"  # your own machine, rules off: the mock login is you


def test_a_guest_name_is_held_by_the_browser_that_used_it_first(space, store):
    from rlhf.ui.common import annotator_name

    assert annotator_name(store, "alice", None, None, "key-of-alice") == "guest:alice"
    assert annotator_name(store, "alice", None, None, "key-of-alice") == "guest:alice"  # the same browser again
    with pytest.raises(RLHFError, match="'alice' is in use in another browser"):
        annotator_name(store, "alice", None, None, "key-of-mallory")
    with pytest.raises(RLHFError, match="in use in another browser"):
        annotator_name(store, "alice", None, None, None)  # no browser key: the API session, another holder
    assert annotator_name(store, "alice", profile("alice"), None, "key-of-mallory") == "alice"  # a login is itself
    # a name with votes but nobody on record holding it (restored from a backup, say) stays closed
    from test_prefer import add_candidates

    add_candidates(store)
    from rlhf.prefer import next_pair, vote

    vote(store, next_pair(store, "guest:restored").presentation_id, "a", "guest:restored")
    with pytest.raises(RLHFError, match="in use in another browser"):
        annotator_name(store, "restored", None, None, "anyone")


def test_logins_only_refuses_guests_and_excluded_votes_leave_the_queue_and_export(space, store, tmp_path):
    from rlhf.dataset import export_preferences
    from rlhf.prefer import next_pair, vote
    from rlhf.ui import prefer_tab
    from test_prefer import add_candidates

    add_candidates(store, prompts=["p1", "p2"])
    for name in ("guest:spam1", "guest:spam2"):  # two invented names decide both pairs: nothing is left for others
        for _ in range(2):
            vote(store, next_pair(store, name, overlap=0.0, gold_rate=0.0).presentation_id, "a", name)
    assert next_pair(store, "carol", overlap=0.0, gold_rate=0.0) is None
    with pytest.raises(gr.Error, match="only the owner of this Space may change who may label"):
        prefer_tab.exclude(store.name, "guest:spam1", "", False, profile=profile("visitor"))
    line = prefer_tab.exclude(store.name, "guest:spam1", "invented name, voted in 2 s", False, profile=profile("owner"))
    prefer_tab.exclude(store.name, "guest:spam2", "", False, profile=profile("owner"))
    assert "guest:spam1" in line and "invented name" in line
    assert next_pair(store, "carol", overlap=0.0, gold_rate=0.0) is not None  # their pairs are back in the queue
    vote(store, next_pair(store, "carol", overlap=0.0, gold_rate=0.0).presentation_id, "b", "carol")
    export = export_preferences(store, tmp_path / "export")
    assert export.rows == {"train": 1, "ties": 0, "both_bad": 0}  # carol's vote only
    card = (tmp_path / "export" / "README.md").read_text()
    assert "## Excluded annotators" in card and "`guest:spam1`" in card and "`invented name, voted in 2 s`" in card
    assert len(store.votes()) == 5  # the excluded votes are kept in the store

    prefer_tab.set_logins_only(store.name, True, profile=profile("owner"))
    with pytest.raises(gr.Error, match="logged-in users only"):
        prefer_tab.show_next(store.name, "dave", "key", 0.0, 0.0, "oldest")
    assert prefer_tab.show_next(store.name, "", "key", 0.0, 0.0, "oldest", profile=profile("dave"))[1]


def test_undo_takes_back_only_the_callers_own_votes(space, store):
    from rlhf.ui import prefer_tab
    from test_prefer import add_candidates

    add_candidates(store, prompts=["p1", "p2", "p3"])
    queue = (0.0, 0.0, "oldest")
    alice = dict(profile=profile("alice"))  # logged in
    shown = prefer_tab.show_next(store.name, "", None, *queue, **alice)[0]
    prefer_tab.cast("a", store.name, "", None, shown, "", *queue, **alice)
    shown = prefer_tab.show_next(store.name, "bob", "key-of-bob", *queue)[0]  # a guest, in his browser
    prefer_tab.cast("b", store.name, "bob", "key-of-bob", shown, "", *queue)

    # mallory types their names in her browser
    *_, reveal, _ = prefer_tab.undo(store.name, "alice", "key-of-mallory", *queue)
    assert reveal == "Nothing to undo."  # "alice" typed is guest:alice, not the login alice
    with pytest.raises(gr.Error, match="'bob' is in use in another browser"):
        prefer_tab.undo(store.name, "bob", "key-of-mallory", *queue)
    assert [v["undone_at"] for v in store.votes(include_undone=True)] == [None, None]

    assert prefer_tab.undo(store.name, "whatever", None, *queue, **alice)[-2] == "Undid vote 1."
    assert prefer_tab.undo(store.name, "bob", "key-of-bob", *queue)[-2] == "Undid vote 2."
    assert [v["annotator"] for v in store.votes(include_undone=True)] == ["alice", "guest:bob"]


# what visitors may ask for -------------------------------------------------------------------------------------------
def test_visitors_use_offered_models_only_and_learn_nothing_about_the_disk(space, tmp_path):
    offered = ["bundled", "/data/rlhf/p/checkpoints/ppo-1"]
    assert access.require_offered_model("bundled", offered, None) == "bundled"
    (tmp_path / "model").mkdir()
    answers = set()
    for spec in ("meta-llama/Llama-3.1-70B", str(tmp_path / "model"), str(tmp_path / "missing"), "../../etc"):
        with pytest.raises(RLHFError) as refused:
            access.require_offered_model(spec, offered, "visitor")
        answers.add(str(refused.value))
    assert len(answers) == 1 and "visitors may use the models in the list only" in answers.pop()
    assert access.require_offered_model("meta-llama/Llama-3.1-70B", offered, "owner")  # owners load what they like


def test_a_visitors_new_tokens_are_capped(space, monkeypatch):
    assert access.cap_new_tokens(1024, "visitor") == access.VISITOR_MAX_NEW_TOKENS == 256
    assert access.cap_new_tokens(64, None) == 64 and access.cap_new_tokens(1024, "owner") == 1024
    monkeypatch.setenv("RLHF_VISITOR_MAX_NEW_TOKENS", "32")
    assert access.cap_new_tokens(1024, None) == 32


def test_an_owners_push_on_a_space_uses_its_hf_token_secret_and_says_how_to_add_it(space, store, monkeypatch):
    """The OAuth login grants nothing over the owner's account either: pushes need the Space's own token."""
    from rlhf.ui import hub_tab

    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(gr.Error, match="this Space has no HF_TOKEN secret"):
        hub_tab.push_dataset(store.name, "", True, profile=profile("owner"))


def test_the_space_asks_visitors_for_their_identity_only():
    """README's front matter configures the Space's OAuth app: no write or manage rights over a visitor's account."""
    import yaml

    front = yaml.safe_load((REPO / "README.md").read_text().split("---")[1])
    assert front["hf_oauth"] is True
    assert set(front.get("hf_oauth_scopes") or []) <= {"openid", "profile"}


# the real server, attacked as a visitor over HTTP ---------------------------------------------------------------------
@pytest.fixture
def public(app_url, monkeypatch):
    """The real server (conftest's `app_url`, in this process, with `rlhf serve`'s queue and limits) with the owner
    rules on, as on a team server: every caller here is a visitor. A project `default` with three open pairs."""
    from test_prefer import add_candidates

    monkeypatch.setenv("RLHF_OWNERS", "owner")
    store = Store.open("default", create=True)
    add_candidates(store, prompts=["p1", "p2", "p3"])
    return app_url, store


def test_over_http_a_visitor_can_neither_undo_another_nor_vote_as_a_login_nor_export(public):
    from gradio_client import Client

    from conftest import call_raw

    url, store = public
    alice = Client(url, verbose=False)  # one client, one session: how a script labels through the API
    shown = alice.predict("default", "alice", api_name="/next_pair")
    assert shown["annotator"] == "guest:alice"
    assert alice.predict("default", shown["presentation_id"], "a", "alice", "", api_name="/vote")["created"]

    # Undo as alice: the Prefer tab's Undo event, posted directly (api_visibility="private" does not hide it)
    _, event, data = call_raw(url, "undo", ["default", "alice", None, 0.2, 0.1, "oldest"], session_hash="mallory")
    assert event == "error" and "in use in another browser" in str(data), data
    # alice's pair, voted again under her name from another session
    _, event, data = call_raw(url, "vote", ["default", shown["presentation_id"], "b", "alice", ""],
                              session_hash="mallory")
    assert event == "error" and "in use in another browser" in str(data), data
    # a vote as the login `owner`: the typed name becomes a guest name
    _, event, mine = call_raw(url, "next_pair", ["default", "owner"], session_hash="mallory")
    assert event == "complete" and mine[0]["annotator"] == "guest:owner"
    _, event, _ = call_raw(url, "vote", ["default", mine[0]["presentation_id"], "a", "owner", ""],
                           session_hash="mallory")
    assert event == "complete"
    assert [(v["annotator"], v["undone_at"]) for v in store.votes(include_undone=True)] == [
        ("guest:alice", None), ("guest:owner", None)]
    # the export: the project's data, and files on the server's disk
    _, event, data = call_raw(url, "export", ["default"], session_hash="mallory")
    assert event == "error" and "Only the owner of this Space may export the preference dataset" in str(data), data
    assert not (store.folder / "exports").exists()


def test_over_http_a_visitor_chats_with_offered_models_only_and_the_disk_stays_unprobed(public, tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from rlhf.models import registry

    url, _ = public
    client = Client(url, verbose=False)
    (tmp_path / "a-model").mkdir()  # exists, but no model the Space offers
    loaded_before = set(registry._models)
    answers = set()
    for spec in ("meta-llama/Llama-3.1-70B-Instruct", str(tmp_path / "a-model"), str(tmp_path / "missing"),
                 "/etc"):
        with pytest.raises(AppError) as refused:
            client.predict("Hi!", [], spec, "", 64, 0.7, 0.95, api_name="/chat")
        answers.add(str(refused.value))
    assert len(answers) == 1, answers  # one answer for all: existing and missing paths look alike
    assert "visitors may use the models in the list only" in answers.pop()
    assert set(registry._models) == loaded_before  # nothing was loaded (or fetched) for them
    default = client.predict("Hi!", [], os.environ["RLHF_MODEL"], "", 8, 0.7, 0.95, api_name="/chat")
    assert default[1][-1]["role"] == "assistant"  # the offered model answers


def test_over_http_the_arena_refuses_a_100k_character_prompt_before_any_work(public):
    from conftest import call_raw

    url, store = public
    before = store.counts()
    spec = os.environ["RLHF_MODEL"]  # offered; the length is checked before the models are even compared
    _, event, data = call_raw(url, "ask_both", ["default", "x" * 100_000, spec, spec, "visitor", None, 64],
                              session_hash="mallory")
    assert event == "error" and "over the limit of" in str(data), data
    assert store.counts() == before and len(store.prompts()) == 3  # nothing stored


def test_over_http_fifty_chats_at_the_largest_token_count_are_bounded(public, monkeypatch):
    """50 chats posted at once, each asking the slider's 1024 new tokens: the queue takes QUEUE_SIZE waiting (plus the
    one running) and refuses the rest with HTTP 503; an answer stops at the visitor cap."""
    import httpx

    from conftest import call_raw, read_events
    from rlhf.config import ModelConfig
    from rlhf.models import registry

    url, _ = public
    monkeypatch.setenv("RLHF_VISITOR_MAX_NEW_TOKENS", "8")
    spec = os.environ["RLHF_MODEL"]
    accepted, refused = [], []
    with httpx.Client(trust_env=False, timeout=120) as http:
        fn_index = next(d["id"] for d in http.get(f"{url}config").json()["dependencies"] if d["api_name"] == "chat")
        with registry._lock:  # the first chat waits here holding the model slot, so the others queue up behind it
            for _ in range(50):
                posted = http.post(f"{url}gradio_api/call/chat",
                                   json={"data": ["Tell me everything.", [], spec, "", 1024, 0.7, 0.95]})
                (accepted if posted.status_code == 200 else refused).append(posted.json() if posted.status_code == 200
                                                                             else posted)
            assert len(accepted) <= access.QUEUE_SIZE + 1 and len(refused) >= 50 - access.QUEUE_SIZE - 1
            assert all(r.status_code == 503 and "Queue is full" in r.text for r in refused)
            for waiting in accepted[2:]:  # two answers are enough to read; the rest leave the queue unanswered
                event_id = waiting["event_id"]  # (a call without a session is its own session)
                http.post(f"{url}gradio_api/cancel", json={"session_hash": event_id, "fn_index": fn_index,
                                                           "event_id": event_id})
    tokenizer = registry.get(ModelConfig(spec=spec)).tokenizer
    for posted in accepted[:2]:
        event, data = read_events(url, "chat", posted["event_id"])
        assert event == "complete", data
        answer = data[1][-1]["content"][0]["text"]
        assert 0 < len(tokenizer(answer)["input_ids"]) <= 2 * 8  # 1024 asked, 8 sampled (re-encoding may split some)
    _, event, _ = call_raw(url, "next_pair", ["default", "after"])  # the server answers again
    assert event == "complete"


def test_the_server_refuses_an_oversized_request_body(public):
    import httpx

    url, _ = public
    with httpx.Client(trust_env=False, timeout=60) as http:
        posted = http.post(f"{url}gradio_api/call/next_pair", json={"data": ["default", "x" * 2_000_000]})
    assert posted.status_code == 413 and "Request body over" in posted.text


# on a Space: the Hugging Face login is the identity ------------------------------------------------------------------
OAUTH_SECRET = "test-oauth-client-secret"


def login_cookie(username: str) -> dict:
    """The session cookie Gradio's OAuth callback sets on a Space after Hugging Face logged `username` in (the login
    itself needs the real Hub): starlette's signed session, keyed as Gradio keys it, with the OAuth client secret."""
    import base64
    import hashlib
    import json

    import itsdangerous

    session = {"oauth_info": {"access_token": f"hf_oauth_{username}", "token_type": "bearer", "scope": "openid profile",
                              "expires_at": int(time.time()) + 3600,
                              "userinfo": {"preferred_username": username, "name": username.title(),
                                           "profile": f"https://huggingface.co/{username}", "picture": ""}}}
    signer = itsdangerous.TimestampSigner(hashlib.sha256(f"{OAUTH_SECRET}-v4".encode()).hexdigest())
    return {"session": signer.sign(base64.b64encode(json.dumps(session).encode())).decode()}


@pytest.fixture(scope="module")
def on_a_space(tiny_model_dir, tmp_path_factory):
    """`python -m rlhf serve` as Hugging Face runs it on a Space with OAuth (`hf_oauth: true` sets these variables),
    by `owner`; a project `shared` with three open pairs. (url, store)"""
    from test_prefer import add_candidates

    home = tmp_path_factory.mktemp("space-home")
    store = Store.open("shared", create=True, root=home)
    add_candidates(store, prompts=["p1", "p2", "p3"])
    env = {**os.environ, "RLHF_HOME": str(home), "SYSTEM": "spaces", "SPACE_ID": "owner/rlhf-space",
           "SPACE_AUTHOR_NAME": "owner", "OAUTH_CLIENT_ID": "test-client", "OAUTH_CLIENT_SECRET": OAUTH_SECRET,
           "OAUTH_SCOPES": "openid profile", "OPENID_PROVIDER_URL": "http://127.0.0.1:9"}  # never asked here
    server, url = serve(env, str(tiny_model_dir))
    yield url, store
    server.terminate()
    server.wait(timeout=30)


def test_on_a_space_a_login_votes_as_itself_and_nobody_votes_or_undoes_under_it(on_a_space):
    from conftest import call_raw

    url, store = on_a_space
    alice = login_cookie("alice")
    queue = [0.0, 0.0, "oldest"]
    # alice labels in the Prefer tab, logged in: its Next pair and "A is better" events, as her browser sends them
    _, event, shown = call_raw(url, "show_next", ["shared", "", None, *queue], session_hash="alices-tab",
                               cookies=alice)
    assert event == "complete", shown
    _, event, voted = call_raw(url, "cast_a", ["shared", "", None, None, "", *queue], session_hash="alices-tab",
                               cookies=alice)
    assert event == "complete" and "Vote 1 recorded" in voted[5], voted
    # and through the API, logged in: the login, whatever name she sends
    _, _, [api_pair] = call_raw(url, "next_pair", ["shared", "someone-else"], session_hash="alices-script",
                                cookies=alice)
    assert api_pair["annotator"] == "alice"
    call_raw(url, "vote", ["shared", api_pair["presentation_id"], "b", "whatever", ""],
             session_hash="alices-script", cookies=alice)
    assert [v["annotator"] for v in store.votes()] == ["alice", "alice"]

    # mallory, not logged in, sends alice's name: a guest name, never the login
    _, event, data = call_raw(url, "vote", ["shared", api_pair["presentation_id"], "a", "alice", ""],
                              session_hash="mallory")
    assert event == "error" and "was shown to 'alice', not 'guest:alice'" in str(data), data
    _, event, undone = call_raw(url, "undo", ["shared", "alice", None, *queue], session_hash="mallory")
    assert event == "complete" and undone[5] == "Nothing to undo."
    # bob is logged in too: his Undo takes back his own votes only
    _, event, undone = call_raw(url, "undo", ["shared", "alice", None, *queue], cookies=login_cookie("bob"))
    assert event == "complete" and undone[5] == "Nothing to undo."
    assert [v["undone_at"] for v in store.votes(include_undone=True)] == [None, None]
    _, event, undone = call_raw(url, "undo", ["shared", "", None, *queue], cookies=alice)
    assert event == "complete" and undone[5] == "Undid vote 2."

    # the owner's login may export; alice's may not
    _, event, data = call_raw(url, "export", ["shared"], cookies=alice)
    assert event == "error" and "logged in as 'alice'" in str(data)
    _, event, exported = call_raw(url, "export", ["shared"], cookies=login_cookie("owner"))
    assert event == "complete" and "Exported train 1" in exported[1], exported
