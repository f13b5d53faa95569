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
