"""Data-parallel PPO: two CPU processes (gloo) started by `accelerate launch`, as on a multi-GPU machine."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, run_cli

from rlhf.checkpoints import list_checkpoints
from rlhf.store import Store

ACCELERATE = Path(sys.executable).with_name("accelerate")


def test_two_processes_train_one_run(tmp_path, tiny_model_dir):
    run_cli("projects", "--create", "dp")
    rewards = tmp_path / "rewards.py"
    rewards.write_text("def short(prompt, response):\n    return -len(response) / 10\n")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\ntwo\nthree\nfour\nfive\n")  # 5 prompts for 2 x 4 answers a step: uneven on purpose
    common = ["--project", "dp", "--model", str(tiny_model_dir), "--reward", f"{rewards}:short", "--prompts",
              str(prompts), "--steps", "3", "--batch-size", "4", "--mini-batch-size", "2", "--max-new-tokens", "6"]
    launched = subprocess.run(
        [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "rlhf", "ppo", *common],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    [meta] = list_checkpoints(Store.open("dp"), ("ppo",))  # one run, written once (by rank 0)
    assert meta["processes"] == 2 and meta["steps_done"] == 3
    distributed_log = [json.loads(line) for line in open(Path(meta["path"]) / "metrics.jsonl")]

    single = run_cli("ppo", *common)
    assert single.returncode == 0, single.stderr
    single_meta = list_checkpoints(Store.open("dp"), ("ppo",))[-1]
    single_log = [json.loads(line) for line in open(Path(single_meta["path"]) / "metrics.jsonl")]
    assert [sorted(line) for line in distributed_log] == [sorted(line) for line in single_log]  # same shape
    assert single_meta["processes"] == 1
