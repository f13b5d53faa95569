"""The preference dataset: export a project's votes in TRL's format with a card that shows the work; import others.

Export layout (loads with `datasets.load_dataset(DIR)`, trains with TRL's RewardTrainer and DPOTrainer unchanged):
    DIR/README.md              dataset card: YAML metadata (splits) + guidelines, annotators, agreement, processing
    DIR/data/train.parquet     decided votes (a or b better): prompt, chosen, rejected as chat messages + our columns
    DIR/data/ties.parquet      tie votes, both answers in stored order (equally good: a reward model trained with
                               `tie_weight` > 0 learns to score them alike; DPO leaves them out)
    DIR/data/both_bad.parquet  both-bad votes, in stored order (neither acceptable)
    DIR/guidelines.md          the guidelines text in force at export
    DIR/rlhf_export.json       project, counts, stats, guideline versions and generation runs, as data

One row per live vote: with overlap, a pair two people labelled appears twice, once per annotator, so disagreement
is visible in the data rather than averaged away. Undone votes and skips are not exported.

Import reads TRL preference datasets (conversational or plain text, explicit or implicit prompt) and hh-rlhf style
transcripts (`chosen`/`rejected` only, "\\n\\nHuman: ... \\n\\nAssistant: ..."). Every row is checked before anything is
written, then all rows go in one transaction: a malformed row names its split, row and field, and nothing is imported.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import secrets
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf import cards
from rlhf.config import RLHFError
from rlhf.stats import number, percent, project_stats
from rlhf.store import Store, now, prompt_messages

if TYPE_CHECKING:
    from huggingface_hub import DatasetCard

SPLITS = {"train": ("a", "b"), "ties": ("tie",), "both_bad": ("both_bad",)}
"""Export split -> the stored choices that go into it."""


def export_rows(store: Store) -> dict[str, list[dict]]:
    """The export's rows per split, from the project's live votes (excluded annotators' votes left out)."""
    pairs: dict[int, dict] = {}
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    excluded = {e["annotator"] for e in store.exclusions()}
    for vote in store.votes():
        split = next((name for name, choices in SPLITS.items() if vote["choice"] in choices), None)
        if split is None or vote["annotator"] in excluded:
            continue  # a skip, or an annotator the owner excluded
        pair = pairs.setdefault(vote["pair_id"], store.pair(vote["pair_id"]))
        first, second = ("b", "a") if vote["choice"] == "b" else ("a", "b")  # chosen first; ties keep stored order
        rows[split].append({
            "prompt": prompt_messages(pair["prompt"], pair["messages_json"]),
            "chosen": [{"role": "assistant", "content": pair[f"text_{first}"]}],
            "rejected": [{"role": "assistant", "content": pair[f"text_{second}"]}],
            "annotator": vote["annotator"],
            "annotator_kind": vote["annotator_kind"],
            "guidelines_version": vote["guidelines_version"],
            "seconds_spent": vote["seconds_spent"],
            "comment": vote["comment"],
            "label": vote["choice"],
            "shown_swapped": None if vote["swapped"] is None else bool(vote["swapped"]),
            "gold_choice": pair["gold_choice"],
            "vote_id": vote["id"],
            "pair_id": vote["pair_id"],
            "prompt_id": pair["prompt_id"],
            "chosen_id": pair[f"completion_{first}_id"],
            "rejected_id": pair[f"completion_{second}_id"],
            "chosen_model": pair[f"model_{first}"],
            "rejected_model": pair[f"model_{second}"],
            "source": vote["source"],
            "created_at": vote["created_at"],
        })
    return rows


@dataclass
class ExportResult:
    folder: Path
    rows: dict[str, int]


def export_preferences(store: Store, out_dir: str | Path) -> ExportResult:
    """Write the dataset folder (see the module docstring). Refuses when no vote decided anything yet."""
    from datasets import Dataset

    rows = export_rows(store)
    exclusions = store.exclusions()
    if not any(rows.values()):
        why = " (other than those of excluded annotators)" if exclusions else ""
        raise RLHFError(f"export: project {store.name!r} has no votes{why} yet; label some pairs first.")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "rlhf_export.json").is_file():
        raise RLHFError(f"export: {str(out)!r} exists and is not an earlier export; choose an empty folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    # A staging folder of its own per export: two exports to one place never delete each other's files.
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    (tmp / "data").mkdir()
    for split, split_rows in rows.items():
        if split_rows:
            Dataset.from_list(split_rows).to_parquet(str(tmp / "data" / f"{split}.parquet"))
    stats = project_stats(store)
    summary = {
        "project": store.name,
        "exported_at": now(),
        "rows": {split: len(r) for split, r in rows.items()},
        "votes_by_guidelines": dict(Counter(str(r["guidelines_version"]) for split in rows.values() for r in split)),
        "stats": stats,
        "guidelines": store.guideline_versions(),
        "generation_runs": store.generation_runs(),
        "excluded_annotators": exclusions,
    }
    (tmp / "rlhf_export.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    (tmp / "guidelines.md").write_text(store.guidelines())
    dataset_card(summary).save(tmp / "README.md")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # a reader never sees a half-written export
    return ExportResult(out, summary["rows"])


DATASET_CARD = """---
{{ card_data }}
---

# Preferences: {{ project }}

Human (and scripted) preferences collected with [RLHF Space]({{ space_url }}) on
{{ exported_on }}, in TRL's standard conversational preference format: `prompt`, `chosen`, `rejected`
are lists of chat messages. Load and train with:

```python
from datasets import load_dataset
dataset = load_dataset("path/or/repo")          # splits: {{ splits }}
# trl.RewardTrainer(..., train_dataset=dataset["train"]) or trl.DPOTrainer(...) work unchanged
```

## Splits and how votes were processed

| split | rows | what it holds |
|---|---|---|
| train | {{ rows.train }} | one row per vote where one answer was better (`chosen` is the preferred one) |
| ties | {{ rows.ties }} | tie votes: both answers equally good; kept apart (RLHF Space's reward model learns to score them alike) |
| both_bad | {{ rows.both_bad }} | both answers unacceptable; kept apart for filtering or SFT rewrites |

- One row per vote: a pair labelled by two annotators (overlap) appears twice, so disagreement stays visible.
- Skipped pairs and undone votes are not exported. Candidate order on screen was randomised per presentation
  (`shown_swapped`), and the model behind each answer was hidden until after the vote.
{%- if excluded %}
- Excluded annotators: the votes of {{ excluded_names }} are not in this dataset (see below).
{%- endif %}
- Extra columns: `annotator`, `annotator_kind` (human, judge, import), `guidelines_version`, `seconds_spent`,
  `comment`, `label`, `gold_choice`, ids back to the project's store (`vote_id`, `pair_id`, `prompt_id`,
  `chosen_id`, `rejected_id`), `chosen_model`, `rejected_model`, `source`, `created_at`.

## Annotation guidelines (version {{ guidelines_version }}, in force at export)

{{ guidelines }}

{{ guideline_history }}

## Annotators and quality

{{ totals }}

{{ annotators }}

- Agreement: percent and Krippendorff's alpha (nominal) on the {{ overlap_pairs }} pairs labelled by more than one
  annotator: {{ agreement }}, alpha {{ alpha }} (1 = perfect, 0 = what chance gives). Alpha allows a different set of
  annotators on each pair.
- Position bias: share of decided votes that picked the left answer: {{ left_share }} (50% = none).

## Generation

{{ generation }}
{% if excluded %}
## Excluded annotators

The owner excluded these annotators; none of their votes are in this dataset (they are kept in the project's store):

{{ excluded }}
{% endif %}
"""
"""The dataset card's layout (a Jinja template, rendered by huggingface_hub's `DatasetCard.from_template`); every
value put in it is made safe Markdown first (`rlhf.cards`)."""


def dataset_card(summary: dict) -> DatasetCard:
    """README.md of the export: YAML metadata the Hub and `load_dataset` read (built and checked by huggingface_hub's
    `DatasetCardData`), then the work in words and tables, with the annotators an owner excluded (by whom, when, why)
    when there are any."""
    from huggingface_hub import DatasetCard, DatasetCardData

    stats = summary["stats"]
    splits = [split for split, n in summary["rows"].items() if n]
    data = DatasetCardData(
        configs=[{"config_name": "default",
                  "data_files": [{"split": s, "path": f"data/{s}.parquet"} for s in splits]}],
        tags=["rlhf", "preference", "trl", "rlhf-space"], task_categories=["text-generation"],
    )
    guidelines = summary["guidelines"]
    history = cards.table(["version", "created", "author", "votes under it"], [
        [g["version"], cards.text(g["created_at"]), cards.text(g["author"] or ""),
         summary["votes_by_guidelines"].get(str(g["version"]), 0)] for g in guidelines])
    annotators = cards.table(
        ["annotator", "kind", "votes", "skips", "median s", "agreement", "alpha", "gold accuracy", "left chosen"],
        [[cards.text(a["annotator"]), cards.text(a["kind"]), a["votes"], a["skips"], number(a["median_seconds"]),
          percent(a["agreement"]), number(a["alpha"]), percent(a["gold_accuracy"]), percent(a["left_share"])]
         for a in stats["annotators"]])
    totals = (f"{stats['pairs']} pairs, {stats['pairs_labelled']} labelled, {stats['votes']} votes, {stats['skips']} "
              "skips; labels: " + ", ".join(f"{cards.text(k)} {v}" for k, v in stats["labels"].items()) + ".")

    def param(run: dict, name: str) -> str:
        return cards.code(run["params"][name], table=True) if name in run["params"] else "-"

    generation = cards.table(
        ["run", "model", "checkpoint", "temperature", "top-p", "max new tokens", "seed", "status"],
        [[r["id"], cards.code(r["model_spec"], table=True),
          cards.code(r["checkpoint_id"], table=True) if r["checkpoint_id"] else "-",
          param(r, "temperature"), param(r, "top_p"), param(r, "max_new_tokens"), param(r, "seed"),
          cards.text(r["status"])] for r in summary["generation_runs"]])
    exclusions = summary.get("excluded_annotators") or []
    excluded_names = ", ".join(cards.code(e["annotator"]) for e in exclusions)
    excluded = "\n".join(
        f"- {cards.code(e['annotator'])}: excluded by {cards.code(e['excluded_by'] or 'an owner')} on "
        f"{cards.text(e['excluded_at'][:10])}" + (f", reason: {cards.code(e['reason'])}" if e["reason"] else "")
        for e in exclusions)
    return DatasetCard.from_template(
        data, template_str=DATASET_CARD, project=cards.text(summary["project"]), space_url=cards.SPACE_URL,
        exported_on=cards.text(summary["exported_at"][:10]), splits=", ".join(splits), rows=summary["rows"],
        guidelines_version=guidelines[-1]["version"] if guidelines else "-",
        guidelines=cards.fenced(guidelines[-1]["text"] if guidelines else "", "markdown"),
        guideline_history=history, totals=totals, annotators=annotators, overlap_pairs=stats["overlap_pairs"],
        agreement=percent(stats["agreement"]), alpha=number(stats["alpha"]), left_share=percent(stats["left_share"]),
        excluded=excluded, excluded_names=excluded_names, generation=generation,
    )


# import -----------------------------------------------------------------------------------------------------------
HH_HUMAN, HH_ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


@dataclass
class ImportedPair:
    prompt: list[dict]
    chosen: str
    rejected: str
    choice: str
    """`a` (chosen is better), `tie` or `both_bad` (from an export's ties and both_bad splits)."""
    annotator: str | None
    annotator_kind: str | None
    guidelines_version: int | None
    seconds_spent: float | None
    comment: str | None


def _fail(split: str, index: int, field: str, problem: str):
    raise RLHFError(f"import: split {split!r}, row {index}: field {field!r} {problem}; nothing was imported.")


def _messages(value, split, index, field) -> list[dict]:
    if not isinstance(value, list) or not value:
        _fail(split, index, field, "is not a non-empty list of messages")
    for message in value:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) or "role" not in message:
            _fail(split, index, field, "holds a message without `role` and text `content`")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _assistant_text(messages: list[dict], split, index, field) -> str:
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        _fail(split, index, field, "does not end with a non-empty assistant message")
    return messages[-1]["content"]


def parse_hh_transcript(text: str) -> tuple[list[dict], str]:
    """An hh-rlhf transcript ("\\n\\nHuman: q\\n\\nAssistant: a...") -> (messages before the last answer, answer)."""
    turns = []
    rest = text
    while rest:
        human, assistant = rest.find(HH_HUMAN), rest.find(HH_ASSISTANT)
        starts = [(i, role) for i, role in ((human, "user"), (assistant, "assistant")) if i >= 0]
        if not starts:
            break
        start, role = min(starts)
        marker = HH_HUMAN if role == "user" else HH_ASSISTANT
        body = rest[start + len(marker):]
        next_starts = [i for i in (body.find(HH_HUMAN), body.find(HH_ASSISTANT)) if i >= 0]
        end = min(next_starts) if next_starts else len(body)
        turns.append({"role": role, "content": body[:end].strip()})
        rest = body[end:]
    if not turns or turns[-1]["role"] != "assistant" or len(turns) < 2:
        raise ValueError("not an hh-rlhf transcript ending with an Assistant turn")
    return turns[:-1], turns[-1]["content"]


def parse_row(row: dict, split: str, index: int) -> ImportedPair:
    """One dataset row in any supported format -> an ImportedPair; a malformed row raises, naming the field."""
    for field in ("chosen", "rejected"):
        if row.get(field) is None:
            _fail(split, index, field, "is missing")
    chosen, rejected = row["chosen"], row["rejected"]
    prompt = row.get("prompt")
    if prompt is not None:
        if isinstance(prompt, str):
            if not prompt.strip():
                _fail(split, index, "prompt", "is empty")
            prompt_msgs = [{"role": "user", "content": prompt}]
        else:
            prompt_msgs = _messages(prompt, split, index, "prompt")
        texts = []
        for field, value in (("chosen", chosen), ("rejected", rejected)):
            if isinstance(value, str):
                if not value.strip():
                    _fail(split, index, field, "is empty")
                texts.append(value)
            else:
                texts.append(_assistant_text(_messages(value, split, index, field), split, index, field))
    elif isinstance(chosen, list) and isinstance(rejected, list):  # implicit prompt: the shared conversation start
        chosen_msgs = _messages(chosen, split, index, "chosen")
        rejected_msgs = _messages(rejected, split, index, "rejected")
        if chosen_msgs[:-1] != rejected_msgs[:-1] or len(chosen_msgs) < 2:
            _fail(split, index, "chosen", "and `rejected` do not share the conversation before their last answer")
        prompt_msgs = chosen_msgs[:-1]
        texts = [_assistant_text(chosen_msgs, split, index, "chosen"),
                 _assistant_text(rejected_msgs, split, index, "rejected")]
    elif isinstance(chosen, str) and isinstance(rejected, str):  # hh-rlhf transcripts
        try:
            prompt_msgs, chosen_text = parse_hh_transcript(chosen)
            rejected_prompt, rejected_text = parse_hh_transcript(rejected)
        except ValueError:
            _fail(split, index, "chosen", "is plain text without a `prompt` column and not an hh-rlhf transcript")
        if rejected_prompt != prompt_msgs:
            _fail(split, index, "rejected", "continues a different conversation than `chosen`")
        texts = [chosen_text, rejected_text]
    else:
        _fail(split, index, "chosen", "has an unsupported type (expected text or a list of messages)")
    choice = {"ties": "tie", "both_bad": "both_bad"}.get(split, "a")
    version = row.get("guidelines_version")
    seconds = row.get("seconds_spent")
    return ImportedPair(
        prompt=prompt_msgs, chosen=texts[0], rejected=texts[1], choice=choice,
        annotator=row.get("annotator") if isinstance(row.get("annotator"), str) else None,
        annotator_kind=row.get("annotator_kind") if row.get("annotator_kind") in ("human", "judge") else None,
        guidelines_version=int(version) if isinstance(version, (int, float)) else None,
        seconds_spent=float(seconds) if isinstance(seconds, (int, float)) else None,
        comment=row.get("comment") if isinstance(row.get("comment"), str) else None,
    )


def load_rows(source: str) -> dict[str, list[dict]]:
    """Rows per split from a local folder or file (parquet, json, jsonl, csv), or a Hub dataset id."""
    from datasets import load_dataset

    path = Path(source)
    # datasets caches a local folder under its name and file layout, not its content: a re-export to another
    # folder of the same name would load stale rows. Local sources get a throw-away cache.
    with tempfile.TemporaryDirectory(prefix="rlhf-import-") as fresh_cache:
        try:
            if path.is_file():
                kind = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}.get(path.suffix)
                if kind is None:
                    raise RLHFError(f"import: {source!r} is not a .parquet, .json, .jsonl or .csv file.")
                dataset = load_dataset(kind, data_files={"train": str(path)}, cache_dir=fresh_cache)
            elif path.is_dir():
                dataset = load_dataset(str(path), cache_dir=fresh_cache)
            else:
                dataset = load_dataset(source)
        except RLHFError:
            raise
        except Exception as error:  # datasets raises many kinds; all mean "could not read it"
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise RLHFError(f"import: could not read {source!r}: {first_line}") from error
        return {split: list(dataset[split]) for split in dataset}


@dataclass
class ImportResult:
    rows: int
    votes_added: int
    pairs: int


def import_preferences(store: Store, source: str, annotator: str | None = None, gold: bool = False) -> ImportResult:
    """Import a preference dataset into the project: prompts, both answers, a pair and a vote per row.

    The vote's annotator is the row's `annotator` column when present (our own exports), else `annotator`, else
    `import:<source>`. With `gold`, pairs become gold pairs (their answer is known) for measuring annotators.
    Importing the same rows twice adds nothing.
    """
    splits = load_rows(source)
    parsed = []
    for split, rows in splits.items():
        if split not in SPLITS:
            continue
        parsed += [parse_row(row, split, index) for index, row in enumerate(rows)]
    if not parsed:
        raise RLHFError(f"import: {source!r} has no rows in a train, ties or both_bad split (its splits: "
                        f"{', '.join(splits) or 'none'}); name the split of decided pairs `train`.")
    default_annotator = annotator or f"import:{Path(source).name or source}"
    added = 0
    pair_ids = set()
    with store.transaction():  # all rows or none
        run_id = store.start_generation_run(f"import:{source}", None, {"source": source})
        for item in parsed:
            text = _prompt_text(item.prompt)
            prompt_id = store.add_prompt(text, f"import:{source}",
                                         item.prompt if len(item.prompt) > 1 or item.prompt[0]["role"] != "user"
                                         else None)
            chosen_id = _completion_id(store, prompt_id, run_id, item.chosen, 0)
            rejected_id = _completion_id(store, prompt_id, run_id, item.rejected, 1)
            if chosen_id == rejected_id:
                continue  # identical answers carry no preference
            gold_choice = None
            if gold:
                gold_choice = item.choice if item.choice != "a" else ("a" if chosen_id < rejected_id else "b")
            pair_id = store.add_pair(chosen_id, rejected_id, f"import:{source}", gold_choice)
            pair_ids.add(pair_id)
            if gold:
                continue  # a gold pair's answer is the key, not a vote
            choice = item.choice if item.choice != "a" else ("a" if chosen_id < rejected_id else "b")
            _, created = store.add_vote(
                pair_id, item.annotator or default_annotator, choice, source=f"import:{source}",
                kind=(item.annotator_kind or "human") if item.annotator else "import", seconds_spent=item.seconds_spent,
                comment=item.comment, guidelines_version=item.guidelines_version,
            )
            added += created
        store.finish_generation_run(run_id, "done")
    return ImportResult(len(parsed), added, len(pair_ids))


def _prompt_text(messages: list[dict]) -> str:
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _completion_id(store: Store, prompt_id: int, run_id: int, text: str, index: int) -> int:
    """The prompt's answer with this text: one already stored (from any run), else a new one of the import's run."""
    found = store.find_completion(prompt_id, text)
    if found is not None:
        return found
    return store.add_completion(prompt_id, run_id, index, text, len(text.split()), "import")


def default_export_dir(store: Store) -> Path:
    """A new folder name under <project>/exports/ for each export: the time to the microsecond plus a random tag, so
    two exports in the same second (two owners, a training run and a download) never share a folder."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return store.folder / "exports" / f"{stamp}-{secrets.token_hex(3)}"


KEEP_EXPORTS = 5
"""Export folders kept per project (the newest), besides those a checkpoint names as its training data."""
KEEP_ARCHIVES = 3
"""Download archives kept per project (the newest)."""


@functools.cache
def downloads_dir() -> Path:
    """Where export archives are written for the browser to download: a folder of this process under the system's
    temp directory, which Gradio serves from (the data directory may be `/data`, which it does not)."""
    return Path(tempfile.mkdtemp(prefix="rlhf-downloads-"))


def export_archive(store: Store) -> tuple[ExportResult, Path]:
    """Export the project to a new folder, zip it for download, and prune older exports and archives."""
    result = export_preferences(store, default_export_dir(store))
    folder = downloads_dir() / store.name
    folder.mkdir(parents=True, exist_ok=True)
    archive = Path(shutil.make_archive(str(folder / f"{store.name}-{result.folder.name}"), "zip", result.folder))
    for old in sorted(folder.glob("*.zip"), key=lambda p: p.stat().st_mtime)[:-KEEP_ARCHIVES]:
        old.unlink(missing_ok=True)
    prune_exports(store, keep=result.folder)
    return result, archive


def prune_exports(store: Store, keep: Path | None = None) -> list[Path]:
    """Remove all but the newest `KEEP_EXPORTS` export folders of the project (and `keep`), never one a checkpoint
    was trained on; returns what was removed. An export is derived data: the store can write it again."""
    from rlhf.checkpoints import list_checkpoints

    root = store.folder / "exports"
    if not root.is_dir():
        return []
    used = {Path(m["dataset"]["export_dir"]).resolve() for m in list_checkpoints(store)
            if isinstance(m.get("dataset"), dict) and m["dataset"].get("export_dir")}
    folders = sorted((p for p in root.iterdir() if p.is_dir() and (p / "rlhf_export.json").is_file()),
                     key=lambda p: p.stat().st_mtime)
    removed = []
    for folder in folders[:-KEEP_EXPORTS]:
        if folder.resolve() not in used and (keep is None or folder.resolve() != keep.resolve()):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@dataclass
class TrainingData:
    dataset: "object"
    """datasets.Dataset of the decided pairs (the export's train split), in memory."""
    fingerprint: str
    """sha256 prefix of the exported decided pairs' parquet: which exact data a checkpoint was trained on."""
    export_dir: Path
    ties: list[dict]
    """The tie votes (the export's ties split, rows as the decided pairs' with both answers in stored order)."""
    with_ties_fingerprint: str
    """The fingerprint of the decided pairs and the ties together (`fingerprint` when there are no ties): what a
    reward model that learns from ties was trained on."""


def training_pairs(store: Store, min_pairs: int = 8) -> TrainingData:
    """Export the project and return its decided pairs (and its ties, which a reward model may learn from) for a
    trainer; refuses when there are too few decided pairs."""
    import pyarrow.parquet as pq
    from datasets import Dataset

    from rlhf.checkpoints import fingerprint_files

    decided = sum(1 for v in store.votes() if v["choice"] in ("a", "b"))
    if decided < min_pairs:
        raise RLHFError(
            f"training: project {store.name!r} has {decided} decided preference pairs; at least {min_pairs} are "
            f"needed. Label {min_pairs - decided} more (Prefer tab, or `python -m rlhf annotate`)."
        )
    result = export_preferences(store, default_export_dir(store))
    train_file = result.folder / "data" / "train.parquet"
    # In memory, not through load_dataset's cache (which keys local folders by name, not content).
    dataset = Dataset(pq.read_table(train_file))
    ties_file = result.folder / "data" / "ties.parquet"
    ties = pq.read_table(ties_file).to_pylist() if ties_file.is_file() else []
    fingerprint = fingerprint_files([train_file])
    return TrainingData(dataset, fingerprint, result.folder, ties,
                        fingerprint_files([train_file, ties_file]) if ties else fingerprint)
