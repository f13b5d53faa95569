"""Checkpoints of a project: reward models and policies (PPO, DPO), all in one layout so every stage reads them alike.

A checkpoint's meta.json is a `CheckpointRecord`: the fields every kind has (id, kind, base model, config, metrics,
dataset, created_at), a policy's lineage (parent, policy_start, round; a PPO policy's reward), and the kind's own
`extras`, written flat beside them (reward: normalisation, heads, labelled_answers, audit; DPO: device, precision;
PPO: steps_done, kl_guard, run_drift, selected_step, ...), so readers index `meta["..."]` whatever the kind. Trainers
write checkpoints only through `staged_checkpoint`, which stages, logs the run's metrics, cleans up and publishes.

    <project>/checkpoints/<id>/           id = <kind>-<UTC timestamp>, kind in reward, ppo, dpo
        meta.json       kind, base model spec, config, metrics, dataset fingerprint, lineage (parent, reward model)
        adapter/        PEFT LoRA adapter (adapter_config.json, adapter_model.safetensors) when trained with LoRA
        model/          the full weights instead, when trained without LoRA
        metrics.jsonl   one JSON object per logged step (namespaced keys), for curves
        evaluation.json a policy's before/after report;  trainer_state.pt  what a PPO run resumes from
    <project>/runs/<id>.jsonl             the run's metrics as they are logged (metrics.jsonl is a copy at publish)
    <project>/runs/tensorboard/<id>/      the same numbers as TensorBoard scalars, with `report_to="tensorboard"`

A checkpoint folder is a model spec: `rlhf.models.load_model` loads the base model and applies the adapter.
A folder is written under a temporary name and renamed when complete: a crash never leaves a half checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from rlhf.config import TRAIN_COMMANDS, RLHFError, cli
from rlhf.store import Store, now

if TYPE_CHECKING:
    from rlhf.monitor import RunLog

KINDS = ("reward", "ppo", "dpo")
POLICY_KINDS = ("ppo", "dpo")
META_FILE = "meta.json"
METRICS_FILE = "metrics.jsonl"
"""One JSON object per logged step, namespaced keys (`objective/kl`, ...): a run's curves."""
EVALUATION_FILE = "evaluation.json"
"""A policy's before/after report (`rlhf.evaluate`), written by `rlhf.pipeline.evaluate`."""
TRAINER_STATE_FILE = "trainer_state.pt"
"""What a PPO run resumes from (optimizer, scheduler, KL controller, RNG, selection); never pushed."""
RUNS_DIR = "runs"
"""Under a project: each run's live metrics (<id>.jsonl) and their TensorBoard mirror (tensorboard/<id>/)."""


@dataclass
class CheckpointRecord:
    """What meta.json says about a checkpoint. `to_meta()` gives the flat JSON object written to disk (the extras
    beside the fields); `from_meta()` reads one back, any kind, keys it does not know landing in `extras`."""

    id: str
    kind: str
    """reward, ppo or dpo."""
    base_model: str
    """The model spec under the weights (a policy started from a checkpoint names that checkpoint's base)."""
    config: dict
    """The training config that made it (`dataclasses.asdict` of RewardTrainConfig, PPOConfig or DPOTrainConfig)."""
    metrics: dict
    """The run's summary figures (the curves are in metrics.jsonl)."""
    dataset: dict | None
    """The data behind it: export fingerprint, folder, rows (a PPO policy: its reward model's; None for none)."""
    created_at: str | None = None
    """Set when first published."""
    parent: str | None = None
    """Policies: the id of the policy checkpoint this one continued from, None when it started from a base model."""
    policy_start: str | None = None
    """Policies: the model spec it started from (a base model spec or a policy checkpoint folder)."""
    round: int | None = None
    """Policies: one more than the round of the policy it started from (a base model is round 0); set at publish."""
    reward: str | None = None
    """PPO: what it optimised, a reward checkpoint id or `function:path.py:name`."""
    extras: dict = field(default_factory=dict)
    """The kind's own keys, written flat beside the fields above (never one of their names)."""

    LINEAGE = ("parent", "policy_start", "round")

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown checkpoint kind {self.kind!r}")
        if self.kind not in POLICY_KINDS and any(getattr(self, name) is not None for name in self.LINEAGE):
            raise ValueError(f"a {self.kind} checkpoint has no policy lineage ({', '.join(self.LINEAGE)})")
        clash = set(self.extras) & {f.name for f in dataclasses.fields(self)}
        if clash:
            raise ValueError(f"extras would overwrite the record's own fields: {sorted(clash)}")

    def to_meta(self) -> dict:
        """The flat meta.json object. Lineage is written for policies only, `reward` where there is one: the same
        keys each kind always had."""
        meta = {"id": self.id, "kind": self.kind, "base_model": self.base_model}
        if self.kind in POLICY_KINDS:
            meta.update({name: getattr(self, name) for name in self.LINEAGE})
        if self.reward is not None:
            meta["reward"] = self.reward
        meta.update(config=self.config, metrics=self.metrics, dataset=self.dataset, created_at=self.created_at)
        return {**meta, **self.extras}

    @classmethod
    def from_meta(cls, meta: dict) -> "CheckpointRecord":
        """A record from a meta.json object (or a `read_meta`/`find_checkpoint` dict: its `path` is where the record
        lives, not part of it)."""
        missing = [name for name in ("id", "kind") if name not in meta]
        if missing:
            raise RLHFError(f"checkpoint: its meta.json has no {' or '.join(missing)}; it was not written by a "
                            "trainer of this app. Move the folder out of the project's checkpoints folder.")
        # A meta written before a field existed (e.g. a policy's round) reads with that field None.
        names = {f.name for f in dataclasses.fields(cls)} - {"extras"}
        known = {name: meta[name] for name in names if name in meta}
        known = {"base_model": None, "config": {}, "metrics": {}, "dataset": None, **known}
        return cls(**known, extras={k: v for k, v in meta.items() if k not in names and k != "path"})


def checkpoints_dir(store: Store) -> Path:
    return store.folder / "checkpoints"


def new_checkpoint_id(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    return f"{kind}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d-%H%M%S-%f')}"


def staging_dir(store: Store, checkpoint_id: str) -> Path:
    """Where a checkpoint is written before it is published (renamed into place)."""
    path = checkpoints_dir(store) / f".{checkpoint_id}.partial"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def run_log_path(store: Store, checkpoint_id: str) -> Path:
    """A run's live metrics: one JSON object per step, appended as it goes (the UI's curves, `tail -f`)."""
    return store.folder / RUNS_DIR / f"{checkpoint_id}.jsonl"


def tensorboard_dir(store: Store, checkpoint_id: str) -> Path:
    """Where a run with `report_to="tensorboard"` writes its scalars: `tensorboard --logdir <project>/runs/tensorboard`
    shows every such run of the project side by side."""
    return store.folder / RUNS_DIR / "tensorboard" / checkpoint_id


def open_run_log(store: Store, checkpoint_id: str, report_to: str = "none",
                 resume_from: str | Path | None = None) -> "RunLog":
    """The run's `RunLog` at `run_log_path`, mirrored to `tensorboard_dir` when `report_to` is tensorboard. A run
    resumed from a checkpoint folder (`resume_from`) starts from that checkpoint's metrics.jsonl."""
    from rlhf.monitor import RunLog  # monitor imports transformers: loaded when a run starts, not with this module

    start = (Path(resume_from) / METRICS_FILE).read_text() if resume_from else ""
    mirror = tensorboard_dir(store, checkpoint_id) if report_to == "tensorboard" else None
    return RunLog(run_log_path(store, checkpoint_id), start=start, tensorboard_dir=mirror)


@dataclass
class StagedCheckpoint:
    """A checkpoint being written: put the weights and files in `folder`, then `publish(record)`."""

    store: Store
    id: str
    kind: str
    folder: Path
    """The staging folder (a dot name: `list_checkpoints` never sees it)."""
    log: "RunLog | None"
    """The run's metrics; copied into the checkpoint as metrics.jsonl at publish (None on a process that only
    trains alongside rank 0)."""
    published: Path | None = None
    rank: int = 0
    """Data parallel: the process's rank. Only rank 0 writes the log and publishes; the others stage into a folder
    of their own that is thrown away, and `publish` only tells them where rank 0's checkpoint is."""

    def publish(self, record: CheckpointRecord) -> dict:
        """Write metrics.jsonl and meta.json and move the folder to its final name (atomic on one filesystem);
        returns the meta written, with `path`. A policy's round is one more than the policy it started from's.

        Publishing an id again (PPO, every `save_every` steps) replaces the earlier folder; it is moved aside
        before the new one takes its name and removed after, so a crash in between loses neither."""
        if (record.id, record.kind) != (self.id, self.kind):
            raise ValueError(f"record {record.kind} {record.id} does not belong to staged {self.kind} {self.id}")
        if self.published is not None:
            raise ValueError(f"{self.id}: this staging folder is already published; stage the next save anew")
        if self.rank != 0:
            return {"id": self.id, "kind": self.kind, "rank": self.rank,
                    "path": str(checkpoints_dir(self.store) / self.id)}
        record.created_at = record.created_at or now()
        if record.kind in POLICY_KINDS and record.round is None:
            start = record.policy_start
            parent_round = read_meta(start).get("round", 0) if start and is_checkpoint(start) else 0
            record.round = parent_round + 1
        meta = record.to_meta()
        shutil.copyfile(self.log.path, self.folder / METRICS_FILE)
        (self.folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        final = checkpoints_dir(self.store) / self.id
        retired = final.with_name(f".{self.id}.previous")
        if final.exists():
            shutil.rmtree(retired, ignore_errors=True)
            final.rename(retired)
        try:
            self.folder.rename(final)
        except BaseException:
            if retired.exists() and not final.exists():
                retired.rename(final)  # the earlier save stays published
            raise
        shutil.rmtree(retired, ignore_errors=True)
        self.published = final
        return {**meta, "path": str(final)}


@contextlib.contextmanager
def staged_checkpoint(store: Store, kind: str, checkpoint_id: str | None = None, report_to: str = "none",
                      log: "RunLog | None" = None, every_process: bool = False) -> Iterator[StagedCheckpoint]:
    """Stage a checkpoint of `kind` (a new id unless `checkpoint_id` is given); the block writes into
    `staged.folder` and calls `staged.publish(record)`.

    Any exception (Ctrl-C included) removes the staging folder, and leaving the block without publishing does too:
    a half-written checkpoint never stays. Without `log`, the run's log is opened here (`open_run_log`, with
    `report_to`) and closed at the end; a run that publishes nothing leaves neither log nor mirror behind. A run that
    publishes several times (PPO) opens its log once, passes it in, and stages each save in a block of its own.

    `every_process`: the block runs on every process of a data-parallel run (TRL's trainers under `accelerate
    launch`); they agree on rank 0's id, and rank 0 alone writes the log and publishes (`StagedCheckpoint.rank`).
    """
    rank = 0
    if every_process:
        from rlhf.distributed import broadcast_object, distributed

        rank, world = distributed()
        checkpoint_id = broadcast_object(checkpoint_id or new_checkpoint_id(kind), world)
    checkpoint_id = checkpoint_id or new_checkpoint_id(kind)
    if not checkpoint_id.startswith(f"{kind}-"):
        raise ValueError(f"checkpoint id {checkpoint_id!r} is not of kind {kind}")
    if rank != 0:
        folder = staging_dir(store, f"{checkpoint_id}.rank{rank}")
        try:
            yield StagedCheckpoint(store, checkpoint_id, kind, folder, None, rank=rank)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    owns_log = log is None
    staged = StagedCheckpoint(store, checkpoint_id, kind, staging_dir(store, checkpoint_id), log)
    try:
        if owns_log:
            staged.log = open_run_log(store, checkpoint_id, report_to)
        yield staged
    except BaseException:
        if owns_log and staged.log is not None:
            staged.log.close()
            if staged.published is None and not is_checkpoint(checkpoints_dir(store) / checkpoint_id):
                run_log_path(store, checkpoint_id).unlink(missing_ok=True)
                shutil.rmtree(tensorboard_dir(store, checkpoint_id), ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staged.folder, ignore_errors=True)  # gone already when published
    if owns_log:
        staged.log.close()


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
    """Remove a checkpoint folder of this project, its run log and its TensorBoard scalars. Refuses `latest` (name
    the run), anything outside the project's checkpoints folder, and a policy that later policies were trained from.
    (A run going in the project is the caller's to check: `rlhf.jobs.delete_run`.)"""
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
    run_log_path(store, meta["id"]).unlink(missing_ok=True)
    shutil.rmtree(tensorboard_dir(store, meta["id"]), ignore_errors=True)
