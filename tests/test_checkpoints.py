"""Checkpoint records and the one staging/publishing helper, the run log and its TensorBoard mirror.

First the record and the helper on their own (no model), then real runs on the tiny model: reward, DPO and PPO write
meta.json with the keys each kind always had, every one of them reads back as a `CheckpointRecord` and writes out
the same; a run with `report_to="tensorboard"` leaves event files whose scalars equal its metrics.jsonl step by step,
also for a PPO run that crashed between checkpoints and was resumed with the mirror on.
"""

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from rlhf.checkpoints import (
    CheckpointRecord, checkpoints_dir, delete_checkpoint, find_checkpoint, open_run_log, read_meta, run_log_path,
    staged_checkpoint, tensorboard_dir, update_meta,
)
from rlhf.config import ConfigError, DPOTrainConfig, PPOConfig, RewardTrainConfig, RLHFError, from_arguments

# The keys each kind's meta.json had before the record existed (readers index them; checkpoints on users' disks have
# them), and those added since (DPO's KL-budget checks and selection, which readers take with .get): a record must
# write exactly these.
META_KEYS = {
    "reward": {"id", "kind", "base_model", "config", "metrics", "dataset", "created_at", "normalisation", "heads",
               "labelled_answers", "audit"},
    "dpo": {"id", "kind", "algorithm", "base_model", "parent", "policy_start", "round", "config", "metrics", "device",
            "precision", "dataset", "created_at", "selected_step", "selected_scale", "selected_by", "selection_rule",
            "kl_budget_stop", "checks"},
    "ppo": {"id", "kind", "algorithm", "base_model", "policy_start", "parent", "round", "reward", "dataset", "config",
            "steps_done", "metrics", "num_prompts", "kl_guard", "run_drift", "selected_step", "selected_by",
            "selection_rule", "reward_trend", "processes", "created_at"},
}


def record(checkpoint_id: str, kind: str = "reward", **fields) -> CheckpointRecord:
    return CheckpointRecord(id=checkpoint_id, kind=kind, base_model="base", config={"lr": 1.0}, metrics={"loss": 0.5},
                            dataset=None, **fields)


def dot_entries(store) -> list[str]:
    return sorted(p.name for p in checkpoints_dir(store).iterdir() if p.name.startswith("."))


# the record --------------------------------------------------------------------------------------------------------
def test_a_record_writes_flat_meta_with_lineage_for_policies_only():
    reward = record("reward-1", extras={"heads": 2})
    assert reward.to_meta() == {"id": "reward-1", "kind": "reward", "base_model": "base", "config": {"lr": 1.0},
                                "metrics": {"loss": 0.5}, "dataset": None, "created_at": None, "heads": 2}
    policy = record("dpo-1", kind="dpo", policy_start="base", extras={"algorithm": "dpo"})
    assert {"parent", "policy_start", "round", "algorithm"} <= set(policy.to_meta())
    assert "reward" not in policy.to_meta()  # only PPO names a reward
    assert record("ppo-1", kind="ppo", reward="function:f").to_meta()["reward"] == "function:f"


def test_a_record_refuses_what_cannot_be_written_back():
    with pytest.raises(ValueError, match="unknown checkpoint kind"):
        record("sft-1", kind="sft")
    with pytest.raises(ValueError, match="no policy lineage"):
        record("reward-1", parent="ppo-0")
    with pytest.raises(ValueError, match=r"overwrite the record's own fields: \['metrics'\]"):
        record("reward-1", extras={"metrics": {}})
    with pytest.raises(RLHFError, match="meta.json has no kind"):
        CheckpointRecord.from_meta({"id": "x"})


def test_from_meta_keeps_unknown_keys_as_extras_and_drops_the_folder():
    meta = {**record("ppo-1", kind="ppo", reward="function:f", policy_start="base").to_meta(), "verdict": "improved"}
    again = CheckpointRecord.from_meta({**meta, "path": "/somewhere/ppo-1"})
    assert again.extras == {"verdict": "improved"} and again.to_meta() == meta


# the helper --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_a_failed_stage_leaves_nothing_behind(store, failure):
    with pytest.raises(failure):
        with staged_checkpoint(store, "reward") as staged:
            staged.log.append({"step": 1, "reward/loss": 0.5})
            (staged.folder / "adapter").mkdir()
            assert staged.folder.is_dir() and run_log_path(store, staged.id).is_file()
            raise failure
    assert list(checkpoints_dir(store).iterdir()) == []
    assert not run_log_path(store, staged.id).exists()


def test_leaving_the_block_without_publishing_keeps_no_staging_folder(store):
    with staged_checkpoint(store, "dpo") as staged:
        (staged.folder / "model").mkdir()
    assert list(checkpoints_dir(store).iterdir()) == []


def test_publish_writes_meta_and_the_run_log_and_computes_the_round(store):
    with staged_checkpoint(store, "dpo") as first:
        first.log.append({"step": 1, "dpo/loss": 0.7})
        first.log.append({"step": 2, "dpo/loss": float("nan")})
        published = first.publish(record(first.id, kind="dpo", policy_start="base"))
    path = Path(published["path"])
    assert path == checkpoints_dir(store) / first.id and dot_entries(store) == []
    assert read_meta(path) == {k: v for k, v in published.items() if k != "path"}
    assert (published["round"], published["parent"]) == (1, None) and published["created_at"]
    # metrics.jsonl is the run log, byte for byte: one json.dumps(row) per line
    assert (path / "metrics.jsonl").read_text() == '{"step": 1, "dpo/loss": 0.7}\n{"step": 2, "dpo/loss": NaN}\n'
    with staged_checkpoint(store, "dpo") as second:  # continues from the first: one round later
        child = second.publish(record(second.id, kind="dpo", policy_start=str(path), parent=first.id))
    assert child["round"] == 2
    with pytest.raises(ValueError, match="does not belong"):
        with staged_checkpoint(store, "dpo") as third:
            third.publish(record(first.id, kind="dpo"))


def test_publishing_an_id_again_replaces_it_and_a_failed_save_keeps_the_last(store):
    """PPO's way: one log for the run, a staged block per save, the same id every time."""
    log = open_run_log(store, "ppo-run", "none")
    saved = []
    for step in (1, 2):
        log.append({"step": step, "objective/kl": step / 10})
        with staged_checkpoint(store, "ppo", "ppo-run", log=log) as staged:
            (staged.folder / "trainer_state.pt").write_text(f"state at {step}")
            saved.append(staged.publish(record("ppo-run", kind="ppo", policy_start="base", reward="function:f",
                                               extras={"steps_done": step})))
    path = checkpoints_dir(store) / "ppo-run"
    assert [p.name for p in checkpoints_dir(store).iterdir()] == ["ppo-run"]
    assert (path / "trainer_state.pt").read_text() == "state at 2" and read_meta(path)["steps_done"] == 2
    assert len((path / "metrics.jsonl").read_text().splitlines()) == 2
    log.append({"step": 3, "objective/kl": 0.3})
    with pytest.raises(KeyboardInterrupt):
        with staged_checkpoint(store, "ppo", "ppo-run", log=log) as staged:
            (staged.folder / "trainer_state.pt").write_text("half")
            raise KeyboardInterrupt
    assert [p.name for p in checkpoints_dir(store).iterdir()] == ["ppo-run"] and read_meta(path)["steps_done"] == 2
    assert len(run_log_path(store, "ppo-run").read_text().splitlines()) == 3  # the run's log is the run's to keep
    log.close()


def test_a_staged_id_must_be_of_its_kind(store):
    with pytest.raises(ValueError, match="not of kind ppo"):
        with staged_checkpoint(store, "ppo", "dpo-1"):
            pass


# report_to ---------------------------------------------------------------------------------------------------------
def test_report_to_is_a_flag_of_every_trainer():
    from rlhf.__main__ import build_parser

    parser = build_parser()
    for command, cls in (("train-reward", RewardTrainConfig), ("ppo", PPOConfig), ("dpo", DPOTrainConfig)):
        args = parser.parse_args([command, "--project", "p", "--report-to", "tensorboard"])
        assert from_arguments(cls, args).report_to == "tensorboard"
        assert from_arguments(cls, parser.parse_args([command, "--project", "p"])).report_to == "none"
        with pytest.raises(SystemExit):  # argparse: invalid choice 'wandb' (choose from none, tensorboard)
            parser.parse_args([command, "--project", "p", "--report-to", "wandb"])
    with pytest.raises(ConfigError, match="'wandb' is not one of none, tensorboard"):
        PPOConfig(report_to="wandb").validate()


def test_without_the_tensorboard_package_a_run_fails_before_it_starts(store, tiny_model_dir, monkeypatch):
    from test_ppo import PROMPTS, SMALL, length_reward

    from rlhf.ppo import RewardSource, train_ppo

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what `import tensorboard` sees where it is not installed
    for cls in (RewardTrainConfig, PPOConfig, DPOTrainConfig):
        with pytest.raises(RLHFError, match="pip install tensorboard"):
            cls(report_to="tensorboard").validate()
    with pytest.raises(RLHFError, match="pip install tensorboard"):
        train_ppo(store, dataclasses.replace(SMALL, report_to="tensorboard"), str(tiny_model_dir),
                  RewardSource(length_reward, "function:length"), prompts=PROMPTS, device="cpu")
    assert not checkpoints_dir(store).exists() and not (store.folder / "runs").exists()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # even if torch's writer was imported before
    with pytest.raises(RLHFError, match="pip install tensorboard"):
        open_run_log(store, "ppo-x", "tensorboard")
    assert not run_log_path(store, "ppo-x").exists()


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a TensorBoard folder, as TensorBoard itself reads it: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every event
    events.Reload()
    return {tag: [(e.step, comparable(e.value)) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def expected_scalars(jsonl: Path) -> dict[str, list[tuple[int, float]]]:
    """The numbers of each metrics.jsonl row at the row's step, as TensorBoard stores them (float32)."""
    expected: dict[str, list] = {}
    for row in map(json.loads, jsonl.read_text().splitlines()):
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                expected.setdefault(key, []).append((row["step"], comparable(float(np.float32(value)))))
    return expected


def comparable(value: float):
    return "nan" if math.isnan(value) else value


def test_the_run_log_mirror_resumes_without_duplicates(store):
    """Steps logged after the last checkpoint are run again on resume: TensorBoard shows each step once."""
    log = open_run_log(store, "ppo-r", "tensorboard")
    for step in (1, 2, 3):
        log.append({"step": step, "objective/kl": step / 10, "drift/flags": [], "samples": [{"prompt": "p"}]})
    log.close()
    checkpoint = checkpoints_dir(store) / "ppo-r"
    checkpoint.mkdir(parents=True)
    first_two = run_log_path(store, "ppo-r").read_text().splitlines(keepends=True)[:2]
    (checkpoint / "metrics.jsonl").write_text("".join(first_two))  # checkpointed at step 2
    resumed = open_run_log(store, "ppo-r", "tensorboard", resume_from=checkpoint)
    resumed.append({"step": 3, "objective/kl": 0.33})
    resumed.close()
    assert scalars(tensorboard_dir(store, "ppo-r")) == {
        "objective/kl": [(1, np.float32(0.1)), (2, np.float32(0.2)), (3, np.float32(0.33))]}
    assert scalars(tensorboard_dir(store, "ppo-r")) == expected_scalars(run_log_path(store, "ppo-r"))
    assert run_log_path(store, "ppo-r").read_text() == "".join(first_two) + '{"step": 3, "objective/kl": 0.33}\n'


# real runs ---------------------------------------------------------------------------------------------------------
def assert_round_trips(meta: dict) -> None:
    on_disk = read_meta(meta["path"])
    assert set(on_disk) == META_KEYS[on_disk["kind"]]
    assert CheckpointRecord.from_meta(on_disk).to_meta() == on_disk
    assert CheckpointRecord.from_meta(find_checkpoint_dict(meta)).to_meta() == on_disk  # `path` is not written back
    assert all(line == json.dumps(json.loads(line)) for line in
               (Path(meta["path"]) / "metrics.jsonl").read_text().splitlines())  # one json.dumps(row) per line


def find_checkpoint_dict(meta: dict) -> dict:
    return {**read_meta(meta["path"]), "path": meta["path"]}


def test_a_reward_run_mirrors_its_metrics_to_tensorboard_and_its_meta_round_trips(store, tiny_model_dir):
    from test_reward import TOY_CONFIG, opossum_project

    from rlhf.reward import train_reward_model

    opossum_project(store)
    meta = train_reward_model(store, dataclasses.replace(TOY_CONFIG, epochs=1, report_to="tensorboard"),
                              str(tiny_model_dir))
    assert_round_trips(meta)
    metrics_file = Path(meta["path"]) / "metrics.jsonl"
    assert metrics_file.read_text() == run_log_path(store, meta["id"]).read_text()
    got, want = scalars(tensorboard_dir(store, meta["id"])), expected_scalars(metrics_file)
    assert {"reward/loss", "reward/accuracy", "reward/eval_accuracy", "epoch"} <= set(want)
    assert [step for step, _ in want["reward/loss"]] == list(range(1, meta["metrics"]["steps"] + 1))
    assert got == want
    delete_checkpoint(store, meta["id"])  # a deleted run takes its log and its scalars with it
    assert not run_log_path(store, meta["id"]).exists() and not tensorboard_dir(store, meta["id"]).exists()


def test_a_dpo_meta_round_trips(store, tiny_model_dir):
    from test_dpo import FAST, labelled_pairs

    from rlhf.dpo import train_dpo

    labelled_pairs(store)
    meta = train_dpo(store, DPOTrainConfig(**FAST), str(tiny_model_dir))
    assert_round_trips(meta)
    assert not tensorboard_dir(store, meta["id"]).exists()  # report_to none: the JSONL only


def test_a_ppo_run_crashed_and_resumed_with_the_mirror_has_every_step_once_and_its_meta_round_trips(store,
                                                                                                     tiny_model_dir):
    from test_ppo import PROMPTS, SMALL, length_reward

    from rlhf.ppo import RewardSource, train_ppo

    config = dataclasses.replace(SMALL, steps=4, save_every=2)
    reward = RewardSource(length_reward, "function:length")

    def crash_at_step_3(result):
        if result.step == 3:  # logged, not yet checkpointed: the resumed run runs it again
            raise RuntimeError("the machine went away")

    with pytest.raises(RuntimeError, match="went away"):
        train_ppo(store, config, str(tiny_model_dir), reward, prompts=PROMPTS, device="cpu", on_step=crash_at_step_3)
    kept = find_checkpoint(store, "latest", ("ppo",))
    assert kept["steps_done"] == 2 and len(run_log_path(store, kept["id"]).read_text().splitlines()) == 3
    assert not tensorboard_dir(store, kept["id"]).exists()

    meta = train_ppo(store, dataclasses.replace(config, report_to="tensorboard"), str(tiny_model_dir), reward,
                     prompts=PROMPTS, device="cpu", resume=kept["id"])
    assert meta["id"] == kept["id"] and meta["steps_done"] == 4
    assert meta["config"]["report_to"] == "tensorboard"  # the resumed run's own choice, not the first part's
    assert meta["reward_trend"]["steps"] == 4  # the first part's steps' rewards were kept through the resume
    metrics_file = Path(meta["path"]) / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4] and "samples" in rows[0] and "drift/flags" in rows[0]
    got, want = scalars(tensorboard_dir(store, meta["id"])), expected_scalars(metrics_file)
    assert {"objective/kl", "objective/scores", "ppo/policy/approxkl_avg", "time/step_s"} <= set(want)
    assert "samples" not in got and "drift/flags" not in got  # lists are not scalars
    # Steps 1-2 from the checkpoint's record (the first part ran unmirrored), 3 (run twice) and 4 live: each once.
    assert {tag: [step for step, _ in values] for tag, values in got.items()} == {tag: [1, 2, 3, 4] for tag in want}
    assert got == want
    assert_round_trips(meta)
    update_meta(meta["path"], {"verdict": "improved", "verdict_text": "...", "drift_flags": []})
    evaluated = read_meta(meta["path"])
    assert CheckpointRecord.from_meta(evaluated).to_meta() == evaluated
    assert CheckpointRecord.from_meta(evaluated).extras["verdict"] == "improved"
