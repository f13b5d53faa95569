"""Data-parallel PPO: two CPU processes (gloo) started by a launcher, as on a multi-GPU machine.

On GPUs the process group is `cpu:gloo,cuda:nccl`: the CPU tensors (metrics, objects, barriers) take its gloo half,
which is what these tests run; the NCCL half (gradients on the GPU) needs two GPUs (scripts/gpu_check.sh).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, free_port, run_cli

from rlhf.checkpoints import list_checkpoints
from rlhf.distributed import process_group_backend
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


def launch_workers(tmp_path, model_dir, processes: int = 2, env: dict | None = None) -> dict:
    """tests/distributed_worker.py under torchrun, one process per rank; returns what rank 0 wrote."""
    out = tmp_path / "ranks.json"
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
         str(free_port()), str(REPO / "tests" / "distributed_worker.py"), "--model", str(model_dir), "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})}, timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    return json.loads(out.read_text())


def test_gradients_are_averaged_so_ranks_on_different_data_stay_identical(tmp_path, tiny_model_dir):
    ranks = launch_workers(tmp_path, tiny_model_dir, env={"CUDA_VISIBLE_DEVICES": ""})
    assert ranks["world"] == 2 and ranks["backend"] == "gloo"
    assert ranks["prompts"][0] != ranks["prompts"][1]  # each rank trained on its own slice of the prompts
    assert ranks["averaged_identical_across_ranks"]  # ...and yet the copies are the same after the step
    assert not ranks["unaveraged_identical_across_ranks"]  # without the all-reduce they drift apart
    assert not ranks["averaged_equals_unaveraged_on_rank_0"]  # and the average is not what rank 0 had alone
    # Metrics, averaged as the training loop averages them (a CPU float64 tensor through gloo): floats are the
    # mean over ranks, other values stay as each rank had them.
    assert ranks["metrics"] == {"rank": 0.5, "twice_rank": 1.0, "step": 1, "note": "rank 0"}


def test_the_process_group_takes_cpu_and_cuda_tensors():
    assert process_group_backend(cuda_available=True) == "cpu:gloo,cuda:nccl"  # NCCL alone cannot reduce CPU ones
    assert process_group_backend(cuda_available=False) == "gloo"


@pytest.mark.cuda
@pytest.mark.skipif(not (__import__("torch").cuda.device_count() >= 2),
                    reason="needs two CUDA GPUs (NCCL for the gradients); scripts/gpu_check.sh runs it where there are")
def test_two_gpus_average_gradients_over_nccl(tmp_path, tiny_model_dir):
    ranks = launch_workers(tmp_path, tiny_model_dir)
    assert ranks["backend"] == "cpu:gloo,cuda:nccl" and ranks["device"] == "cuda:0"
    assert ranks["averaged_identical_across_ranks"] and not ranks["unaveraged_identical_across_ranks"]
    assert ranks["metrics"]["rank"] == 0.5


def test_two_processes_train_one_dpo_run_and_stop_at_the_same_check(tiny_model_dir):
    """DPO under accelerate with the KL-budget checks on: every process checks, all act on rank 0's figures, so
    they stop together and scale the last step back alike (a process that stopped alone would leave the others waiting in an all-reduce), and only
    rank 0 publishes (each process published a checkpoint of its own before)."""
    from test_dpo import labelled_pairs

    labelled_pairs(Store.open("dp-dpo", create=True), prompts=16)
    launched = subprocess.run(
        [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "rlhf", "dpo", "--project", "dp-dpo",
         "--model", str(tiny_model_dir), "--epochs", "2", "--batch-size", "2", "--lr", "1e-2", "--check-every", "1",
         "--target-kl", "1e-6"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    [meta] = list_checkpoints(Store.open("dp-dpo"), ("dpo",))  # one run, published once (by rank 0)
    assert meta["kl_budget_stop"]["step"] == 1 and meta["metrics"]["steps"] == 1
    # the over-budget step's change was scaled back on every process alike (a process that tried other scales would
    # have left the others waiting too), and the published weights are a scaled-back step 1 or step 0
    assert (meta["selected_step"] == 1 and 0 < meta["selected_scale"] < 1) or meta["selected_step"] == 0
    assert any("check/scale" in check for check in meta["checks"])
    assert launched.stdout.count("dpo: 1 step on 16 pairs") == 1  # one process reports
    assert not list((Store.open("dp-dpo").folder / "checkpoints").glob(".*"))  # no staging folder left, any rank


def test_two_processes_train_one_reward_model(tiny_model_dir):
    from test_dpo import labelled_pairs

    labelled_pairs(Store.open("dp-reward", create=True), prompts=16)
    launched = subprocess.run(
        [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "rlhf", "train-reward", "--project", "dp-reward",
         "--model", str(tiny_model_dir), "--epochs", "1", "--batch-size", "4"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    [meta] = list_checkpoints(Store.open("dp-reward"), ("reward",))  # published once, by rank 0
    assert launched.stdout.count("reward model:") == 1 and meta["path"] in launched.stdout
    assert not list((Store.open("dp-reward").folder / "checkpoints").glob(".*"))
