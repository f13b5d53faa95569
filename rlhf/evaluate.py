"""Tuned policy vs its reference: win rate under a judge (or the reward model), reward delta, KL and length.

Both models answer every prompt once with the same sampling settings. The judge is asked with the tuned answer as
`a`; without a judge, the reward model decides (higher score wins, equal scores tie). `both_bad` counts as a tie.
KL is, per prompt, the sum over the tuned answer's tokens (EOS included) of log p_tuned - log p_reference under the
models' raw temperature-1 distributions, in nats, averaged over prompts.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from rlhf.checkpoints import POLICY_KINDS, find_checkpoint, list_checkpoints
from rlhf.config import ModelConfig, RLHFError, SamplingConfig
from rlhf.generate import encode_prompts, sample_batch
from rlhf.models import LoadedModel, load_model


def outcome_rates(outcomes: list[str]) -> dict[str, float]:
    """Shares of win / tie / loss (both_bad counts as a tie); they sum to 1."""
    if not outcomes:
        raise RLHFError("evaluate: no prompts were judged.")
    n = len(outcomes)
    wins = sum(o == "win" for o in outcomes)
    losses = sum(o == "loss" for o in outcomes)
    return {"win_rate": wins / n, "tie_rate": (n - wins - losses) / n, "loss_rate": losses / n}


def judge_outcome(answer: str) -> str:
    """A judge's answer about (a = tuned, b = reference) as an outcome for the tuned policy."""
    return {"a": "win", "b": "loss", "tie": "tie", "both_bad": "tie"}[answer]


@torch.no_grad()
def sequence_logprob(loaded: LoadedModel, prompt_ids: list[int], answer_ids: list[int]) -> float:
    """Sum of log p(answer token) under the model at temperature 1 (the answer's EOS included)."""
    ids = torch.tensor([prompt_ids + answer_ids], device=loaded.device)
    logits = loaded.model(input_ids=ids).logits.float()[0, len(prompt_ids) - 1 : -1]
    return float(logits.log_softmax(-1).gather(1, ids[0, len(prompt_ids):].unsqueeze(1)).sum())


def answer_ids(loaded: LoadedModel, text: str, ended: bool) -> list[int]:
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids + [loaded.tokenizer.eos_token_id] if ended else ids


def evaluate_policy(
    store,
    policy: str = "latest",
    prompts: list[str] | None = None,
    judge: Callable[[str, str, str], str] | None = None,
    reward_model: str | None = None,
    sampling: SamplingConfig | None = None,
    device: str = "auto",
) -> dict:
    """Compare a policy checkpoint with its reference on the prompts; returns the figures. The reference is the model
    the run started from: the base model in round 1, the previous round's policy after that (what this round changed).
    """
    meta = find_checkpoint(store, policy, POLICY_KINDS)
    prompts = prompts if prompts is not None else [p.text for p in store.prompts()]
    if not prompts:
        raise RLHFError("evaluate: no prompts; generate some first or pass --prompts FILE.")
    sampling = sampling or SamplingConfig(num_candidates=1, max_new_tokens=64, temperature=0.7, top_p=1.0, seed=0)
    sampling.validate(min_candidates=1)
    tuned = load_model(ModelConfig(spec=meta["path"], device=device))
    reference_spec = meta.get("policy_start") or meta["base_model"]
    reference = load_model(ModelConfig(spec=reference_spec, device=device))
    encoded = encode_prompts(tuned, prompts, sampling.max_new_tokens)
    answers = {}
    for name, model in (("tuned", tuned), ("reference", reference)):
        torch.manual_seed(sampling.seed or 0)  # same settings and seed for both
        answers[name] = [sample for start in range(0, len(encoded), 16)
                         for sample in sample_batch(model, encoded[start : start + 16], sampling)]

    scorer = None
    reward_source = None
    if reward_model or list_checkpoints(store, ("reward",)):
        from rlhf.reward import RewardModel

        reward_meta = find_checkpoint(store, reward_model or "latest", ("reward",))
        scorer, reward_source = RewardModel.load(reward_meta["path"]), reward_meta["id"]
    if judge is None and scorer is None:
        raise RLHFError("evaluate: no judge and no reward model; pass --judge file.py:function or train a reward model.")
    tuned_texts = [a.text for a in answers["tuned"]]
    reference_texts = [a.text for a in answers["reference"]]
    scores_tuned = scorer.score(prompts, tuned_texts) if scorer else None
    scores_reference = scorer.score(prompts, reference_texts) if scorer else None
    if judge is not None:
        outcomes = [judge_outcome(judge(p, a, b)) for p, a, b in zip(prompts, tuned_texts, reference_texts)]
    else:
        outcomes = ["win" if t > r else "loss" if t < r else "tie" for t, r in zip(scores_tuned, scores_reference)]

    kls = []
    for ids, answer in zip(encoded, answers["tuned"]):
        continuation = answer_ids(tuned, answer.text, answer.finish_reason == "stop")
        if continuation:
            kls.append(sequence_logprob(tuned, ids, continuation) - sequence_logprob(reference, ids, continuation))
    return {
        "policy": meta["id"],
        "reference": reference_spec,
        "judge": "function" if judge is not None else f"reward_model:{reward_source}",
        "num_prompts": len(prompts),
        **outcome_rates(outcomes),
        "reward_tuned": float(scores_tuned.mean()) if scores_tuned is not None else None,
        "reward_reference": float(scores_reference.mean()) if scores_reference is not None else None,
        "kl": sum(kls) / len(kls) if kls else 0.0,
        "length_tuned": sum(len(t.split()) for t in tuned_texts) / len(prompts),
        "length_reference": sum(len(t.split()) for t in reference_texts) / len(prompts),
        "sampling": asdict(sampling),
        "examples": [{"prompt": p, "tuned": a, "reference": b}
                     for p, a, b in list(zip(prompts, tuned_texts, reference_texts))[:5]],
    }


def write_report(report: dict, out: str | Path | None) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2, ensure_ascii=False))
