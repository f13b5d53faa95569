"""Backup of a project's votes to a private dataset repo, and restoring a project from it (a Space that keeps its data).

    start_backup(store, repo_id)        a `CommitScheduler` that, every 5 minutes (or more), appends the rows added
                                        since the last push to a JSONL file and commits the changed files
    restore_project(name, repo_id)      an empty project rebuilt from the repo's JSONL files; a project that has votes
                                        is left alone
    backup_from_environment()           what the app calls once at start: when RLHF_BACKUP_REPO is set, restore
                                        every project the repo holds that is empty here, then back up all projects

The repo holds append-only JSONL files with unique names, one per project and process start, as huggingface_hub's
scheduled-uploads guide asks (https://huggingface.co/docs/huggingface_hub/guides/upload#scheduled-uploads):
`<project>/<UTC start time>-<random>.jsonl`. Each line is one record:

    {"type": "guidelines", "version", "text", "author", "created_at"}
    {"type": "annotator", "name", "kind", "first_seen"}
    {"type": "vote", "key", "annotator", "annotator_kind", "choice", "swapped", "guidelines_version", "seconds_spent",
     "comment", "source", "created_at", "undone_at", "presentation": {"swapped", "shown_at"} | null,
     "pair": {"source", "gold_choice", "created_at", "prompt": {...}, "a": completion, "b": completion}}
    {"type": "undo", "key", "undone_at"}     a vote written while live and undone since

A vote row carries everything needed to rebuild it in an empty store: the prompt (and its messages), both answers
with the generation run (model, checkpoint, sampling parameters) that made each, the choice in the pair's canonical
order (a = the answer stored first). `key` names a vote the same way in every store it is restored into (the
annotator, the time, the two answers, and its rank among votes identical in those), so replaying a row twice, or an
undo of a vote restored from elsewhere, never adds a vote or undoes the wrong one.

What has been written is tracked per project in the staging folder (`<data dir>/.backup/<owner>--<repo>/.state/`):
the last vote id, the undone votes, the guideline versions and annotators written. Rows are appended and synced
before the watermark moves, so a crash between the two writes a row again (the restore drops the copy) and never
loses one. The staged files stay: a push that fails is retried with the next one, and a new process pushes the files
an earlier one could not (files the Hub already holds are skipped by hash, so they make no commit).

Not backed up: candidates and pairs nobody voted on (generate them again), checkpoints and exports (push them with
`rlhf.hub`). A token goes to huggingface_hub only (the argument, else HF_TOKEN): never logged or written by us.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import wait
from pathlib import Path

from huggingface_hub import CommitScheduler

from rlhf.config import ConfigError, RLHFError, cli, data_dir
from rlhf.hub import hub_api, first_line
from rlhf.store import STORE_FILE, Completion, Store, list_projects, validate_project_name

FORMAT = 1
"""Version of the JSONL records; a restore refuses records from a newer format."""
MIN_EVERY_MINUTES = 5
"""The Hub's scheduled-uploads guide asks for commits no more often than every 5 minutes."""
STAGING = ".backup"
"""Folder under the data directory holding one staging folder per backup repo (not a project: starts with '.')."""
STATE = ".state"
"""Folder in a staging folder with each project's watermark; never uploaded."""


def staging_dir(repo_id: str, root: Path | None = None) -> Path:
    """Where the JSONL files for `repo_id` are written before the scheduler commits them."""
    return (root or data_dir()) / STAGING / repo_id.replace("/", "--")


def _sha(value) -> str:
    return hashlib.sha1(json.dumps(value, ensure_ascii=False).encode()).hexdigest()


# what a vote looks like in a backup --------------------------------------------------------------------------------
def _completion(completion: Completion, run: dict) -> dict:
    """A completion as backed up: its text and the generation run (model, parameters) that made it, and its key."""
    run = {"model_spec": run["model_spec"], "checkpoint_id": run["checkpoint_id"], "params": run["params"],
           "status": run["status"], "created_at": run["created_at"], "finished_at": run["finished_at"]}
    record = {"text": completion.text, "candidate_index": completion.candidate_index,
              "num_tokens": completion.num_tokens, "finish_reason": completion.finish_reason,
              "created_at": completion.created_at, "run": run}
    return {"key": completion_key(completion.prompt, record), **record}


def _run_key(run: dict) -> list:
    """What names a generation run in any store (its id does not): model, checkpoint, parameters, start time."""
    return [run["model_spec"], run["checkpoint_id"], json.dumps(run["params"], sort_keys=True), run["created_at"]]


def completion_key(prompt: str, completion: dict) -> str:
    return _sha([*_run_key(completion["run"]), prompt, completion["candidate_index"], completion["text"]])[:20]


def vote_key(annotator: str, created_at: str, key_a: str, key_b: str, rank: int) -> str:
    """A vote's name in every store: annotator, time, the two answers (in either order) and `rank`, its place among
    votes alike in all of these (a vote, its undo and a new vote on the same pair within one second)."""
    return _sha([annotator, created_at, sorted([key_a, key_b]), rank])[:24]


def _ranks(votes: list[dict]) -> dict[int, int]:
    """Vote id -> how many earlier votes (lower ids) share its pair, annotator and time: its `rank` in `vote_key`."""
    seen: Counter = Counter()
    ranks = {}
    for vote in sorted(votes, key=lambda v: v["id"]):
        alike = (vote["pair_id"], vote["annotator"], vote["created_at"])
        ranks[vote["id"]] = seen[alike]
        seen[alike] += 1
    return ranks


def _vote_record(vote: dict, rank: int, completions: dict[int, dict]) -> dict:
    """A vote (a row of `Store.votes`) as backed up; `completions`: backed-up completions by id."""
    a, b = completions[vote["completion_a_id"]], completions[vote["completion_b_id"]]
    prompt = {"text": vote["prompt"], "messages": json.loads(vote["messages_json"]) if vote["messages_json"] else None,
              "source": vote["prompt_source"], "created_at": vote["prompt_created_at"]}
    presentation = None if vote["shown_at"] is None else {"swapped": vote["shown_swapped"],
                                                          "shown_at": vote["shown_at"]}
    key = vote_key(vote["annotator"], vote["created_at"], a["key"], b["key"], rank)
    return {
        "type": "vote", "format": FORMAT, "key": key,
        "annotator": vote["annotator"], "annotator_kind": vote["annotator_kind"], "choice": vote["choice"],
        "swapped": vote["swapped"], "guidelines_version": vote["guidelines_version"],
        "seconds_spent": vote["seconds_spent"], "comment": vote["comment"], "source": vote["source"],
        "created_at": vote["created_at"], "undone_at": vote["undone_at"], "presentation": presentation,
        "pair": {"source": vote["pair_source"], "gold_choice": vote["gold_choice"],
                 "created_at": vote["pair_created_at"], "prompt": prompt, "a": a, "b": b},
    }


# the writer: rows added since the last write, appended to this process's file --------------------------------------
def _identity(guideline_versions: list[dict]) -> str | None:
    """Which store a watermark belongs to (a project deleted and made again starts its ids over)."""
    first = next((g for g in guideline_versions if g["version"] == 1), None)
    return _sha([first["text"], first["created_at"]])[:16] if first else None


def _state_path(folder: Path, project: str) -> Path:
    return folder / STATE / f"{project}.json"


def _read_state(folder: Path, project: str) -> dict:
    path = _state_path(folder, project)
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_state(folder: Path, project: str, state: dict) -> None:
    path = _state_path(folder, project)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)  # a reader never sees half a watermark


def new_rows(store: Store, state: dict) -> tuple[list[dict], dict]:
    """The records not yet written according to `state` (a watermark), and the watermark once they are."""
    with store.transaction(write=False):  # one snapshot: a vote committed meanwhile waits for the next write
        versions = store.guideline_versions()
        annotators = store.annotators()
        votes = store.votes(include_undone=True)
        identity = _identity(versions)
        if state.get("store") != identity:
            state = {}  # another store under the same name, or nothing written yet: write it all
        last = state.get("last_vote_id", 0)
        written_undone = set(state.get("undone", []))
        written_annotators = set(state.get("annotators", []))
        new = [v for v in votes if v["id"] > last]
        undone_since = [v for v in votes if v["id"] <= last and v["undone_at"] is not None]
        undo = [v for v in undone_since if v["id"] not in written_undone]
        wanted = sorted({v[f"completion_{side}_id"] for v in new + undo for side in "ab"})
        runs = {run["id"]: run for run in store.generation_runs()} if wanted else {}
        completions = {c.id: _completion(c, runs[c.run_id]) for c in store.completions(ids=wanted)}
    ranks = _ranks(votes)
    rows = [{"type": "guidelines", "format": FORMAT, **g} for g in versions
            if g["version"] > state.get("guidelines_version", 0)]
    rows += [{"type": "annotator", "format": FORMAT, **a} for a in annotators if a["name"] not in written_annotators]
    rows += [_vote_record(vote, ranks[vote["id"]], completions) for vote in new]
    rows += [{"type": "undo", "format": FORMAT, "key": _vote_record(vote, ranks[vote["id"]], completions)["key"],
              "undone_at": vote["undone_at"]} for vote in undo]
    undone = written_undone | {v["id"] for v in new + undone_since if v["undone_at"]}
    max_version = max((g["version"] for g in versions), default=0)
    watermark = {
        "store": identity, "last_vote_id": new[-1]["id"] if new else last, "undone": sorted(undone),
        "guidelines_version": max(max_version, state.get("guidelines_version", 0)),
        "annotators": sorted(written_annotators | {a["name"] for a in annotators}),
    }
    return rows, watermark


def append_new_rows(store: Store, folder: Path, file_name: str) -> int:
    """Append what `store` gained since the last write to `folder/<project>/<file_name>`; returns the rows written.

    Call it under the scheduler's lock, so a commit never reads a file half-written. The rows reach the disk (fsync)
    before the watermark moves: a crash in between writes them again next time, never loses them.
    """
    rows, watermark = new_rows(store, _read_state(folder, store.name))
    if rows:
        path = folder / store.name / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            out.flush()
            os.fsync(out.fileno())
    _write_state(folder, store.name, watermark)
    return len(rows)


# the scheduler -----------------------------------------------------------------------------------------------------
class BackupScheduler(CommitScheduler):
    """huggingface_hub's CommitScheduler over a staging folder, which first appends each project's new rows.

    `projects` None backs up every project under the data directory, including ones created later.
    """

    def __init__(self, *, repo_id: str, root: Path, projects: list[str] | None, every_minutes: float,
                 token: str | None = None):
        self.root, self.projects = root, projects
        started = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        self.file_name = f"{started}-{uuid.uuid4().hex[:8]}.jsonl"
        """This process's file in each project's folder: a unique name, in start order when sorted."""
        self.appended: dict[str, int] = {}
        """Rows appended by this process, per project."""
        self.errors: dict[str, str] = {}
        """The last error appending a project's rows (the others are still pushed)."""
        super().__init__(
            repo_id=repo_id, folder_path=staging_dir(repo_id, root), every=every_minutes, repo_type="dataset",
            private=True, token=token, hf_api=hub_api(token), ignore_patterns=[f"{STATE}/*"],
            allow_patterns=[f"{name}/*.jsonl" for name in projects] if projects is not None else ["*/*.jsonl"],
        )

    def append(self) -> int:
        """Append every project's new rows to this process's files (under the scheduler's lock); returns the rows."""
        total = 0
        with self.lock:
            for name in self.projects if self.projects is not None else list_projects(self.root):
                try:
                    # Store(), not Store.open(): only read, never race the app creating the project
                    added = append_new_rows(Store(self.root / name), self.folder_path, self.file_name)
                except (sqlite3.Error, OSError) as error:  # a project being deleted, a locked database
                    self.errors[name] = str(error)
                    print(f"backup: could not read project {name!r}: {error}; it is tried again at the next push",
                          file=sys.stderr)
                    continue
                self.errors.pop(name, None)
                self.appended[name] = self.appended.get(name, 0) + added
                total += added
        return total

    def push_to_hub(self):
        """Append the new rows, then commit the files that changed (CommitScheduler's own push)."""
        self.append()
        return super().push_to_hub()

    def push_now(self):
        """Append and commit now (after the scheduler's own first push, so the two never race); returns the commit
        info, None when nothing changed. Raises RLHFError when the commit fails: the rows stay staged."""
        while getattr(self, "last_future", None) is None:  # the scheduler thread submits its first push at start
            time.sleep(0.01)
        wait([self.last_future])
        try:
            return self.trigger().result()
        except Exception as error:  # HTTP, connection: the staged files are pushed by the next push
            raise RLHFError(
                f"backup: committing to dataset repo {self.repo_id} failed: {first_line(error, self.token)}. "
                f"Nothing is lost: the rows are kept in {self.folder_path} and go with the next push."
            ) from error


def start_backup(project: Store | str | None, repo_id: str, token: str | None = None, every_minutes: float = 5,
                 root: Path | None = None) -> BackupScheduler:
    """Back up a project (a Store or a name; None: every project under the data directory) to a private dataset repo,
    created if needed, every `every_minutes` (at least 5). Returns the running scheduler; `push_now()` pushes at once,
    leaving a `with` block on it pushes a last time."""
    if every_minutes < MIN_EVERY_MINUTES:
        raise ConfigError(f"backup: every {every_minutes} minutes is too often; the Hub asks scheduled commits to be "
                          f"at least {MIN_EVERY_MINUTES} minutes apart.")
    if isinstance(project, Store):
        root, projects = project.folder.parent, [project.name]
    else:
        root = root or data_dir()
        projects = None if project is None else [Store.open(project, root=root).name]
    try:
        scheduler = BackupScheduler(repo_id=repo_id, root=root, projects=projects, every_minutes=every_minutes,
                                    token=token)
    except RLHFError:
        raise
    except Exception as error:  # no token, no connection, a repo id that is not ours
        raise RLHFError(f"backup: could not create or reach dataset repo {repo_id}: {first_line(error, token)}. "
                        "Check the id and that HF_TOKEN (or `hf auth login`) can write to it.") from error
    try:
        if scheduler.api.repo_info(scheduler.repo_id, repo_type="dataset").private is False:
            print(f"backup: warning: dataset repo {scheduler.repo_id} is public, so the votes (and annotator names) "
                  "are readable by anyone; make it private in its settings.", file=sys.stderr)
    except Exception:  # only a courtesy check
        pass
    return scheduler


# restore -----------------------------------------------------------------------------------------------------------
def _repo_files(api, repo_id: str, token: str | None) -> tuple[str, list[str]] | None:
    """(commit, JSONL files) of the backup repo, None when it does not exist (nothing was ever backed up)."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        sha = api.repo_info(repo_id, repo_type="dataset").sha
        files = api.list_repo_files(repo_id, repo_type="dataset", revision=sha)
    except RepositoryNotFoundError:
        return None
    except Exception as error:
        raise RLHFError(f"restore: could not read dataset repo {repo_id}: {first_line(error, token)}") from error
    return sha, sorted(f for f in files if f.endswith(".jsonl") and f.count("/") == 1)


def backed_up_projects(repo_id: str, token: str | None = None) -> list[str]:
    """The projects the backup repo holds rows of."""
    found = _repo_files(hub_api(token), repo_id, token)
    return sorted({f.split("/")[0] for f in found[1]}) if found else []


def _read_rows(api, repo_id: str, sha: str, files: list[str], token: str | None) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="rlhf-restore-") as tmp:
        for name in files:  # sorted: the files of earlier process starts first, so vote ids keep their order
            try:
                path = api.hf_hub_download(repo_id, name, repo_type="dataset", revision=sha, local_dir=tmp)
            except Exception as error:
                raise RLHFError(f"restore: could not download {name} from {repo_id}: "
                                f"{first_line(error, token)}") from error
            for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise RLHFError(f"restore: line {number} of {name} in {repo_id} is not JSON ({error}); "
                                    "fix or delete that line in the repo and restore again.") from error
                if row.get("format", FORMAT) > FORMAT:
                    raise RLHFError(f"restore: {name} in {repo_id} was written by a newer RLHF Space (format "
                                    f"{row['format']}); update this one.")
                rows.append(row)
    return rows


def restore_project(project: Store | str, repo_id: str, token: str | None = None, root: Path | None = None) -> dict:
    """Rebuild an empty project (no votes, or not there at all) from the backup repo; a project with votes is left
    as it is. Returns what happened: project, restored (bool), reason when not, files, votes, undone, guidelines,
    annotators, duplicates (rows seen twice, restored once)."""
    if isinstance(project, Store):
        root, name = project.folder.parent, project.name
    else:
        root, name = root or data_dir(), validate_project_name(project)
    result = {"project": name, "repo_id": repo_id, "restored": False, "files": 0, "votes": 0, "undone": 0,
              "guidelines": 0, "annotators": 0, "duplicates": 0}
    if (root / name / STORE_FILE).is_file():
        held = len(Store.open(name, root=root).votes(include_undone=True))
        if held:
            return {**result, "reason": f"project {name!r} already has {held} votes; restore only fills an empty "
                                        "project (restore into a new project name to compare)"}
    api = hub_api(token)
    found = _repo_files(api, repo_id, token)
    files = [f for f in found[1] if f.split("/")[0] == name] if found else []
    if not files:
        held = sorted({f.split("/")[0] for f in found[1]}) if found else []
        where = (f"it holds {', '.join(map(repr, held))}; restore one of those, or" if held else
                 "the repo does not exist or this token cannot read it; check the id and HF_TOKEN, or" if not found
                 else "it holds none yet;")
        return {**result, "missing": True,
                "reason": f"dataset repo {repo_id} holds no backup of project {name!r} ({where} back the project up "
                          f"first with {cli('backup', '--project', name, '--repo', repo_id)})"}
    rows = _read_rows(api, repo_id, found[0], files, token)
    store = Store.open(name, create=True, root=root)
    counts = replay(store, rows)
    _write_state(staging_dir(repo_id, root), name, counts.pop("watermark"))
    return {**result, **counts, "restored": True, "files": len(files)}


def replay(store: Store, rows: list[dict]) -> dict:
    """Write backed-up rows into a store with no votes, in one transaction; returns the counts and the watermark
    (everything restored is in the repo already, so the writer must not send it again)."""
    guidelines: dict[int, dict] = {}
    annotators: dict[str, dict] = {}
    undone: dict[str, str] = {}
    votes: dict[str, dict] = {}
    duplicates = 0
    for row in rows:
        kind = row.get("type")
        if kind == "guidelines":
            guidelines.setdefault(row["version"], row)
        elif kind == "annotator":
            annotators.setdefault(row["name"], row)
        elif kind == "undo":
            undone.setdefault(row["key"], row["undone_at"])
        elif kind == "vote":
            duplicates += row["key"] in votes
            votes.setdefault(row["key"], row)
    with store.transaction():
        if store.counts()["votes"]:
            raise RLHFError(f"restore: project {store.name!r} got votes while restoring; nothing was restored.")
        restored_versions = _replay_guidelines(store, sorted(guidelines.values(), key=lambda g: g["version"]))
        for row in annotators.values():
            store.add_annotator(row["name"], row["kind"], row["first_seen"])
        runs, completions = _known_completions(store)
        undone_count = 0
        # in the order they were cast (the files of two processes that ran at once interleave); stable, so votes
        # of one second keep their order within a file, which their keys' ranks count on
        for key, row in sorted(votes.items(), key=lambda item: item[1]["created_at"]):
            undone_at = row["undone_at"] or undone.get(key)
            undone_count += undone_at is not None
            _replay_vote(store, row, undone_at, runs, completions)
        restored = store.votes(include_undone=True)
        watermark = {
            "store": _identity(store.guideline_versions()),
            "last_vote_id": max((v["id"] for v in restored), default=0),
            "undone": [v["id"] for v in restored if v["undone_at"] is not None],
            "guidelines_version": restored_versions,
            "annotators": sorted(a["name"] for a in store.annotators()),
        }
    return {"votes": len(votes), "undone": undone_count, "guidelines": len(guidelines), "annotators": len(annotators),
            "duplicates": duplicates, "watermark": watermark}


def _replay_guidelines(store: Store, backed_up: list[dict]) -> int:
    """The backup's guideline versions, numbered as they were (votes name them by number); versions written here
    that the backup does not have (a project edited before its restore) follow them. Returns the last version that
    came from the backup."""
    if not backed_up:
        return 0
    local = store.guideline_versions()
    same = 0
    while same < min(len(local), len(backed_up)) and local[same]["text"] == backed_up[same]["text"]:
        same += 1
    merged = [{key: g.get(key) for key in ("version", "text", "author", "created_at")} for g in backed_up]
    for g in local[same:]:
        if g["text"] != merged[-1]["text"]:
            merged.append({**g, "version": merged[-1]["version"] + 1})
    store.replace_guidelines(merged)  # no vote names a version yet: the store has none
    return backed_up[-1]["version"]


def _replay_vote(store: Store, row: dict, undone_at: str | None, runs: dict, completions: dict) -> None:
    pair = row["pair"]
    prompt = pair["prompt"]
    # a prompt this project has already keeps its own record
    prompt_id = store.add_prompt(prompt["text"], prompt["source"], prompt["messages"], created_at=prompt["created_at"])
    ids = [_replay_completion(store, prompt_id, prompt["text"], pair[side], runs, completions) for side in "ab"]
    if ids[0] == ids[1]:
        raise RLHFError(f"restore: vote {row['key']} compares an answer with itself; the backup is damaged.")
    flipped = ids[0] > ids[1]  # the answers were stored in the other order here: canonical a is the backup's b
    gold = _flip(pair["gold_choice"]) if flipped else pair["gold_choice"]
    pair_id = store.add_pair(*ids, pair["source"], gold, created_at=pair["created_at"])
    presentation_id = None
    if row["presentation"]:
        shown = row["presentation"]
        presentation_id = store.add_presentation(pair_id, row["annotator"],
                                                 not shown["swapped"] if flipped else shown["swapped"],
                                                 shown["shown_at"])
    swapped = row["swapped"]
    _, created = store.add_vote(
        pair_id, row["annotator"], _flip(row["choice"]) if flipped else row["choice"], source=row["source"],
        kind=row["annotator_kind"] or "human", presentation_id=presentation_id,
        swapped=None if swapped is None else not swapped if flipped else swapped,
        seconds_spent=row["seconds_spent"], comment=row["comment"], guidelines_version=row["guidelines_version"],
        created_at=row["created_at"], undone_at=undone_at,
    )
    if not created:
        raise RLHFError(f"restore: the backup holds two live votes of {row['annotator']!r} on one pair (vote "
                        f"{row['key']}); the backup is damaged, nothing was restored.")


def _flip(choice: str | None) -> str | None:
    return {"a": "b", "b": "a"}.get(choice, choice)


def _known_completions(store: Store) -> tuple[dict[str, int], dict[str, int]]:
    """The project's own generation runs and completions by key: a restored vote on one of them uses it."""
    runs, completions = {}, {}
    by_id = {run["id"]: run for run in store.generation_runs()}
    for completion in store.completions():
        found = by_id[completion.run_id]
        run = {"model_spec": found["model_spec"], "checkpoint_id": found["checkpoint_id"], "params": found["params"],
               "created_at": found["created_at"]}
        runs[_sha(_run_key(run))] = completion.run_id
        completions[completion_key(completion.prompt, {"run": run, "candidate_index": completion.candidate_index,
                                                       "text": completion.text})] = completion.id
    return runs, completions


def _replay_completion(store: Store, prompt_id: int, prompt: str, completion: dict, runs: dict,
                       completions: dict) -> int:
    key = completion_key(prompt, completion)
    if key not in completions:
        run = completion["run"]
        run_key = _sha(_run_key(run))
        if run_key not in runs:
            runs[run_key] = store.start_generation_run(
                run["model_spec"], run["checkpoint_id"], run["params"], status=run["status"],
                created_at=run["created_at"], finished_at=run["finished_at"])
        completions[key] = store.add_completion(
            prompt_id, runs[run_key], completion["candidate_index"], completion["text"], completion["num_tokens"],
            completion["finish_reason"], created_at=completion["created_at"])
    return completions[key]


# on a Space --------------------------------------------------------------------------------------------------------
ACTIVE: BackupScheduler | None = None
"""The scheduler `backup_from_environment` started in this process, if any (the Hub tab says where votes go)."""


def backup_from_environment() -> BackupScheduler | None:
    """What the app calls once at start. When RLHF_BACKUP_REPO names a dataset repo: restore each project the repo
    holds that is empty or missing here, then back up every project to it every RLHF_BACKUP_MINUTES (default 5).
    The token is HF_TOKEN (a Space secret), read by huggingface_hub. Returns the scheduler, or None when backup is
    off or could not start (the app runs anyway; the reason is printed to the Space's logs)."""
    repo_id = os.environ.get("RLHF_BACKUP_REPO", "").strip()
    if not repo_id:
        return None
    root = data_dir()
    try:
        every = float(os.environ.get("RLHF_BACKUP_MINUTES") or MIN_EVERY_MINUTES)
        for name in backed_up_projects(repo_id):
            try:
                result = restore_project(name, repo_id, root=root)
            except RLHFError as error:  # one damaged project: the others are restored, and new votes backed up
                print(f"backup: project {name!r} not restored: {error}", file=sys.stderr)
                continue
            if result["restored"]:
                print(f"backup: restored project {name!r} from {repo_id}: {result['votes']} votes "
                      f"({result['undone']} undone), {result['guidelines']} guideline versions, "
                      f"{result['annotators']} annotators", file=sys.stderr)
        scheduler = start_backup(None, repo_id, every_minutes=every, root=root)
    except (RLHFError, ValueError) as error:  # no token, no network, a bad setting: the app runs without backup
        print(f"backup: off: {error}", file=sys.stderr)
        return None
    print(f"backup: every project under {root} is backed up to dataset repo {scheduler.repo_id} every {every:g} "
          "minutes", file=sys.stderr)
    global ACTIVE
    ACTIVE = scheduler
    return scheduler


# command line ------------------------------------------------------------------------------------------------------
def add_backup_parser(commands) -> None:
    """The `backup` and `restore` subcommands, for `python -m rlhf`."""
    p = commands.add_parser("backup", help="back a project's votes up to a private dataset repo (every 5+ minutes)")
    p.add_argument("--project", required=True, help="project name (a folder under the data directory)")
    p.add_argument("--repo", required=True, help="dataset repo id, e.g. USER/rlhf-backup (created private if new)")
    p.add_argument("--once", action="store_true", help="push the new rows now and exit (default: keep running)")
    p.add_argument("--every-minutes", type=float, default=5, help="minutes between pushes, at least 5 (default: 5)")
    p.set_defaults(func=cmd_backup)

    p = commands.add_parser("restore", help="rebuild an empty project from its backup in a dataset repo")
    p.add_argument("--project", required=True, help="project name (created if it does not exist)")
    p.add_argument("--repo", required=True, help="dataset repo id the project was backed up to")
    p.set_defaults(func=cmd_restore)


def cmd_backup(args) -> None:
    store = Store.open(args.project)
    scheduler = start_backup(store, args.repo, every_minutes=args.every_minutes)
    try:
        if not args.once:
            print(f"backing up {store.name!r} to {scheduler.repo_id} every {args.every_minutes:g} minutes; "
                  "Ctrl-C pushes a last time and stops", file=sys.stderr)
            try:
                while True:
                    time.sleep(60)
            except KeyboardInterrupt:
                pass
        info = scheduler.push_now()
    finally:
        scheduler.stop()
    revision = info.oid[:7] if info is not None else "unchanged"
    print(f"backed up {scheduler.appended.get(store.name, 0)} new rows of {store.name!r} to dataset repo "
          f"{scheduler.repo_id} (revision {revision}); staged in {scheduler.folder_path / store.name}")


def cmd_restore(args) -> None:
    result = restore_project(args.project, args.repo)
    if result.get("missing"):
        raise RLHFError(f"restore: {result['reason']}.")
    if not result["restored"]:
        print(f"restore: nothing done: {result['reason']}")
        return
    print(f"restored {result['votes']} votes ({result['undone']} undone), {result['guidelines']} guideline versions "
          f"and {result['annotators']} annotators into {result['project']!r} from {result['files']} file(s) of "
          f"{args.repo}" + (f"; {result['duplicates']} repeated rows were restored once" if result["duplicates"]
                            else ""))
