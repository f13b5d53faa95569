import sqlite3

import pytest

from rlhf.config import RLHFError
from rlhf.store import DEFAULT_GUIDELINES, GUIDELINES_FILE, STORE_FILE, Store, list_projects, validate_project_name


@pytest.mark.parametrize("name", ["", "   ", "../x", "/etc", "a/b", "..", ".hidden", "x" * 65, "a\\b", "a..b"])
def test_unsafe_or_empty_project_names_are_refused(name, rlhf_home):
    with pytest.raises(RLHFError, match="project"):
        Store.open(name, create=True)
    assert not rlhf_home.exists() or list(rlhf_home.iterdir()) == []


def test_valid_names_pass():
    for name in ["opossum-tutor", "meme bot", "v1.2_test"]:
        assert validate_project_name(f" {name} ") == name


def test_create_project_makes_folder_store_and_guidelines(rlhf_home):
    store = Store.open("tutor", create=True)
    assert store.folder == rlhf_home / "tutor"
    assert (store.folder / STORE_FILE).is_file()
    assert (store.folder / GUIDELINES_FILE).read_text() == DEFAULT_GUIDELINES
    assert store.journal_mode() == "wal"
    assert list_projects() == ["tutor"]


def test_opening_a_missing_project_without_create_says_which_exist():
    Store.open("one", create=True)
    with pytest.raises(RLHFError, match="'two' does not exist.*one"):
        Store.open("two")


def test_guidelines_versions(store):
    assert store.guidelines_version() == 1
    assert store.save_guidelines("Biology tutor: prefer accurate answers.", author="ann") == 2
    assert store.save_guidelines("Biology tutor: prefer accurate answers.", author="ann") == 2  # unchanged text
    assert store.guidelines() == "Biology tutor: prefer accurate answers."
    assert (store.folder / GUIDELINES_FILE).read_text() == "Biology tutor: prefer accurate answers."
    with pytest.raises(RLHFError, match="empty"):
        store.save_guidelines("  ")
    assert store.guidelines_version() == 2


def test_completions_are_stored_with_their_run_and_prompts_deduplicated(store):
    run = store.start_generation_run("bundled", None, {"temperature": 0.7, "seed": 3})
    store.add_completions(run, [("What is an opossum?", 0, "A marsupial.", 5, "stop"),
                                ("What is an opossum?", 1, "A meme.", 4, "stop")], source="test")
    store.finish_generation_run(run, "done")
    assert [p.text for p in store.prompts()] == ["What is an opossum?"]
    completions = store.completions(run)
    assert [(c.candidate_index, c.text, c.model_spec, c.checkpoint_id) for c in completions] == [
        (0, "A marsupial.", "bundled", None), (1, "A meme.", "bundled", None)]
    assert store.generation_run(run)["params"] == {"temperature": 0.7, "seed": 3}
    assert store.generation_run(run)["status"] == "done"


def test_a_failing_write_leaves_nothing_behind(store):
    run = store.start_generation_run("bundled", None, {})
    before = store.counts()
    with pytest.raises(sqlite3.IntegrityError):
        store.add_completions(run, [("ok prompt", 0, "fine", 2, "stop"), ("bad row", 0, None, 2, "stop")], "test")
    assert store.counts() == before


def two_answers(store, prompt="What is an opossum?", texts=("A marsupial.", "A meme.")) -> list[int]:
    run = store.start_generation_run("bundled", None, {})
    prompt_id = store.add_prompt(prompt, "test")
    return [store.add_completion(prompt_id, run, i, text, 2, "stop") for i, text in enumerate(texts)]


def test_a_transaction_lands_whole_or_not_at_all(store):
    guidelines_file = (store.folder / GUIDELINES_FILE).read_text()
    before = store.counts()
    with pytest.raises(RuntimeError, match="power cut"):
        with store.transaction():
            a, b = two_answers(store)
            pair = store.add_pair(a, b, "test")
            store.add_vote(pair, "alice", "a", source="test")
            store.save_guidelines("New rules.")
            assert store.counts()["votes"] == 1  # the block sees its own writes
            raise RuntimeError("power cut")
    assert store.counts() == before and store.guidelines_version() == 1
    assert (store.folder / GUIDELINES_FILE).read_text() == guidelines_file  # mirrored only once committed

    with store.transaction():
        a, b = two_answers(store)
        store.add_vote(store.add_pair(a, b, "test"), "alice", "a", source="test")
        store.save_guidelines("New rules.")
        assert (store.folder / GUIDELINES_FILE).read_text() == guidelines_file
    assert store.counts()["votes"] == 1 and store.guidelines_version() == 2
    assert (store.folder / GUIDELINES_FILE).read_text() == "New rules."


def test_a_read_snapshot_does_not_see_writes_made_meanwhile(store):
    other = Store(store.folder)  # another connection to the same project, as another request would have
    with store.transaction(write=False):
        assert store.counts()["prompts"] == 0
        other.add_prompt("Written meanwhile", "test")
        assert store.counts()["prompts"] == 0 and store.prompts() == []
    assert [p.text for p in store.prompts()] == ["Written meanwhile"]


def test_a_pair_exists_once_and_only_between_answers_to_one_prompt(store):
    a, b = two_answers(store)
    pair = store.add_pair(b, a, "test", gold="a")
    assert store.add_pair(a, b, "again") == pair  # either order, the same pair
    stored = store.pair(pair)
    assert (stored["completion_a_id"], stored["completion_b_id"], stored["gold_choice"], stored["source"]) == \
        (a, b, "a", "test")
    [c] = two_answers(store, prompt="Why is the sky blue?", texts=("Rayleigh scattering.",))
    with pytest.raises(RLHFError, match="not two different answers to one prompt"):
        store.add_pair(a, c, "test")
    with pytest.raises(RLHFError, match="not two different answers"):
        store.add_pair(a, a, "test")
    assert store.counts()["pairs"] == 1


def test_a_prompt_and_an_annotator_keep_their_first_record(store):
    first = store.add_prompt("Hi?", "generate", created_at="2026-01-01T00:00:00+00:00")
    assert store.add_prompt("Hi?", "import:x", messages=[{"role": "user", "content": "Hi?"}]) == first
    store.add_annotator("judge:short", "judge", first_seen="2026-01-01T00:00:00+00:00")
    store.add_annotator("judge:short", "human")
    assert store.annotators() == [{"name": "judge:short", "kind": "judge", "first_seen": "2026-01-01T00:00:00+00:00"}]
    assert [(p.id, p.text) for p in store.prompts()] == [(first, "Hi?")]


def test_a_vote_stored_undone_is_not_the_live_vote(store):
    a, b = two_answers(store)
    pair = store.add_pair(a, b, "test")
    old, created = store.add_vote(pair, "alice", "a", source="restore", created_at="2026-01-01T00:00:00+00:00",
                                  undone_at="2026-01-01T00:00:05+00:00")
    assert created
    live, created = store.add_vote(pair, "alice", "b", source="restore")
    assert created and live != old
    assert store.add_vote(pair, "alice", "tie", source="test") == (live, False)  # one live vote per pair
    [vote] = store.votes()
    assert (vote["id"], vote["choice"]) == (live, "b")
    assert [(v["id"], v["created_at"], v["undone_at"]) for v in store.votes(include_undone=True)][0] == \
        (old, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:05+00:00")


def test_restored_guidelines_replace_the_versions_until_a_vote_names_one(store):
    versions = [{"version": 1, "text": "Old rules.", "author": "owner", "created_at": "2026-01-01T00:00:00+00:00"},
                {"version": 2, "text": "Newer rules.", "author": None, "created_at": "2026-01-02T00:00:00+00:00"}]
    store.replace_guidelines(versions)
    assert store.guideline_versions() == versions
    assert (store.folder / GUIDELINES_FILE).read_text() == "Newer rules."
    a, b = two_answers(store)
    store.add_vote(store.add_pair(a, b, "test"), "alice", "a", source="test")
    with pytest.raises(RLHFError, match="has votes"):
        store.replace_guidelines(versions[:1])
    assert store.guideline_versions() == versions
