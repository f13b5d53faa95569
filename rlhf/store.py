"""Projects and the preference store.

A project is a folder under the data directory (`rlhf.config.data_dir()`) holding `store.sqlite` and `guidelines.md`.
The store is SQLite in WAL mode, so the UI, the CLI and a background job can read while one writes. Each write is
one transaction: a failed call leaves the store as it was.

Tables (schema version in `PRAGMA user_version`, upgraded in `_MIGRATIONS` order):
  guidelines        every version of the annotation guidelines (the file holds the newest)
  prompts           unique prompt texts and where they came from
  generation_runs   one call to `generate`: model spec, checkpoint id, sampling parameters, status
  completions       candidate answers: prompt, run, text, token count, finish reason (`stop` or `length`)
  pairs             two completions of one prompt, in canonical order (a = lower id); gold pairs carry the answer
  presentations     a pair shown to an annotator, and which side each candidate was on (`swapped`: b on the left)
  votes             a choice on a pair in canonical order: a, b, tie, both_bad or skip; undone votes are kept,
                    marked `undone_at`. One live vote per (pair, annotator) and per presentation: a double click
                    is one vote.
  annotators        everyone who voted: a person (`human`), a scripted judge (`judge`), or an import (`import`)
  reward_scores     a reward checkpoint's normalised score of a completion, per (checkpoint id, completion id):
                    computed once, so the Prefer queue can order pairs by the reward model's certainty cheaply
  settings          project settings an owner changed (key, JSON value, who, when): `logins_only`
  guest_names       which browser holds each typed name (`guest:NAME`): a hash of that browser's key, so nobody
                    else can vote or undo under it
  exclusions        annotators an owner excluded (who, why, when): their votes stay in the store and the backup but
                    leave the export (so training), the queue's count of who decided a pair, and the leaderboard

Votes are durable when acknowledged: each is committed (synchronous=FULL) before the call returns.

This module is the only one that speaks SQL: everything else reads and writes through `Store`'s methods. Several
writes that must land together go in one `with store.transaction():` block; every Store method called inside it, in
this thread, joins that transaction (committed when the block ends, rolled back on any error).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from rlhf.config import RLHFError, cli, data_dir

STORE_FILE = "store.sqlite"
ARENA = "arena"
"""Source of arena prompts and pairs: what a visitor asked two models. They stay out of the Prefer queue and the
training prompts: one person's comparison, not the project's data to label or optimise on."""
GUIDELINES_FILE = "guidelines.md"
_PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")

DEFAULT_GUIDELINES = """# Annotation guidelines

Describe the context the model answers in (who asks, who answers, and why), then what makes one answer better.

- Prefer the answer that is **correct** and **helpful** for this context.
- Prefer **clear and concise** over long and vague.
- **Tie**: both are about equally good. **Both bad**: neither is acceptable.
"""

_MIGRATIONS = [
    """
    CREATE TABLE guidelines (
        id INTEGER PRIMARY KEY,
        version INTEGER NOT NULL UNIQUE,
        text TEXT NOT NULL,
        author TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE prompts (
        id INTEGER PRIMARY KEY,
        text TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE generation_runs (
        id INTEGER PRIMARY KEY,
        model_spec TEXT NOT NULL,
        checkpoint_id TEXT,
        params_json TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE TABLE completions (
        id INTEGER PRIMARY KEY,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id),
        run_id INTEGER NOT NULL REFERENCES generation_runs(id),
        candidate_index INTEGER NOT NULL,
        text TEXT NOT NULL,
        num_tokens INTEGER NOT NULL,
        finish_reason TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX completions_by_prompt ON completions(prompt_id);
    """,
    """
    ALTER TABLE prompts ADD COLUMN messages_json TEXT;  -- the full conversation, for imported multi-turn prompts
    CREATE TABLE pairs (
        id INTEGER PRIMARY KEY,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id),
        completion_a_id INTEGER NOT NULL REFERENCES completions(id),
        completion_b_id INTEGER NOT NULL REFERENCES completions(id),
        gold_choice TEXT CHECK (gold_choice IN ('a', 'b', 'tie', 'both_bad')),
        source TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (completion_a_id, completion_b_id),
        CHECK (completion_a_id < completion_b_id)
    );
    CREATE TABLE presentations (
        id INTEGER PRIMARY KEY,
        pair_id INTEGER NOT NULL REFERENCES pairs(id),
        annotator TEXT NOT NULL,
        swapped INTEGER NOT NULL,
        shown_at REAL NOT NULL
    );
    CREATE TABLE votes (
        id INTEGER PRIMARY KEY,
        pair_id INTEGER NOT NULL REFERENCES pairs(id),
        presentation_id INTEGER UNIQUE REFERENCES presentations(id),
        annotator TEXT NOT NULL,
        choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad', 'skip')),
        swapped INTEGER,
        guidelines_version INTEGER NOT NULL,
        seconds_spent REAL,
        comment TEXT,
        source TEXT NOT NULL,
        created_at TEXT NOT NULL,
        undone_at TEXT
    );
    CREATE UNIQUE INDEX one_live_vote_per_annotator_and_pair ON votes(pair_id, annotator) WHERE undone_at IS NULL;
    CREATE INDEX votes_by_annotator ON votes(annotator, id);
    CREATE TABLE annotators (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        first_seen TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE reward_scores (
        checkpoint_id TEXT NOT NULL,
        completion_id INTEGER NOT NULL REFERENCES completions(id),
        score REAL NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (checkpoint_id, completion_id)
    );
    """,
    """
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value_json TEXT NOT NULL,
        changed_by TEXT,
        changed_at TEXT NOT NULL
    );
    CREATE TABLE guest_names (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        claimed_at TEXT NOT NULL
    );
    CREATE TABLE exclusions (
        annotator TEXT PRIMARY KEY,
        excluded_by TEXT,
        reason TEXT,
        excluded_at TEXT NOT NULL
    );
    """,
]
SETTINGS = {"logins_only": False}
"""Project settings and their defaults. `logins_only`: only logged-in users may label (typed guest names refused)."""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def validate_project_name(name: str) -> str:
    """The name itself, or an error when it is empty or could leave the data directory (`../x`, `/etc`)."""
    name = (name or "").strip()
    if not name:
        raise RLHFError("project: the name is empty; give one such as `opossum-tutor`.")
    if not _PROJECT_NAME.match(name) or ".." in name:
        raise RLHFError(
            f"project: {name!r} is not a valid name; use up to 64 letters, digits, spaces, '-', '_' or '.', "
            "starting with a letter or digit (no '/', no '..')."
        )
    return name


def list_projects(root: Path | None = None) -> list[str]:
    root = root or data_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / STORE_FILE).is_file())


@dataclass
class Prompt:
    id: int
    text: str


def prompt_messages(text: str, messages_json: str | None) -> list[dict]:
    """A stored prompt as chat messages: its conversation when imported as one, else one user message."""
    return json.loads(messages_json) if messages_json else [{"role": "user", "content": text}]


@dataclass
class Completion:
    id: int
    prompt_id: int
    prompt: str
    candidate_index: int
    text: str
    num_tokens: int
    finish_reason: str
    run_id: int
    model_spec: str
    checkpoint_id: str | None
    created_at: str | None = None


class Store:
    """One project's folder and SQLite database. Open with `Store.open(name)` (creating it if asked)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.name = folder.name
        self.path = folder / STORE_FILE
        self._local = threading.local()
        """This thread's open connection (`conn`) while a method or a `transaction()` block runs, and what to do
        once it commits (`after_commit`)."""

    @classmethod
    def open(cls, name: str, create: bool = False, root: Path | None = None) -> "Store":
        name = validate_project_name(name)
        root = root or data_dir()
        folder = root / name
        if not (folder / STORE_FILE).is_file():
            if not create:
                known = ", ".join(list_projects(root)) or "none yet"
                raise RLHFError(f"project: {name!r} does not exist (projects: {known}); create it with "
                                f"{cli('projects', '--create', name)}, or in the app: type the name in the header "
                                "and press Create project.")
            folder.mkdir(parents=True, exist_ok=True)
        store = cls(folder)
        store._migrate()
        if store.guidelines_version() == 0:
            store.save_guidelines(DEFAULT_GUIDELINES, author="rlhf")
        return store

    # connections and transactions -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self, begin: str | None = None):
        """This thread's open connection, else a new one whose block is one transaction: committed on success
        (then the `after_commit` actions run), rolled back on any error. While the block runs, every method called
        in this thread joins it, so a method may call another without a second connection waiting on the first."""
        shared = getattr(self._local, "conn", None)
        if shared is not None:
            yield shared  # the outermost block commits or rolls back all of it
            return
        conn = sqlite3.connect(self.path, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")  # a committed vote survives a crash, not just a killed process
        self._local.conn, self._local.after_commit = conn, []
        try:
            with conn:
                if begin:
                    conn.execute(begin)
                yield conn
            actions = self._local.after_commit
        finally:
            self._local.conn = None
            conn.close()
        for action in actions:
            action()

    @contextlib.contextmanager
    def transaction(self, write: bool = True):
        """One transaction around a block: every Store method this thread calls inside it joins it, so the block's
        writes land together or not at all (rolled back on any error). A block inside another joins the outer one.

        `write=True` takes the write lock at once (BEGIN IMMEDIATE): a block that reads, then writes, never fails
        halfway because another connection wrote in between (other writers wait, up to 30 s). `write=False` is a
        read snapshot: every read in the block sees the store as it was at the first one, while others keep writing.
        """
        with self._connect("BEGIN IMMEDIATE" if write else "BEGIN"):
            yield

    def _after_commit(self, action) -> None:
        """Run `action` once what was written is committed: now, or when this thread's open transaction commits
        (never, if it rolls back)."""
        if getattr(self._local, "conn", None) is None:
            action()
        else:
            self._local.after_commit.append(action)

    def _migrate(self) -> None:
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")  # persistent: readers never block the writer
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                conn.executescript(script)
                conn.execute(f"PRAGMA user_version = {number}")

    def journal_mode(self) -> str:
        with self._connect() as conn:
            return conn.execute("PRAGMA journal_mode").fetchone()[0]

    # guidelines -------------------------------------------------------------------------------------------------
    def guidelines(self) -> str:
        with self._connect() as conn:
            row = conn.execute("SELECT text FROM guidelines ORDER BY version DESC LIMIT 1").fetchone()
        return row["text"] if row else ""

    def guidelines_version(self) -> int:
        with self._connect() as conn:
            return conn.execute("SELECT COALESCE(MAX(version), 0) FROM guidelines").fetchone()[0]

    def guideline_versions(self) -> list[dict]:
        """Every version, oldest first: version, text, author, created_at."""
        with self._connect() as conn:
            return [dict(r) for r in conn.execute("SELECT version, text, author, created_at FROM guidelines"
                                                  " ORDER BY version")]

    def save_guidelines(self, text: str, author: str | None = None) -> int:
        """Store a new version (unless the text is unchanged) and mirror it to guidelines.md; returns the version."""
        if not text.strip():
            raise RLHFError("guidelines: the text is empty; write what makes one answer better than another.")
        with self._connect() as conn:
            row = conn.execute("SELECT version, text FROM guidelines ORDER BY version DESC LIMIT 1").fetchone()
            if row and row["text"] == text:
                return row["version"]
            version = (row["version"] if row else 0) + 1
            conn.execute(
                "INSERT INTO guidelines (version, text, author, created_at) VALUES (?, ?, ?, ?)",
                (version, text, author, now()),
            )
        self._after_commit(self._mirror_guidelines)
        return version

    def replace_guidelines(self, versions: list[dict]) -> None:
        """Replace every guideline version with `versions` (each: version, text, author, created_at), numbered as
        given, and mirror the newest to guidelines.md: what a restore from a backup does. Votes name versions by
        number, so a project that has votes refuses."""
        if not versions:
            raise RLHFError("guidelines: no versions given; a project always keeps at least one.")
        with self._connect() as conn:
            if conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0]:
                raise RLHFError(f"guidelines: project {self.name!r} has votes, which name guideline versions by "
                                "number, so its versions cannot be replaced; restore into a new project instead.")
            conn.execute("DELETE FROM guidelines")
            conn.executemany("INSERT INTO guidelines (version, text, author, created_at) VALUES (?, ?, ?, ?)",
                             [(g["version"], g["text"], g.get("author"), g["created_at"]) for g in versions])
        self._after_commit(self._mirror_guidelines)

    def _mirror_guidelines(self) -> None:
        (self.folder / GUIDELINES_FILE).write_text(self.guidelines())

    # prompts, generation runs and completions --------------------------------------------------------------------
    def add_prompt(self, text: str, source: str, messages: list[dict] | None = None,
                   created_at: str | None = None) -> int:
        """The id of the prompt with this text, stored first if new. A prompt already stored keeps its own source,
        time and messages, except that an arena prompt someone generates candidates for becomes a training prompt.
        `messages`: the whole conversation, for a multi-turn (or system) prompt."""
        with self._connect() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO prompts (text, source, created_at, messages_json) VALUES (?, ?, ?, ?)",
                (text, source, created_at or now(), json.dumps(messages, ensure_ascii=False) if messages else None),
            )
            if source != ARENA:
                conn.execute("UPDATE prompts SET source = ? WHERE text = ? AND source = ?", (source, text, ARENA))
            return conn.execute("SELECT id FROM prompts WHERE text = ?", (text,)).fetchone()[0]

    def prompts(self) -> list[Prompt]:
        """The project's prompts for training, evaluation and the next round: arena prompts (what visitors typed
        to compare two models) are not among them."""
        with self._connect() as conn:
            return [Prompt(r["id"], r["text"]) for r in
                    conn.execute("SELECT id, text FROM prompts WHERE source != ? ORDER BY id", (ARENA,))]

    def start_generation_run(self, model_spec: str, checkpoint_id: str | None, params: dict, *,
                             status: str = "running", created_at: str | None = None,
                             finished_at: str | None = None) -> int:
        """Record a generation run (model, checkpoint, sampling parameters); returns its id. It starts `running`
        now; a restore passes the status and times it recorded."""
        with self._connect() as conn:
            return conn.execute(
                "INSERT INTO generation_runs (model_spec, checkpoint_id, params_json, status, created_at, finished_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (model_spec, checkpoint_id, json.dumps(params, sort_keys=True), status, created_at or now(),
                 finished_at),
            ).lastrowid

    def finish_generation_run(self, run_id: int, status: str) -> None:
        with self._connect() as conn:
            conn.execute(
                "UPDATE generation_runs SET status = ?, finished_at = ? WHERE id = ?", (status, now(), run_id)
            )

    def generation_run(self, run_id: int) -> dict:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM generation_runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            known = ", ".join(str(run["id"]) for run in self.generation_runs()) or "none yet"
            raise RLHFError(f"generation run {run_id} does not exist in project {self.name!r}; use one of its runs "
                            f"({known}).")
        run = dict(row)
        run["params"] = json.loads(run.pop("params_json"))
        return run

    def generation_runs(self) -> list[dict]:
        with self._connect() as conn:
            rows = [dict(r) for r in conn.execute("SELECT * FROM generation_runs ORDER BY id")]
        for run in rows:
            run["params"] = json.loads(run.pop("params_json"))
        return rows

    def candidate_generation_runs(self) -> list[dict]:
        """Generation runs that sampled candidates for the annotators, oldest first: arena answers (one per model,
        chosen in a chat) and audit answers (one per policy, after a flagged run) are not candidate generations."""
        return [r for r in self.generation_runs() if r["params"].get("source") not in ("arena", "audit")]

    def candidate_max_new_tokens(self) -> int | None:
        """max_new_tokens of the project's newest candidate generation: where the answers the annotators judge were
        cut. None before the first generation."""
        runs = [r for r in self.candidate_generation_runs() if "max_new_tokens" in r["params"]]
        return int(runs[-1]["params"]["max_new_tokens"]) if runs else None

    def add_completion(self, prompt_id: int, run_id: int, candidate_index: int, text: str, num_tokens: int,
                       finish_reason: str, created_at: str | None = None) -> int:
        """Store one candidate answer of a prompt, made by a generation run; returns its id (no pair is made)."""
        with self._connect() as conn:
            return conn.execute(
                "INSERT INTO completions (prompt_id, run_id, candidate_index, text, num_tokens, finish_reason,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (prompt_id, run_id, candidate_index, text, num_tokens, finish_reason, created_at or now()),
            ).lastrowid

    def add_completions(self, run_id: int, rows: list[tuple[str, int, str, int, str]], source: str) -> list[int]:
        """Store candidates in one transaction, and a pair for every two candidates of a prompt in this run.

        Each row: (prompt text, candidate index, text, tokens, finish reason).
        """
        ids = []
        by_prompt: dict[int, list[int]] = {}
        with self.transaction():
            for prompt, candidate_index, text, num_tokens, finish_reason in rows:
                prompt_id = self.add_prompt(prompt, source)
                completion_id = self.add_completion(prompt_id, run_id, candidate_index, text, num_tokens,
                                                    finish_reason)
                ids.append(completion_id)
                by_prompt.setdefault(prompt_id, []).append(completion_id)
            for completion_ids in by_prompt.values():
                for i, first in enumerate(completion_ids):
                    for second in completion_ids[i + 1 :]:
                        self.add_pair(first, second, source)
        return ids

    def find_completion(self, prompt_id: int, text: str) -> int | None:
        """The oldest answer to this prompt with exactly this text, if there is one."""
        with self._connect() as conn:
            row = conn.execute("SELECT id FROM completions WHERE prompt_id = ? AND text = ? ORDER BY id LIMIT 1",
                               (prompt_id, text)).fetchone()
        return row[0] if row else None

    def add_pairs(self, pairs: list[tuple[int, int]], source: str) -> list[int]:
        """Pairs of answers (two completion ids of one prompt, from different runs) in one transaction; returns their
        ids (an existing pair keeps its id)."""
        with self.transaction():
            return [self.add_pair(first, second, source) for first, second in pairs]

    def completions(self, run_id: int | None = None, ids: list[int] | None = None) -> list[Completion]:
        """Candidates with their prompt and the model that made them, oldest first: all, one run's, or these ids."""
        query = (
            "SELECT c.id, c.prompt_id, p.text AS prompt, c.candidate_index, c.text, c.num_tokens, c.finish_reason,"
            " c.run_id, r.model_spec, r.checkpoint_id, c.created_at FROM completions c"
            " JOIN prompts p ON p.id = c.prompt_id JOIN generation_runs r ON r.id = c.run_id"
        )
        where, args = [], []
        if run_id is not None:
            where.append("c.run_id = ?")
            args.append(run_id)
        if ids is not None:
            where.append(f"c.id IN ({', '.join('?' * len(ids))})")
            args += [int(i) for i in ids]
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY c.id", args).fetchall()
        return [Completion(**dict(r)) for r in rows]

    def completions_by_prompt(self) -> dict[int, list[Completion]]:
        grouped: dict[int, list[Completion]] = {}
        for completion in self.completions():
            grouped.setdefault(completion.prompt_id, []).append(completion)
        return grouped

    def completion_chats(self, completion_ids: list[int]) -> dict[int, tuple[list[dict], str]]:
        """What a reward model reads for each completion: (the prompt as chat messages, the answer)."""
        ids = [int(i) for i in completion_ids]
        if not ids:
            return {}
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT c.id, c.text, p.text AS prompt, p.messages_json FROM completions c"
                f" JOIN prompts p ON p.id = c.prompt_id WHERE c.id IN ({', '.join('?' * len(ids))})", ids,
            ).fetchall()
        return {r["id"]: (prompt_messages(r["prompt"], r["messages_json"]), r["text"]) for r in rows}

    def counts(self) -> dict[str, int]:
        with self._connect() as conn:
            return {
                table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("prompts", "completions", "generation_runs", "pairs", "votes")
            }

    # pairs, presentations and votes ------------------------------------------------------------------------------
    def add_pair(self, first: int, second: int, source: str, gold: str | None = None,
                 created_at: str | None = None) -> int:
        """The id of the pair of two answers to one prompt, stored first if new. Stored in canonical order (a = the
        lower id), so each pair exists once, whichever order it is asked in. `gold`: the known answer ('a', 'b',
        'tie', 'both_bad', in canonical order) of a gold pair; a pair already stored keeps its own."""
        a, b = sorted((int(first), int(second)))
        with self._connect() as conn:
            found, prompts, prompt_id = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT prompt_id), MIN(prompt_id) FROM completions WHERE id IN (?, ?)",
                (a, b),
            ).fetchone()
            if found != 2 or prompts != 1:  # also when first == second: one completion found
                raise RLHFError(f"pair: completions {first} and {second} are not two different answers to one prompt "
                                f"in project {self.name!r}; pick two candidates of the same prompt.")
            conn.execute(
                "INSERT OR IGNORE INTO pairs (prompt_id, completion_a_id, completion_b_id, gold_choice, source,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (prompt_id, a, b, gold, source, created_at or now()),
            )
            return conn.execute(
                "SELECT id FROM pairs WHERE completion_a_id = ? AND completion_b_id = ?", (a, b)
            ).fetchone()[0]

    def pair(self, pair_id: int) -> dict:
        """A pair with its prompt and both completions, and the model that produced each."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT p.id, p.prompt_id, p.gold_choice, p.source, pr.text AS prompt, pr.messages_json,"
                " p.completion_a_id, ca.text AS text_a, ra.model_spec AS model_a, ra.checkpoint_id AS checkpoint_a,"
                " p.completion_b_id, cb.text AS text_b, rb.model_spec AS model_b, rb.checkpoint_id AS checkpoint_b"
                " FROM pairs p JOIN prompts pr ON pr.id = p.prompt_id"
                " JOIN completions ca ON ca.id = p.completion_a_id JOIN generation_runs ra ON ra.id = ca.run_id"
                " JOIN completions cb ON cb.id = p.completion_b_id JOIN generation_runs rb ON rb.id = cb.run_id"
                " WHERE p.id = ?",
                (pair_id,),
            ).fetchone()
        if row is None:
            raise RLHFError(f"pair {pair_id} does not exist in project {self.name!r}; ask for the next pair again "
                            "(Next pair in the Prefer tab, or /next_pair in the API).")
        return dict(row)

    def open_pairs(self, annotator: str) -> list[dict]:
        """Pairs this annotator may be shown (no live vote of theirs; arena pairs belong to the arena), with how many
        other annotators decided each (skips aside; excluded annotators do not count, so their pairs come back)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT p.id, p.gold_choice, p.completion_a_id, p.completion_b_id, p.source,"
                " (SELECT COUNT(DISTINCT v.annotator) FROM votes v WHERE v.pair_id = p.id AND v.undone_at IS NULL"
                "  AND v.choice != 'skip' AND v.annotator NOT IN (SELECT annotator FROM exclusions)) AS decided_by"
                " FROM pairs p WHERE p.source != ? AND NOT EXISTS (SELECT 1 FROM votes v WHERE v.pair_id = p.id"
                "  AND v.annotator = ? AND v.undone_at IS NULL)"
                " ORDER BY p.id",
                (ARENA, annotator),
            ).fetchall()
        return [dict(r) for r in rows]

    def add_presentation(self, pair_id: int, annotator: str, swapped: bool, shown_at: float) -> int:
        """Record that a pair was shown to an annotator (`swapped`: answer b on the left); returns its id."""
        with self._connect() as conn:
            return conn.execute(
                "INSERT INTO presentations (pair_id, annotator, swapped, shown_at) VALUES (?, ?, ?, ?)",
                (pair_id, annotator, int(swapped), shown_at),
            ).lastrowid

    def presentation(self, presentation_id: int) -> dict:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM presentations WHERE id = ?", (presentation_id,)).fetchone()
        if row is None:
            raise RLHFError(f"presentation {presentation_id} does not exist; ask for the next pair again.")
        return dict(row)

    def add_annotator(self, name: str, kind: str, first_seen: str | None = None) -> None:
        """Record an annotator (`human`, `judge` or `import`) the first time they are seen; later calls change
        nothing."""
        with self._connect() as conn:
            conn.execute("INSERT OR IGNORE INTO annotators (name, kind, first_seen) VALUES (?, ?, ?)",
                         (name, kind, first_seen or now()))

    def annotators(self) -> list[dict]:
        with self._connect() as conn:
            return [dict(r) for r in conn.execute("SELECT * FROM annotators ORDER BY first_seen, name")]

    def add_vote(
        self,
        pair_id: int,
        annotator: str,
        choice: str,
        *,
        source: str,
        kind: str = "human",
        presentation_id: int | None = None,
        swapped: bool | None = None,
        seconds_spent: float | None = None,
        comment: str | None = None,
        guidelines_version: int | None = None,
        created_at: str | None = None,
        undone_at: str | None = None,
    ) -> tuple[int, bool]:
        """Record a vote (choice in canonical order) and commit it; returns (vote id, True if new).

        A second vote for the same presentation, or on a pair this annotator already has a live vote on, is not
        stored again: the existing vote's id comes back with False (a double click is one vote). `created_at` and
        `undone_at` keep the times of a vote cast elsewhere (a restore); a vote stored undone is kept for the record
        only and is not the annotator's live vote on the pair.
        """

        def same_vote():
            row = conn.execute(
                "SELECT id FROM votes WHERE (presentation_id = ? AND ? IS NOT NULL)"
                " OR (pair_id = ? AND annotator = ? AND undone_at IS NULL AND ?)",
                (presentation_id, presentation_id, pair_id, annotator, undone_at is None),
            ).fetchone()
            return row[0] if row else None

        with self._connect() as conn:
            existing = same_vote()
            if existing:
                return existing, False
            self.add_annotator(annotator, kind, first_seen=created_at)
            if guidelines_version is None:
                guidelines_version = self.guidelines_version()
            try:
                vote_id = conn.execute(
                    "INSERT INTO votes (pair_id, presentation_id, annotator, choice, swapped, guidelines_version,"
                    " seconds_spent, comment, source, created_at, undone_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (pair_id, presentation_id, annotator, choice, None if swapped is None else int(swapped),
                     guidelines_version, seconds_spent, comment or None, source, created_at or now(), undone_at),
                ).lastrowid
            except sqlite3.IntegrityError:
                # A concurrent request (double click, second tab) committed this vote between our check and insert:
                # the unique indexes kept it single; answer as for any repeated vote.
                existing = same_vote()
                if existing is None:
                    raise
                return existing, False
        return vote_id, True

    def undo_last_vote(self, annotator: str) -> dict | None:
        """Mark the annotator's newest live vote undone (kept for the record); its pair comes back to the queue."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT * FROM votes WHERE annotator = ? AND undone_at IS NULL ORDER BY id DESC LIMIT 1", (annotator,)
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE votes SET undone_at = ? WHERE id = ?", (now(), row["id"]))
        return dict(row)

    # settings, guest names, exclusions --------------------------------------------------------------------------
    def setting(self, key: str):
        """A project setting (see `SETTINGS`), its default until an owner changes it."""
        if key not in SETTINGS:
            raise ValueError(f"unknown setting {key!r}; known: {', '.join(SETTINGS)}")
        with self._connect() as conn:
            row = conn.execute("SELECT value_json FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else SETTINGS[key]

    def set_setting(self, key: str, value, changed_by: str | None = None) -> None:
        if key not in SETTINGS:
            raise ValueError(f"unknown setting {key!r}; known: {', '.join(SETTINGS)}")
        with self._connect() as conn:
            conn.execute("INSERT OR REPLACE INTO settings (key, value_json, changed_by, changed_at) VALUES (?, ?, ?, ?)",
                         (key, json.dumps(value), changed_by, now()))

    def claim_guest(self, name: str, holder: str) -> bool:
        """Bind a guest name to a holder (a hash of a browser's key) on first use; True when `holder` holds it.

        A name nobody holds but that has votes or presentations (cast before holders were recorded, or restored from
        a backup) is held by nobody who can prove it, so it stays closed: no one can take over its votes."""
        with self._connect() as conn:
            row = conn.execute("SELECT holder FROM guest_names WHERE name = ?", (name,)).fetchone()
            if row is not None:
                return row[0] == holder
            used = conn.execute("SELECT EXISTS (SELECT 1 FROM votes WHERE annotator = ?)"
                                " OR EXISTS (SELECT 1 FROM presentations WHERE annotator = ?)", (name, name)).fetchone()[0]
            if used:
                return False
            conn.execute("INSERT INTO guest_names (name, holder, claimed_at) VALUES (?, ?, ?)", (name, holder, now()))
            return True

    def exclude_annotator(self, annotator: str, excluded_by: str | None, reason: str | None = None) -> None:
        """Leave this annotator's votes out of the export (so training), the queue and the leaderboard; kept here."""
        with self._connect() as conn:
            known = conn.execute("SELECT 1 FROM annotators WHERE name = ?", (annotator,)).fetchone()
            if known is None:
                names = [r[0] for r in conn.execute("SELECT name FROM annotators ORDER BY name LIMIT 20")]
                raise RLHFError(f"exclude: {annotator!r} has no votes in project {self.name!r} (annotators: "
                                f"{', '.join(names) or 'none yet'}); give the name as the quality panel shows it.")
            conn.execute("INSERT OR REPLACE INTO exclusions (annotator, excluded_by, reason, excluded_at)"
                         " VALUES (?, ?, ?, ?)", (annotator, excluded_by, (reason or "").strip() or None, now()))

    def readmit_annotator(self, annotator: str) -> bool:
        """Undo an exclusion; True when there was one."""
        with self._connect() as conn:
            return conn.execute("DELETE FROM exclusions WHERE annotator = ?", (annotator,)).rowcount > 0

    def exclusions(self) -> list[dict]:
        """Excluded annotators, with who excluded them, why and when, oldest first."""
        with self._connect() as conn:
            return [dict(r) for r in conn.execute("SELECT * FROM exclusions ORDER BY excluded_at, annotator")]

    def votes(self, include_undone: bool = False) -> list[dict]:
        """Every vote, oldest first, with what it was cast on: its columns, plus the annotator's kind
        (`annotator_kind`), the pair (`prompt_id`, `completion_a_id`, `completion_b_id`, `gold_choice`,
        `pair_source`, `pair_created_at`), its prompt (`prompt`, `messages_json`, `prompt_source`,
        `prompt_created_at`) and the presentation it answered (`shown_swapped`, `shown_at`; None without one)."""
        query = (
            "SELECT v.*, a.kind AS annotator_kind, p.prompt_id, p.completion_a_id, p.completion_b_id, p.gold_choice,"
            " p.source AS pair_source, p.created_at AS pair_created_at, pr.text AS prompt, pr.messages_json,"
            " pr.source AS prompt_source, pr.created_at AS prompt_created_at, s.swapped AS shown_swapped, s.shown_at"
            " FROM votes v JOIN pairs p ON p.id = v.pair_id JOIN prompts pr ON pr.id = p.prompt_id"
            " LEFT JOIN annotators a ON a.name = v.annotator LEFT JOIN presentations s ON s.id = v.presentation_id"
        )
        if not include_undone:
            query += " WHERE v.undone_at IS NULL"
        with self._connect() as conn:
            return [dict(r) for r in conn.execute(query + " ORDER BY v.id")]

    # reward scores ----------------------------------------------------------------------------------------------
    def reward_scores(self, checkpoint_id: str, completion_ids: list[int] | None = None) -> dict[int, float]:
        """Cached normalised scores of a reward checkpoint, completion id -> score (all of them, or these ids)."""
        query, args = "SELECT completion_id, score FROM reward_scores WHERE checkpoint_id = ?", [checkpoint_id]
        if completion_ids is not None:
            ids = [int(i) for i in completion_ids]
            query += f" AND completion_id IN ({', '.join('?' * len(ids))})"
            args += ids
        with self._connect() as conn:
            return {row[0]: row[1] for row in conn.execute(query, args)}

    def add_reward_scores(self, checkpoint_id: str, scores: dict[int, float]) -> None:
        """Cache a reward checkpoint's scores of completions (a score computed again replaces the old one)."""
        with self._connect() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO reward_scores (checkpoint_id, completion_id, score, created_at)"
                " VALUES (?, ?, ?, ?)",
                [(checkpoint_id, int(c), float(score), now()) for c, score in scores.items()],
            )
