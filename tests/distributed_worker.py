"""One process of a data-parallel check, started by a launcher (torchrun) from tests/test_distributed.py and by
scripts/gpu_check.sh (`--device cuda`, one process per GPU).

Each rank runs one PPO step on the tiny model twice: with rlhf.distributed's gradient averaging, and with it switched
off. Rank 0 writes what the test asserts (JSON at `--out`): the prompts each rank trained on, whether the ranks'
trainable parameters are identical after each variant, whether the averaged run differs from the unaveraged one,
and the metrics average computed as the training loop computes it.

    python -m torch.distributed.run --nproc_per_node 2 tests/distributed_worker.py --model DIR --out FILE
"""

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: import rlhf from this checkout

import rlhf.ppo  # noqa: E402
from rlhf.config import ModelConfig, PPOConfig  # noqa: E402
from rlhf.distributed import average_metrics, distributed, gather_objects, process_device  # noqa: E402
from rlhf.models import load_model  # noqa: E402
from rlhf.ppo import PPORun  # noqa: E402

PROMPTS = ["What is an opossum?", "Hi", "Tell me a joke", "Why is the sky blue?", "Count to three", "Name a colour",
           "Say something kind", "What is two plus two?"]
CONFIG = PPOConfig(steps=1, batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=6, seed=5)


def length_reward(prompts, responses):
    return torch.tensor([len(r) / 10 for r in responses])


def trained_parameters(model_dir: str, average: bool) -> tuple[torch.Tensor, list[str]]:
    """One PPO step; returns every trainable parameter (LoRA and value head) flattened, and the prompts it used."""
    real_average = rlhf.ppo.average_gradients
    if not average:
        rlhf.ppo.average_gradients = lambda parameters, world: None
    try:
        policy = load_model(ModelConfig(spec=model_dir, device=process_device("auto"), dtype="fp32"))
        run = PPORun(CONFIG, policy, length_reward, PROMPTS)
        prompts = run.prompts_for_step(0)
        run.step()
    finally:
        rlhf.ppo.average_gradients = real_average
    trainable = [p for group in run.optimizer.param_groups for p in group["params"]]
    return torch.cat([p.detach().float().reshape(-1).cpu() for p in trainable]), prompts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rank, world = distributed()
    averaged, prompts = trained_parameters(args.model, average=True)
    alone, _ = trained_parameters(args.model, average=False)
    averaged_all, alone_all, prompts_all = (gather_objects(x, world) for x in (averaged, alone, prompts))
    metrics = average_metrics({"rank": float(rank), "twice_rank": 2.0 * rank, "step": 1, "note": f"rank {rank}"},
                              world)
    if rank == 0:
        Path(args.out).write_text(json.dumps({
            "world": world,
            "backend": torch.distributed.get_backend(),
            "device": str(process_device("auto")),
            "prompts": prompts_all,
            "averaged_identical_across_ranks": all(torch.equal(averaged_all[0], p) for p in averaged_all),
            "unaveraged_identical_across_ranks": all(torch.equal(alone_all[0], p) for p in alone_all),
            "averaged_equals_unaveraged_on_rank_0": torch.equal(averaged_all[0], alone_all[0]),
            "metrics": metrics,
        }))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
