"""Data parallelism spelled out: `accelerate launch` (or torchrun) starts one process per device; each samples its own
prompts, gradients are averaged across processes after every backward, rank 0 writes logs and checkpoints.

One process group serves both kinds of traffic (`cpu:gloo,cuda:nccl` on GPUs): NCCL moves the gradients, which live
on the GPU; gloo takes CPU tensors (the metrics) and, by torch's rule for a group with a CPU backend, every object
collective and barrier. An NCCL-only group cannot reduce a CPU tensor, which is how a multi-GPU run used to crash at
the end of its first step.

Every helper is a no-op in a single process (world size 1), so the training code calls them unconditionally.
"""

from __future__ import annotations

import os

import torch


def process_group_backend(cuda_available: bool) -> str:
    """The backend string for `init_process_group`: NCCL for CUDA tensors plus gloo for CPU ones, or gloo alone."""
    return "cpu:gloo,cuda:nccl" if cuda_available else "gloo"


def local_rank() -> int:
    """This process's index on its machine (the launcher sets LOCAL_RANK): the GPU it owns."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def distributed() -> tuple[int, int]:
    """(rank, world size), initialising the process group when launched with several processes.

    The process's GPU is selected from LOCAL_RANK before anything touches CUDA: otherwise every rank creates its
    context, and whatever `to("cuda")` places, on cuda:0. Call it before loading any model (cmd_ppo does).
    """
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():  # the launcher set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=process_group_backend(cuda))
    return dist.get_rank(), dist.get_world_size()


def process_device(device: str = "auto") -> str:
    """The device a process of a data-parallel run works on: its own GPU (cuda:LOCAL_RANK) when launched with
    several processes on a GPU machine and `device` is `auto`; otherwise `device` unchanged."""
    if device == "auto" and int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.cuda.is_available():
        return f"cuda:{local_rank()}"
    return device


def average_gradients(parameters: list[torch.nn.Parameter], world: int) -> None:
    """All-reduce and average gradients, so every process applies the same update (plain DDP, spelled out).

    The gradients are flattened into one buffer per (device, dtype) and reduced in one call: a LoRA policy has
    hundreds of small gradient tensors, and one NCCL call each would cost more in latency than the update itself.
    """
    if world <= 1:
        return
    import torch.distributed as dist

    groups: dict[tuple[torch.device, torch.dtype], list[torch.nn.Parameter]] = {}
    for p in parameters:
        if p.grad is None:  # a parameter this rank's minibatch did not reach still takes part in the average
            p.grad = torch.zeros_like(p)
        groups.setdefault((p.grad.device, p.grad.dtype), []).append(p)
    for group in groups.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= world
        offset = 0
        for p in group:
            size = p.grad.numel()
            p.grad.copy_(flat[offset : offset + size].view_as(p.grad))
            offset += size


def average_metrics(metrics: dict, world: int) -> dict:
    """Mean of every float metric across processes (the same keys on every rank); other values are kept as they are.

    The values travel as one CPU float64 tensor, which the gloo half of the process group reduces."""
    if world <= 1:
        return metrics
    import torch.distributed as dist

    keys = sorted(k for k, v in metrics.items() if isinstance(v, float))
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return {**metrics, **{k: float(v) / world for k, v in zip(keys, values)}}


def barrier(world: int) -> None:
    """Wait until every process gets here (rank 0 writing a checkpoint while the others wait)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(value, world: int):
    """Rank 0's `value` on every process (a run id: every process must name the run as rank 0 does)."""
    if world <= 1:
        return value
    import torch.distributed as dist

    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def gather_objects(value, world: int) -> list:
    """Every process's `value`, in rank order, on every process (each rank's RNG state, for an exact resume)."""
    if world <= 1:
        return [value]
    import torch.distributed as dist

    gathered = [None] * world
    dist.all_gather_object(gathered, value)
    return gathered


def one_gpu_per_process(args):
    """Trainer arguments (TRL's reward and DPO configs) that keep the Trainer on one GPU per process, as PPO is.

    Without a launcher a transformers Trainer wraps the model in `torch.nn.DataParallel` over every visible GPU and
    multiplies the batch by their number; under `accelerate launch` it is DDP with one GPU per process already, and
    `n_gpu` is 1. Several GPUs are for `accelerate launch` (README, "When one machine is not enough"). `_n_gpu` is
    the attribute the Trainer itself sets to 1 for model parallelism (transformers trainer.py)."""
    if args.n_gpu > 1:
        args._n_gpu = 1
    return args
