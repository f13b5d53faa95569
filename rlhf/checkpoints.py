"""Checkpoints of a project: reward models and policies (PPO, DPO), all in one layout so every stage reads them alike.

    <project>/checkpoints/<id>/           id = <kind>-<UTC timestamp>, kind in reward, ppo, dpo
        meta.json       kind, base model spec, config, metrics, dataset fingerprint, lineage (parent, reward model)
        adapter/        PEFT LoRA adapter (adapter_config.json, adapter_model.safetensors) when trained with LoRA
        model/          the full weights instead, when trained without LoRA
        metrics.jsonl   one JSON object per logged step (namespaced keys), for curves
        evaluation.json a policy's before/after report;  trainer_state.pt  what a PPO run resumes from

A checkpoint folder is a model spec: `rlhf.models.load_model` loads the base model and applies the adapter.
A folder is written under a temporary name and renamed when complete: a crash never leaves a half checkpoint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

from rlhf.config import TRAIN_COMMANDS, RLHFError, cli
from rlhf.store import Store, now

KINDS = ("reward", "ppo", "dpo")
POLICY_KINDS = ("ppo", "dpo")
META_FILE = "meta.json"
METRICS_FILE = "metrics.jsonl"
"""One JSON object per logged step, namespaced keys (`objective/kl`, ...): a run's curves."""
EVALUATION_FILE = "evaluation.json"
"""A policy's before/after report (`rlhf.evaluate`), written by `rlhf.pipeline.evaluate`."""
TRAINER_STATE_FILE = "trainer_state.pt"
"""What a PPO run resumes from (optimizer, scheduler, KL controller, RNG, selection); never pushed."""


def checkpoints_dir(store: Store) -> Path:
    return store.folder / "checkpoints"


def new_checkpoint_id(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    return f"{kind}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d-%H%M%S-%f')}"


def staging_dir(store: Store, checkpoint_id: str) -> Path:
    """Where a checkpoint is written before `publish` renames it into place."""
    path = checkpoints_dir(store) / f".{checkpoint_id}.partial"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def publish(staged: Path, meta: dict) -> Path:
    """Write meta.json and move the staged folder to its final name (atomic on one filesystem).

    A policy checkpoint records its round: one more than the policy it started from (round 0 = a base model).
    `meta` is completed in place (created_at, round), so the caller returns what was written.
    """
    meta.setdefault("created_at", now())
    if meta.get("kind") in POLICY_KINDS and "round" not in meta:
        start = meta.get("policy_start")
        parent_round = read_meta(start).get("round", 0) if start and is_checkpoint(start) else 0
        meta["round"] = parent_round + 1
    (staged / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    final = staged.with_name(meta["id"])
    if final.exists():
        shutil.rmtree(final)
    staged.rename(final)
    return final


def update_meta(path: str | Path, changes: dict) -> dict:
    """Merge `changes` into a published checkpoint's meta.json (written whole to a temporary file, then renamed, so a
    reader never sees half of it); returns the new meta."""
    meta = {**read_meta(path), **changes}
    tmp = Path(path) / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.replace(Path(path) / META_FILE)
    return meta


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file()


def read_meta(path: str | Path) -> dict:
    return json.loads((Path(path) / META_FILE).read_text())


def list_checkpoints(store: Store, kinds: tuple[str, ...] = KINDS) -> list[dict]:
    """Metadata of the project's checkpoints, oldest first, each with its `path`."""
    root = checkpoints_dir(store)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if not path.name.startswith(".") and is_checkpoint(path):
            meta = read_meta(path)
            if meta.get("kind") in kinds:
                found.append({**meta, "path": str(path)})
    return sorted(found, key=lambda m: m["created_at"] + m["id"])


def find_checkpoint(store: Store, reference: str, kinds: tuple[str, ...] = KINDS) -> dict:
    """A checkpoint by id, by folder path, or `latest` of the given kinds; a clear error when there is none."""
    if reference == "latest":
        found = list_checkpoints(store, kinds)
        if not found:
            raise RLHFError(f"checkpoint: project {store.name!r} has no {' or '.join(kinds)} checkpoint yet; train one "
                            f"with {_train_commands(store, kinds)} (or in the Train tab).")
        return found[-1]
    path = Path(reference)
    if not is_checkpoint(path):
        path = checkpoints_dir(store) / reference
    if not is_checkpoint(path):
        known = ", ".join(m["id"] for m in list_checkpoints(store, kinds))
        fix = (f"use one of its ids ({known}), `latest`, or a checkpoint folder" if known else
               f"it has no {' or '.join(kinds)} checkpoint yet: train one with {_train_commands(store, kinds)}")
        raise RLHFError(f"checkpoint: {reference!r} is not a checkpoint of {store.name!r}; {fix}.")
    return {**read_meta(path), "path": str(path)}


def _train_commands(store: Store, kinds: tuple[str, ...]) -> str:
    return " or ".join(cli(TRAIN_COMMANDS[kind], "--project", store.name) for kind in kinds if kind in TRAIN_COMMANDS)


def fingerprint_files(paths: list[Path]) -> str:
    """sha256 over the files' bytes, in order: which exact data a checkpoint was trained on."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def trained_from(store: Store, meta: dict) -> list[str]:
    """Ids of the policies (in any project under the same data directory) that started from this checkpoint: they load
    its weights under their own adapter, so they stop loading when it goes."""
    target = Path(meta["path"]).resolve()
    children = []
    for folder in sorted(store.folder.parent.iterdir()):
        if not (folder / "checkpoints").is_dir():
            continue
        for other in list_checkpoints(Store(folder), POLICY_KINDS):
            start = other.get("policy_start")
            same_project = folder.resolve() == store.folder.resolve()
            if other["id"] != meta["id"] and ((same_project and other.get("parent") == meta["id"])
                                             or (start and Path(start).resolve() == target)):
                children.append(other["id"] if same_project else f"{folder.name}/{other['id']}")
    return children


def delete_checkpoint(store: Store, reference: str) -> None:
    """Remove a checkpoint folder of this project and its run log. Refuses `latest` (name the run), anything outside
    the project's checkpoints folder, and a policy that later policies were trained from. (A run going in the project
    is the caller's to check: `rlhf.jobs.delete_run`.)"""
    if reference == "latest":
        raise RLHFError("delete: name the run to delete by its id, not `latest`.")
    root = checkpoints_dir(store).resolve()
    path = (root / reference).resolve()
    if path.parent != root or not is_checkpoint(path):  # an id only: a path, `..` or another project's run is refused
        known = ", ".join(m["id"] for m in list_checkpoints(store)) or "none"
        raise RLHFError(f"delete: {reference!r} is not a run of project {store.name!r}; give one of its run ids "
                        f"(known: {known}).")
    meta = {**read_meta(path), "path": str(path)}
    children = trained_from(store, meta)
    if children:
        raise RLHFError(f"delete: {meta['id']} is where {', '.join(children)} started from (their adapters load on top "
                        "of it); delete those first, newest first, or keep it.")
    shutil.rmtree(path)
    log = store.folder / "runs" / f"{meta['id']}.jsonl"
    if log.exists():
        log.unlink()
