"""Projects and the preference store.

A project is a folder under the data directory (`rlhf.config.data_dir()`) holding `store.sqlite` and `guidelines.md`.
The store is SQLite in WAL mode, so the UI, the CLI and a background job can read while one writes. Each write is
one transaction: a failed call leaves the store as it was.

Tables (schema version in `PRAGMA user_version`, upgraded in `_MIGRATIONS` order):
  guidelines        every version of the annotation guidelines (the file holds the newest)
  prompts           unique prompt texts and where they came from
  generation_runs   one call to `generate`: model spec, checkpoint id, sampling parameters, status
  completions       candidate answers: prompt, run, text, token count, finish reason (`stop` or `length`)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from rlhf.config import RLHFError, data_dir

STORE_FILE = "store.sqlite"
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
]


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


class Store:
    """One project's folder and SQLite database. Open with `Store.open(name)` (creating it if asked)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.name = folder.name
        self.path = folder / STORE_FILE

    @classmethod
    def open(cls, name: str, create: bool = False, root: Path | None = None) -> "Store":
        name = validate_project_name(name)
        root = root or data_dir()
        folder = root / name
        if not (folder / STORE_FILE).is_file():
            if not create:
                known = ", ".join(list_projects(root)) or "none yet"
                raise RLHFError(f"project: {name!r} does not exist (projects: {known}); create it first.")
            folder.mkdir(parents=True, exist_ok=True)
        store = cls(folder)
        store._migrate()
        if store.guidelines_version() == 0:
            store.save_guidelines(DEFAULT_GUIDELINES, author="rlhf")
        return store

    @contextlib.contextmanager
    def connect(self):
        """A connection whose block is one transaction: committed on success, rolled back on any error."""
        conn = sqlite3.connect(self.path, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def _migrate(self) -> None:
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")  # persistent: readers never block the writer
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                conn.executescript(script)
                conn.execute(f"PRAGMA user_version = {number}")

    def journal_mode(self) -> str:
        with self.connect() as conn:
            return conn.execute("PRAGMA journal_mode").fetchone()[0]

    # guidelines -------------------------------------------------------------------------------------------------
    def guidelines(self) -> str:
        with self.connect() as conn:
            row = conn.execute("SELECT text FROM guidelines ORDER BY version DESC LIMIT 1").fetchone()
        return row["text"] if row else ""

    def guidelines_version(self) -> int:
        with self.connect() as conn:
            return conn.execute("SELECT COALESCE(MAX(version), 0) FROM guidelines").fetchone()[0]

    def save_guidelines(self, text: str, author: str | None = None) -> int:
        """Store a new version (unless the text is unchanged) and mirror it to guidelines.md; returns the version."""
        if not text.strip():
            raise RLHFError("guidelines: the text is empty; write what makes one answer better than another.")
        with self.connect() as conn:
            row = conn.execute("SELECT version, text FROM guidelines ORDER BY version DESC LIMIT 1").fetchone()
            if row and row["text"] == text:
                return row["version"]
            version = (row["version"] if row else 0) + 1
            conn.execute(
                "INSERT INTO guidelines (version, text, author, created_at) VALUES (?, ?, ?, ?)",
                (version, text, author, now()),
            )
        (self.folder / GUIDELINES_FILE).write_text(text)
        return version

    # prompts and completions ------------------------------------------------------------------------------------
    def start_generation_run(self, model_spec: str, checkpoint_id: str | None, params: dict) -> int:
        with self.connect() as conn:
            cursor = conn.execute(
                "INSERT INTO generation_runs (model_spec, checkpoint_id, params_json, status, created_at)"
                " VALUES (?, ?, ?, 'running', ?)",
                (model_spec, checkpoint_id, json.dumps(params, sort_keys=True), now()),
            )
            return cursor.lastrowid

    def finish_generation_run(self, run_id: int, status: str) -> None:
        with self.connect() as conn:
            conn.execute(
                "UPDATE generation_runs SET status = ?, finished_at = ? WHERE id = ?", (status, now(), run_id)
            )

    def add_completions(self, run_id: int, rows: list[tuple[str, int, str, int, str]], source: str) -> list[int]:
        """Store candidates in one transaction. Each row: (prompt text, candidate index, text, tokens, finish)."""
        ids = []
        with self.connect() as conn:
            for prompt, candidate_index, text, num_tokens, finish_reason in rows:
                prompt_id = self._prompt_id(conn, prompt, source)
                cursor = conn.execute(
                    "INSERT INTO completions (prompt_id, run_id, candidate_index, text, num_tokens, finish_reason,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (prompt_id, run_id, candidate_index, text, num_tokens, finish_reason, now()),
                )
                ids.append(cursor.lastrowid)
        return ids

    @staticmethod
    def _prompt_id(conn: sqlite3.Connection, text: str, source: str) -> int:
        conn.execute(
            "INSERT OR IGNORE INTO prompts (text, source, created_at) VALUES (?, ?, ?)", (text, source, now())
        )
        return conn.execute("SELECT id FROM prompts WHERE text = ?", (text,)).fetchone()[0]

    def prompts(self) -> list[Prompt]:
        with self.connect() as conn:
            return [Prompt(r["id"], r["text"]) for r in conn.execute("SELECT id, text FROM prompts ORDER BY id")]

    def completions(self, run_id: int | None = None) -> list[Completion]:
        query = (
            "SELECT c.id, c.prompt_id, p.text AS prompt, c.candidate_index, c.text, c.num_tokens, c.finish_reason,"
            " c.run_id, r.model_spec, r.checkpoint_id FROM completions c JOIN prompts p ON p.id = c.prompt_id"
            " JOIN generation_runs r ON r.id = c.run_id"
        )
        args: tuple = ()
        if run_id is not None:
            query += " WHERE c.run_id = ?"
            args = (run_id,)
        with self.connect() as conn:
            rows = conn.execute(query + " ORDER BY c.id", args).fetchall()
        return [Completion(**dict(r)) for r in rows]

    def generation_run(self, run_id: int) -> dict:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM generation_runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RLHFError(f"generation run {run_id} does not exist in project {self.name!r}.")
        run = dict(row)
        run["params"] = json.loads(run.pop("params_json"))
        return run

    def counts(self) -> dict[str, int]:
        with self.connect() as conn:
            return {
                table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("prompts", "completions", "generation_runs")
            }
