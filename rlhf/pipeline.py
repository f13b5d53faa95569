"""One function per user action, follow-ups included: the CLI and the UI's job runner call these and nothing else.

    train_reward(store, config, model_spec)          reward model + its auditor, then the Prefer queue scored
    train_policy(store, "ppo" | "dpo", config, ...)  PPO against the reward model (or DPO on the votes), then the
                                                      before/after evaluation saved in the checkpoint
    evaluate(store, policy, ...)                      tuned vs reference under held-out evidence, with a verdict
    next_round(store, sampling)                       candidates from the newest policy; after a flagged run, its
                                                      answers against its reference's first, for people to judge
    hardware_defaults()                               the settings to start from on this machine (CPU or GPU)

Whatever a person does in the browser, `python -m rlhf` does through the same function, so a policy trained from
the command line has the same artefacts (evaluation, verdict, lineage, card fields) as one trained in the Train tab.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

from rlhf.checkpoints import EVALUATION_FILE, find_checkpoint, list_checkpoints
from rlhf.config import DPOTrainConfig, PPOConfig, RewardTrainConfig, RLHFError, SamplingConfig
from rlhf.monitor import Progress
from rlhf.store import Store

EVALUATION_PROMPTS = 32
"""Prompts the before/after evaluation samples (evenly spread over the project's prompts)."""
FLAGGED_VERDICTS = ("likely reward hacking", "drifted", "unconfirmed")
"""Verdicts after which the next round asks people to judge the policy's new behaviour first."""


def hardware_defaults(gpu: bool | None = None) -> dict:
    """Settings to start from: small LoRA runs on a CPU, larger batches on a GPU (`gpu`: None asks torch)."""
    import torch

    if torch.cuda.is_available() if gpu is None else gpu:
        # kl_horizon follows the batch: the controller reacts over two steps' answers, as on a CPU.
        return {"ppo": PPOConfig(batch_size=64, mini_batch_size=16, steps=100, kl_horizon=128),
                "reward": RewardTrainConfig(batch_size=32), "dpo": DPOTrainConfig(batch_size=16)}
    return {"ppo": PPOConfig(), "reward": RewardTrainConfig(), "dpo": DPOTrainConfig()}


def train_reward(store: Store, config: RewardTrainConfig, model_spec: str, progress: Progress | None = None,
                 stop: threading.Event | None = None, phase: Callable[[str], None] | None = None) -> dict:
    """Train a reward model (and its auditor) on the project's votes; then score the Prefer queue with it, so the
    least-certain-first order is ready for the next person who labels. Returns the checkpoint's meta."""
    from rlhf.prefer import queue_scores
    from rlhf.reward import train_reward_model

    meta = train_reward_model(store, config, model_spec, progress=progress, stop=stop)
    if meta.get("rank", 0) != 0:
        return meta  # data parallel: rank 0 scores the queue with what it published
    if phase is not None:
        phase("scoring the Prefer queue")
    queue_scores(store, store.open_pairs(""))
    return meta


def train_policy(
    store: Store,
    kind: str,
    config: PPOConfig | DPOTrainConfig,
    model_spec: str,
    reward_model: str | None = None,
    reward_function: str | None = None,
    prompts: list[str] | None = None,
    resume: str | None = None,
    on_step: Callable | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    device: str = "auto",
    phase: Callable[[str], None] | None = None,
) -> dict:
    """Train a policy with PPO (against the newest reward model, or `reward_model`, or a Python `reward_function`) or
    DPO (on the votes), then evaluate it against the model it started from and save the report in the checkpoint.
    Returns the checkpoint's meta with `evaluation` (None when there is nothing to judge it by)."""
    if kind == "ppo":
        from rlhf.ppo import resolve_reward, train_ppo

        if reward_model and reward_function:
            raise RLHFError("ppo: give a reward model or a reward function, not both.")
        reward = resolve_reward(store, config, reward_model, reward_function)
        meta = train_ppo(store, config, model_spec, reward, prompts=prompts, resume=resume, on_step=on_step,
                         stop=stop, device=device)
    elif kind == "dpo":
        from rlhf.dpo import train_dpo

        meta = train_dpo(store, config, model_spec, progress=progress, stop=stop,
                         held_out=_audit_pairs(store, reward_model))
    else:
        raise RLHFError(f"train: {kind!r} is not a policy algorithm; use ppo or dpo.")
    if meta.get("rank", 0) != 0:
        return meta  # data parallel: rank 0 evaluates what it published
    if phase is not None:
        phase("evaluating against the reference")
    meta["evaluation"] = evaluate_after_training(store, meta)
    return meta


def _audit_pairs(store: Store, reward_model: str | None) -> dict | None:
    """The pairs the newest reward model's auditor learned from: DPO leaves them out, so the auditor's verdict on a
    DPO policy is still held-out evidence. None when there is no auditor."""
    if not list_checkpoints(store, ("reward",)):
        return None
    meta = find_checkpoint(store, reward_model or "latest", ("reward",))
    if not meta.get("audit"):
        return None
    return {"reward_model": meta["id"], "path": meta["path"], "pair_ids": meta["dataset"]["eval_pair_ids"]}


def evaluation_prompts(store: Store, limit: int = EVALUATION_PROMPTS) -> list[str]:
    """Up to `limit` of the project's prompts, evenly spread (not just the first ones)."""
    from rlhf.generate import spread

    return spread([p.text for p in store.prompts()], limit)


def evaluate_after_training(store: Store, meta: dict) -> dict | None:
    """Before and after: the new policy vs the model it started from, saved as the checkpoint's evaluation.json and
    summarised in its meta (verdict, flags). None when the project has no prompts or nothing to judge by."""
    prompts = evaluation_prompts(store)
    if not prompts or not list_checkpoints(store, ("reward",)):
        return None  # e.g. PPO on a Python reward: no model to judge by (`evaluate --judge` can)
    return evaluate(store, meta["path"], prompts=prompts)


def evaluate(store: Store, policy: str = "latest", prompts: list[str] | None = None, judge=None,
             reward_model: str | None = None, sampling: SamplingConfig | None = None, device: str = "auto",
             save: bool = True) -> dict:
    """Tuned vs reference (rlhf.evaluate); with `save`, the report becomes the checkpoint's evaluation.json and its
    verdict and drift flags go into the checkpoint's meta (what the rounds timeline, leaderboard and card show)."""
    from rlhf.checkpoints import POLICY_KINDS, update_meta
    from rlhf.evaluate import evaluate_policy

    report = evaluate_policy(store, policy, prompts=prompts, judge=judge, reward_model=reward_model,
                             sampling=sampling, device=device)
    if save:
        meta = find_checkpoint(store, policy, POLICY_KINDS)
        (Path(meta["path"]) / EVALUATION_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False))
        update_meta(meta["path"], {"verdict": report["verdict"], "verdict_text": report["verdict_text"],
                                   "drift_flags": report["drift"]["flags"]})
    return report


def next_round(store: Store, sampling: SamplingConfig | None = None, progress=None, cancel=None):
    """Start the next round: fresh candidates from the newest policy for every prompt of the project, to label. After
    a run whose verdict was flagged, people judge the new behaviour first: one answer of the policy against one of
    the model it started from, per prompt, queued before everything else (source `audit`)."""
    from rlhf.rounds import audit_pairs, newest_policy_meta
    from rlhf.rounds import next_round as sample_next_round

    policy = newest_policy_meta(store)
    if policy is not None and policy.get("verdict") in FLAGGED_VERDICTS:
        audit_pairs(store, policy, sampling, progress=progress, cancel=cancel)
    return sample_next_round(store, sampling, progress=progress, cancel=cancel)

