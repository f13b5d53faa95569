"""Drift detectors: signs that a policy is learning the reward model's blind spots, not the annotators' preferences.

A reward model is a proxy, trained on the answers annotators judged; optimise it hard enough and the policy finds
answers no annotator ever saw that it scores highly (Gao et al. 2022, "Scaling Laws for Reward Model
Overoptimization"). Each detector compares a batch of the policy's answers with the labelled answers, whose profile
the reward model records when it is trained (`labelled_profile`):

- length: answers far outside the length range of the labelled answers;
- sameness: the same answer given to different prompts;
- repetition: answers that repeat themselves (few distinct word pairs);
- disagreement: the reward heads disagree about the answers far more than about the labelled ones;
- KL: the policy is further from its reference than the KL budget allows.

`drift_report` returns the figures and, for each detector that fires, a sentence in plain words. Pure functions, no
models: PPO calls them on every rollout, `evaluate` on the tuned answers.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch

LENGTH_SLACK = (0.5, 1.5)
"""An answer is "far outside" the labelled lengths below half the 5th percentile or above 1.5x the 95th."""
LENGTH_SHARE = 0.25
"""The length detector fires when more than this share of the answers is far outside."""
DUPLICATE_SHARE = 0.25
"""The sameness detector fires when, beyond what the labelled answers already do, this share more of the answers
were also given to another prompt."""
REPETITION_RATIO = 0.7
"""The repetition detector fires when distinct word pairs fall below this fraction of the labelled answers'."""
DISAGREEMENT_RATIO = 2.0
"""The disagreement detector fires when the heads disagree this many times more than on the labelled answers."""
KL_OVER_BUDGET = 1.5
"""The KL detector fires above this multiple of the KL budget (target_kl)."""

_WORDS = re.compile(r"\w+")


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile by linear interpolation (numpy's default), for short lists without numpy."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("quantile: no values")
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def distinct_ngrams(text: str, n: int = 2) -> float:
    """Distinct n-grams of words over all n-grams (1.0 when the text has fewer than n + 1 words: nothing repeats)."""
    words = _WORDS.findall(text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if len(grams) > 1 else 1.0


def shared_answers(prompts: Sequence[str], answers: Sequence[str]) -> list[bool]:
    """For each answer: is it, word for word (case and spacing aside), also the answer to a different prompt?"""
    normalised = [" ".join(_WORDS.findall(a.lower())) for a in answers]
    prompts_by_answer: dict[str, set[str]] = {}
    for prompt, answer in zip(prompts, normalised):
        prompts_by_answer.setdefault(answer, set()).add(prompt)
    return [len(prompts_by_answer[a]) > 1 for a in normalised]


def duplicate_share(prompts: Sequence[str], answers: Sequence[str]) -> float:
    """Share of answers that are also the answer to a different prompt."""
    return sum(shared_answers(prompts, answers)) / len(answers) if answers else 0.0


def length_bounds(labelled: dict) -> tuple[float, float]:
    """Token counts beyond which an answer is far outside the labelled ones (below half the 5th percentile, above 1.5x
    the 95th): the reward model has seen nothing like it."""
    return LENGTH_SLACK[0] * labelled["tokens_p05"], LENGTH_SLACK[1] * labelled["tokens_p95"]


def outside_support(prompts: Sequence[str], answers: Sequence[str], token_counts: Sequence[int],
                    labelled: dict) -> torch.Tensor:
    """(B,) True for answers unlike anything the annotators judged: far outside their length, repeating themselves
    far more, or the same answer given to another prompt of the batch. A reward model's score there is a guess."""
    low, high = length_bounds(labelled)
    # One answer for several prompts is outside the support only where the labelled answers rarely do that.
    sameness_is_new = labelled.get("duplicate_share", 0.0) < DUPLICATE_SHARE
    flags = [
        not low <= count <= high or distinct_ngrams(answer) < REPETITION_RATIO * labelled["distinct_2"]
        or (shared and sameness_is_new)
        for answer, count, shared in zip(answers, token_counts, shared_answers(prompts, answers))
    ]
    return torch.tensor(flags, dtype=torch.bool)


def labelled_profile(token_counts: Sequence[int], texts: Sequence[str], scores: torch.Tensor,
                     disagreement: torch.Tensor, prompts: Sequence[str] | None = None) -> dict:
    """What the labelled answers look like: length percentiles (tokens), repetition, sameness across prompts, the
    reward model's score range and how much its heads disagree on them. Saved in the reward model's meta; the
    detectors' yardstick."""
    return {
        "count": len(texts),
        "duplicate_share": duplicate_share(prompts, texts) if prompts is not None else 0.0,
        "tokens_p05": quantile(token_counts, 0.05),
        "tokens_p50": quantile(token_counts, 0.5),
        "tokens_p95": quantile(token_counts, 0.95),
        "distinct_2": sum(distinct_ngrams(t) for t in texts) / len(texts),
        "score_min": float(scores.min()),
        "score_max": float(scores.max()),
        "disagreement_mean": float(disagreement.mean()),
    }


def drift_report(
    prompts: Sequence[str],
    answers: Sequence[str],
    token_counts: Sequence[int],
    labelled: dict | None,
    kl: float | None = None,
    kl_budget: float | None = None,
    disagreement: torch.Tensor | None = None,
) -> dict:
    """The detectors' figures for a batch of answers and `flags`: one plain sentence per detector that fires.

    `labelled` is the reward model's `labelled_profile` (None for a Python reward: only sameness, repetition and KL can
    be judged); `kl` the mean KL per answer in nats; `disagreement` the reward heads' (B,) standard deviations.
    """
    report: dict = {"duplicate_share": duplicate_share(prompts, answers),
                    "distinct_2": sum(distinct_ngrams(a) for a in answers) / max(len(answers), 1)}
    flags = []
    if report["duplicate_share"] > DUPLICATE_SHARE + (labelled or {}).get("duplicate_share", 0.0):
        flags.append(f"{report['duplicate_share']:.0%} of the answers are the same answer given to other prompts")
    if labelled:
        low, high = length_bounds(labelled)
        outside = sum(not low <= n <= high for n in token_counts) / max(len(token_counts), 1)
        report["length_outside_share"] = outside
        report["tokens_mean"] = sum(token_counts) / max(len(token_counts), 1)
        if outside > LENGTH_SHARE:
            flags.append(f"{outside:.0%} of the answers are far outside the length of the labelled answers "
                         f"({report['tokens_mean']:.0f} tokens on average; labelled: "
                         f"{labelled['tokens_p05']:.0f} to {labelled['tokens_p95']:.0f})")
        if report["distinct_2"] < REPETITION_RATIO * labelled["distinct_2"]:
            flags.append(f"the answers repeat themselves (distinct word pairs {report['distinct_2']:.2f}; labelled "
                         f"answers {labelled['distinct_2']:.2f})")
        if disagreement is not None and labelled.get("disagreement_mean"):
            ratio = float(disagreement.mean()) / labelled["disagreement_mean"]
            report["disagreement_ratio"] = ratio
            if ratio > DISAGREEMENT_RATIO:
                flags.append(f"the reward heads disagree {ratio:.1f}x more than on the labelled answers: these answers "
                             "are unlike anything annotators judged")
    if kl is not None and kl_budget:
        report["kl_over_budget"] = kl / kl_budget
        if kl > KL_OVER_BUDGET * kl_budget:
            flags.append(f"KL {kl:.1f} nats per answer, over the budget of {kl_budget:g}")
    report["flags"] = flags
    return report

