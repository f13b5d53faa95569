"""Backup to a dataset repo and restore from it (rlhf.backup), through the real huggingface_hub client (its
CommitScheduler included) against the in-memory Hub of hub_server, with real SQLite stores.

As in test_hub, every client call runs in a subprocess (this process imported huggingface_hub with HF_HUB_OFFLINE=1):
the `backup` and `restore` commands as a user types them, and `backup_from_environment` as the app calls it.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO
from hub_server import FakeHub
from rlhf.config import RLHFError
from rlhf.dataset import import_preferences
from rlhf.store import Store

BACKUP = "test-user/rlhf-backup"


@pytest.fixture
def hub():
    server = FakeHub().start()
    yield server
    server.stop()


def run(hub, tmp_path, args: list[str], **env) -> subprocess.CompletedProcess:
    """A subprocess that talks to the fake Hub (HF_HUB_OFFLINE unset); its output never holds the token."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**base, **hub.env(tmp_path / "hf-home"), **env})
    assert hub.token not in done.stdout + done.stderr
    return done


QUICK_CLI = """
import argparse, sys
from rlhf.backup import add_backup_parser
from rlhf.config import RLHFError
parser = argparse.ArgumentParser()
add_backup_parser(parser.add_subparsers(required=True))
args = parser.parse_args()
try:
    args.func(args)
except RLHFError as error:
    sys.exit(f"error: {error}")
"""
"""The `backup` and `restore` commands as `python -m rlhf` runs them, without the whole CLI's imports (torch,
transformers, TRL: seconds per call on 2 cores). Test (a) runs the real `python -m rlhf`."""


def cli(hub, tmp_path, *args, real=False, **env) -> subprocess.CompletedProcess:
    return run(hub, tmp_path, ["-m", "rlhf", *args] if real else ["-c", QUICK_CLI, *args], **env)


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def backup_once(hub, tmp_path, project="test-project", real=False) -> subprocess.CompletedProcess:
    return cli(hub, tmp_path, "backup", "--project", project, "--repo", BACKUP, "--once", real=real)


def restore(hub, tmp_path, home, project="test-project", real=False) -> subprocess.CompletedProcess:
    return cli(hub, tmp_path, "restore", "--project", project, "--repo", BACKUP, real=real, RLHF_HOME=str(home))


def backup_files(hub, project="test-project") -> dict[str, bytes]:
    return {path: data for path, data in hub.files(BACKUP, "dataset").items() if path.startswith(project + "/")}


def records(hub) -> list[dict]:
    files = backup_files(hub)
    return [json.loads(line) for path in sorted(files) for line in files[path].decode().splitlines()]


# a project with every kind of vote --------------------------------------------------------------------------------
def answers(store, prompts=("p1", "p2"), k=3, model="base-model") -> list[int]:
    run = store.start_generation_run(model, None, {"temperature": 0.8})
    return store.add_completions(run, [(p, j, f"{p} answer {j}", 3, "stop") for p in prompts for j in range(k)],
                                 source="test")


def shown_vote(store, pair_id, annotator, choice, swapped=False, comment=None):
    shown = store.add_presentation(pair_id, annotator, swapped, time.time() - 2.5)
    return store.add_vote(pair_id, annotator, choice, source="prefer", presentation_id=shown, swapped=swapped,
                          seconds_spent=2.5, comment=comment)[0]


def voted_project(store, tmp_path):
    """Votes of people, a judge and an import; shown swapped and not; a comment; ties, both bad, a skip; a vote undone
    and cast again within the same second; two guideline versions; a multi-turn prompt."""
    c = answers(store)  # p1: c[0..2], p2: c[3..5]; pairs (0,1) (0,2) (1,2) of each prompt
    store.save_guidelines("Be brief.", author="owner")
    pair = {(a, b): p["id"] for p in store.open_pairs("nobody")
            for a, b in [(store.pair(p["id"])["completion_a_id"], store.pair(p["id"])["completion_b_id"])]}
    # the pair of the two later answers first: a restore meets them in another order than they were stored
    shown_vote(store, pair[(c[1], c[2])], "alice", "b", swapped=True, comment="shorter")
    shown_vote(store, pair[(c[0], c[1])], "alice", "a")
    shown_vote(store, pair[(c[3], c[4])], "alice", "tie")
    shown_vote(store, pair[(c[0], c[1])], "bob", "both_bad", swapped=True)
    store.add_vote(pair[(c[4], c[5])], "judge:short", "a", source="annotate", kind="judge")
    shown_vote(store, pair[(c[3], c[5])], "alice", "skip")
    assert store.undo_last_vote("alice")["choice"] == "skip"
    shown_vote(store, pair[(c[3], c[5])], "alice", "b")
    store.undo_last_vote("bob")
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"prompt": [{"role": "system", "content": "You are terse."},
                                           {"role": "user", "content": "Hi?"}],
                                "chosen": [{"role": "assistant", "content": "Hi."}],
                                "rejected": [{"role": "assistant", "content": "Hello there, friend!"}]}) + "\n")
    import_preferences(store, str(chat))
    return store


def vote_view(store) -> list[tuple]:
    """Every vote (undone ones too, in order) as what it means, whatever the ids and the pair's stored order."""
    view = []
    for v in store.votes(include_undone=True):
        pair = store.pair(v["pair_id"])
        text = {"a": pair["text_a"], "b": pair["text_b"]}
        model = {pair["text_a"]: (pair["model_a"], pair["checkpoint_a"]),
                 pair["text_b"]: (pair["model_b"], pair["checkpoint_b"])}
        left = None if v["swapped"] is None else text["b" if v["swapped"] else "a"]
        shown = store.presentation(v["presentation_id"]) if v["presentation_id"] else None
        shown_left = None if shown is None else (text["b" if shown["swapped"] else "a"], shown["shown_at"])
        view.append((v["annotator"], v["annotator_kind"], pair["prompt"], pair["messages_json"], sorted(model.items()),
                     text.get(v["choice"], v["choice"]), left, shown_left, v["guidelines_version"],
                     v["seconds_spent"], v["comment"], v["source"], v["created_at"], v["undone_at"]))
    return view


def assert_same_project(restored: Store, original: Store) -> None:
    assert vote_view(restored) == vote_view(original)
    assert restored.guideline_versions() == original.guideline_versions()
    assert restored.guidelines() == (restored.folder / "guidelines.md").read_text() == original.guidelines()
    assert restored.annotators() == original.annotators()


def assert_no_duplicates(hub) -> None:
    keys = [r["key"] for r in records(hub) if r["type"] == "vote"]
    assert len(keys) == len(set(keys))


# (a) ----------------------------------------------------------------------------------------------------------------
def test_votes_backed_up_restore_into_an_empty_data_dir_exactly(hub, store, tmp_path, rlhf_home):
    voted_project(store, tmp_path)
    done = ok(backup_once(hub, tmp_path, real=True))
    assert "backed up" in done.stdout and BACKUP in done.stdout

    repo = hub.repo(BACKUP, "dataset")
    assert repo.private
    [name] = backup_files(hub)
    assert name.startswith("test-project/") and name.endswith(".jsonl")
    kinds = [r["type"] for r in records(hub)]
    assert kinds.count("vote") == len(store.votes(include_undone=True)) == 8
    assert kinds.count("guidelines") == 2 and kinds.count("annotator") == 4 and "undo" not in kinds

    fresh = tmp_path / "fresh-home"
    done = ok(restore(hub, tmp_path, fresh, real=True))
    assert "restored 8 votes (2 undone), 2 guideline versions and 4 annotators" in done.stdout
    assert_same_project(Store.open("test-project", root=fresh), store)
    for path in list(rlhf_home.rglob("*")) + list(fresh.rglob("*")):  # the token is in no file we wrote
        assert not path.is_file() or hub.token.encode() not in path.read_bytes(), path


# (b) ----------------------------------------------------------------------------------------------------------------
def test_a_failed_commit_loses_nothing_and_duplicates_nothing(hub, store, tmp_path):
    voted_project(store, tmp_path)
    hub.fail_commits = 2  # the scheduler's push at start and the one asked for both fail
    failed = backup_once(hub, tmp_path)
    assert failed.returncode != 0 and "Nothing is lost" in failed.stderr and "Traceback" not in failed.stderr
    assert backup_files(hub) == {}

    shown_vote(store, store.open_pairs("carol")[0]["id"], "carol", "a")
    store.undo_last_vote("alice")  # a vote the failed process had staged
    hub.fail_commits = 1  # a new process: its first push fails too, the next one carries everything
    ok(backup_once(hub, tmp_path))
    assert len(backup_files(hub)) == 2  # the failed process's file and this one's
    assert_no_duplicates(hub)
    assert [r["type"] for r in records(hub)].count("undo") == 1

    fresh = tmp_path / "fresh-home"
    ok(restore(hub, tmp_path, fresh))
    assert_same_project(Store.open("test-project", root=fresh), store)


# (c) ----------------------------------------------------------------------------------------------------------------
def test_a_restart_backs_up_only_what_is_new(hub, store, tmp_path):
    voted_project(store, tmp_path)
    ok(backup_once(hub, tmp_path))
    first = backup_files(hub)

    store.save_guidelines("Be brief and kind.", author="owner")
    answers(store, prompts=("p3",), k=2, model="ppo-policy")
    shown_vote(store, store.open_pairs("dave")[-1]["id"], "dave", "b")
    store.undo_last_vote("alice")
    ok(backup_once(hub, tmp_path))  # a new process, the same data dir
    files = backup_files(hub)
    [second] = set(files) - set(first)
    assert {path: files[path] for path in first} == first  # the earlier file is as it was
    assert sorted(json.loads(line)["type"] for line in files[second].decode().splitlines()) == \
        ["annotator", "guidelines", "undo", "vote"]
    assert_no_duplicates(hub)

    commits = len(hub.repo(BACKUP, "dataset").commits)
    ok(backup_once(hub, tmp_path))  # nothing new: no new file, no commit
    assert backup_files(hub) == files and len(hub.repo(BACKUP, "dataset").commits) == commits

    fresh = tmp_path / "fresh-home"
    ok(restore(hub, tmp_path, fresh))
    assert_same_project(Store.open("test-project", root=fresh), store)


# (d) ----------------------------------------------------------------------------------------------------------------
def test_restore_leaves_a_project_with_votes_alone(hub, store, tmp_path, rlhf_home):
    voted_project(store, tmp_path)
    ok(backup_once(hub, tmp_path))
    before = vote_view(store)
    done = ok(restore(hub, tmp_path, rlhf_home))
    assert "nothing done" in done.stdout and "already has 8 votes" in done.stdout
    assert vote_view(store) == before and len(store.guideline_versions()) == 2

    missing = restore(hub, tmp_path, rlhf_home, project="elsewhere")
    assert missing.returncode != 0 and "holds no backup of project 'elsewhere'" in missing.stderr
    assert "it holds 'test-project'" in missing.stderr  # what it does hold, and how to back this one up
    assert f"`python -m rlhf backup --project elsewhere --repo {BACKUP}`" in missing.stderr
    assert not (rlhf_home / "elsewhere").exists()


# the Space's start-up -----------------------------------------------------------------------------------------------
START = """
from rlhf.backup import backup_from_environment
from rlhf.store import Store
scheduler = backup_from_environment()
store = Store.open("test-project")
pair = store.open_pairs("erin")[0]["id"]
store.add_vote(pair, "erin", "a", source="prefer")
scheduler.push_now()
scheduler.stop()
from rlhf.ui.hub_tab import backup_line  # what the Hub tab tells the owner
assert scheduler.repo_id in backup_line() and "every 5 minutes" in backup_line(), backup_line()
print(scheduler.appended)
"""


def test_a_space_restores_its_projects_at_start_and_backs_up_new_votes(hub, store, tmp_path):
    voted_project(store, tmp_path)
    ok(backup_once(hub, tmp_path))
    fresh = tmp_path / "space-home"  # a restarted Space without persistent storage: an empty data dir
    done = ok(run(hub, tmp_path, ["-c", START], RLHF_HOME=str(fresh), RLHF_BACKUP_REPO=BACKUP))
    assert "restored project 'test-project'" in done.stderr and "every 5 minutes" in done.stderr
    assert json.loads(done.stdout.strip().replace("'", '"')) == {"test-project": 2}  # erin and her vote, no more
    assert_no_duplicates(hub)

    again = tmp_path / "again-home"
    ok(restore(hub, tmp_path, again))
    restored = vote_view(Store.open("test-project", root=again))
    assert restored[:-1] == vote_view(store) and restored[-1][0] == "erin"

    off = ok(run(hub, tmp_path, ["-c", "from rlhf.backup import backup_from_environment as b; print(b())"],
                 RLHF_HOME=str(fresh)))
    assert off.stdout.strip() == "None"  # no RLHF_BACKUP_REPO: backup is off


# replay, in this process (no Hub) -----------------------------------------------------------------------------------
def test_replay_rebuilds_the_votes_and_a_damaged_backup_restores_nothing(store, tmp_path):
    from rlhf.backup import new_rows, replay

    voted_project(store, tmp_path)
    rows, watermark = new_rows(store, {})
    copy = Store.open("copy", create=True)
    counts = replay(copy, rows)
    assert (counts["votes"], counts["undone"], counts["guidelines"]) == (8, 2, 2)
    assert_same_project(copy, store)
    assert new_rows(copy, counts["watermark"])[0] == []  # what came from the backup is not written back to it
    # the copy names every vote as the original does (answers stored in another order here flip a and b)
    names = [(r["type"], r.get("key")) for r in rows]
    assert [(r["type"], r.get("key")) for r in new_rows(copy, {})[0]] == names

    live = next(r for r in rows if r["type"] == "vote" and r["undone_at"] is None)
    twice = {**live, "key": "another-key", "created_at": live["created_at"][:-6] + ".5+00:00", "presentation": None}
    damaged = Store.open("damaged", create=True)
    before = (damaged.counts(), damaged.guideline_versions(), damaged.annotators())
    with pytest.raises(RLHFError, match="two live votes .* the backup is damaged, nothing was restored"):
        replay(damaged, rows + [twice])
    assert (damaged.counts(), damaged.guideline_versions(), damaged.annotators()) == before
    assert damaged.guidelines() == (damaged.folder / "guidelines.md").read_text()
