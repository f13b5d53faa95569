"""Tuned policy vs its reference, judged by evidence the policy never optimised against, with a verdict in plain words.

Both models answer every prompt once with the same sampling settings. Then:
- **the optimised reward model** (the one PPO trained against) scores both answers: what the run believes;
- **the auditor** (`rlhf.reward`: a reward model trained only on held-out votes the optimised one never saw) scores
  them too: held-out evidence;
- **a judge** (a Python function, when given) decides each pair, the tuned answer shown as `a`;
- **drift detectors** (`rlhf.drift`) compare the tuned answers with the labelled ones (length, sameness, repetition,
  reward-head disagreement) and the KL with the budget.

The verdict (`verdict`) is made from the auditor and the detectors, never from the optimised reward alone: when the
optimised reward model sees a win that the held-out evidence does not confirm, or a detector fires, it says "likely
reward hacking", never "improved". A judge's outcome is reported beside it, not mixed in, so the two can be compared.

KL is, per prompt, the sum over the tuned answer's tokens (EOS included) of log p_tuned - log p_reference under the
models' raw temperature-1 distributions, in nats, averaged over prompts (`kl`); `kl_at_sampling_temperature` is the
same with both models' logits divided by the sampling temperature, the KL of the policies PPO trains and penalises,
which the KL budget (`target_kl`) is measured in.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from rlhf.checkpoints import POLICY_KINDS, find_checkpoint, list_checkpoints
from rlhf.config import ModelConfig, RLHFError, SamplingConfig
from rlhf.drift import drift_report
from rlhf.generate import answer_logprobs, encode_prompts, evaluation_sampling, mean_kls, sample_answers
from rlhf.models import LoadedModel, load_model

WIN_THRESHOLD = 0.6
"""Evidence counts as "the tuned policy is better" at a score (win + tie / 2) of at least this; 0.5 is no change."""
LOSS_THRESHOLD = 0.4
"""... and as "worse" at this or below."""

VERDICTS = {
    "improved": "Improved: held-out evidence prefers the tuned policy and no drift detector fired.",
    "likely reward hacking": "Likely reward hacking: the optimised reward model calls it a win, but {reason}.",
    "drifted": "Drifted: {reason}; the policy is not better by any held-out evidence.",
    "no clear change": "No clear change: neither the held-out evidence nor the optimised reward model sees a "
                       "difference.",
    "worse": "Worse: held-out evidence prefers the reference.",
    "unconfirmed": "Unconfirmed: the optimised reward model calls it a win, but there is no held-out evidence to "
                   "check it against (the reward model has no auditor: label more pairs and retrain it).",
}


def report_text(report: dict) -> str:
    """A before/after report in plain words, the same in the CLI and the Train tab: the optimised reward model's
    score beside the held-out evidence (the judge, when given, else the auditor), drift, and the verdict.

    Pure: `report` is what `evaluate_policy` returns."""
    def score(part: dict | None) -> str:
        return "-" if not part else f"{part['score']:.2f}"

    evidence = (f"the judge {score(report['judged'])}" if report.get("judged") else
                f"the auditor (votes the reward model never saw) {score(report.get('held_out'))}")
    lines = [f"Before and after on {report['num_prompts']} prompts (score: win + tie/2 of the tuned policy, 0.50 = "
             f"no change): the optimised reward {score(report.get('optimised_reward'))}, {evidence}; KL "
             f"{report['kl']:.1f} nats per answer; length {report['length_reference']:.0f} -> "
             f"{report['length_tuned']:.0f} words."]
    flags = (report.get("drift") or {}).get("flags") or []
    if flags:
        lines.append("Drift: " + "; ".join(flags) + ".")
    if report.get("training_reward"):
        lines.append(training_reward_text(report["training_reward"]))
    lines.append(report["verdict_text"])
    return "\n".join(lines)


def training_reward_text(trend: dict) -> str:
    """What PPO's run did to the reward it optimised (`rlhf.ppo.reward_trend`), in words. Pure."""
    figures = (f"{trend['first']:+.2f} over the first {trend['quarter']} of its {trend['steps']} steps, "
               f"{trend['last']:+.2f} over the last {trend['quarter']} (+- {trend['se']:.2f})")
    if trend["label"] == "rose":
        return f"Training: PPO raised the reward it optimised ({figures})."
    moved = "did not raise" if trend["label"] == "flat" else "lowered"
    return (f"Training: PPO {moved} the reward it optimised ({figures}): by the reward's own measure its "
            "answers got no better, so the reward gave it no direction it could follow. More votes, or a reward "
            "model that ranks its held-out pairs better, come before more steps.")


def outcome_rates(outcomes: list[str]) -> dict[str, float]:
    """Shares of win / tie / loss (both_bad counts as a tie) and the score win + tie / 2; the rates sum to 1."""
    if not outcomes:
        raise RLHFError("evaluate: no prompts were judged.")
    n = len(outcomes)
    wins = sum(o == "win" for o in outcomes)
    losses = sum(o == "loss" for o in outcomes)
    ties = n - wins - losses
    return {"win_rate": wins / n, "tie_rate": ties / n, "loss_rate": losses / n, "score": (wins + ties / 2) / n}


def judge_outcome(answer: str) -> str:
    """A judge's answer about (a = tuned, b = reference) as an outcome for the tuned policy."""
    return {"a": "win", "b": "loss", "tie": "tie", "both_bad": "tie"}[answer]


def score_outcomes(tuned: torch.Tensor, reference: torch.Tensor) -> list[str]:
    """Per prompt, win / loss / tie for the tuned answer by a scorer's two scores."""
    return ["win" if t > r else "loss" if t < r else "tie" for t, r in zip(tuned.tolist(), reference.tolist())]


def comparison(tuned: torch.Tensor, reference: torch.Tensor) -> dict:
    """A scorer's view of tuned vs reference: outcome rates and mean scores."""
    return {**outcome_rates(score_outcomes(tuned, reference)), "reward_tuned": float(tuned.mean()),
            "reward_reference": float(reference.mean())}


def verdict(optimised: dict | None, held_out: dict | None, drift: dict) -> dict:
    """{label, text} from the optimised reward model's comparison, the held-out evidence's and the drift report.

    Pure: `optimised` and `held_out` are `comparison` dicts (or None when absent), `drift` a `drift_report`.
    """
    flags = drift.get("flags", [])
    optimised_win = optimised is not None and optimised["score"] >= WIN_THRESHOLD
    reason = ""
    if flags:
        label, reason = ("likely reward hacking" if optimised_win else "drifted"), "; ".join(flags)
    elif held_out is None:
        label = "unconfirmed" if optimised_win else "no clear change"
    elif held_out["score"] >= WIN_THRESHOLD:
        label = "improved"
    elif held_out["score"] <= LOSS_THRESHOLD:
        label = "worse"
    elif optimised_win:
        label = "likely reward hacking"
        reason = f"the auditor, trained on votes it never saw, does not (score {held_out['score']:.2f})"
    else:
        label = "no clear change"
    return {"label": label, "text": VERDICTS[label].format(reason=reason)}


def evaluate_policy(
    store,
    policy: str = "latest",
    prompts: list[str] | None = None,
    judge: Callable[[str, str, str], str] | None = None,
    reward_model: str | None = None,
    sampling: SamplingConfig | None = None,
    device: str = "auto",
) -> dict:
    """Compare a policy checkpoint with its reference on the prompts; returns the figures and the verdict.

    The reference is the model the run started from: the base model in round 1, the previous round's policy after
    that (what this round changed). The optimised reward model is the one the policy was trained against (a PPO
    policy records it; otherwise `reward_model`, else the project's newest); its auditor provides the held-out
    evidence.
    """
    meta = find_checkpoint(store, policy, POLICY_KINDS)
    prompts = prompts if prompts is not None else [p.text for p in store.prompts()]
    if not prompts:
        raise RLHFError("evaluate: no prompts; generate some first (Generate tab, or `python -m rlhf generate`) or "
                        "pass --prompts FILE.")
    optimised_reward = str(meta.get("reward") or "")
    reward_id = optimised_reward if optimised_reward.startswith("reward-") else reward_model
    reward_meta = None
    if reward_id or list_checkpoints(store, ("reward",)):
        reward_meta = find_checkpoint(store, reward_id or "latest", ("reward",))
    function = None
    if optimised_reward.startswith("function:"):  # PPO on a Python reward: score with it, if its file is still there
        from rlhf.judges import load_function

        try:
            function = load_function(optimised_reward.removeprefix("function:"))
        except RLHFError:
            function = None
    if judge is None and reward_meta is None:
        raise RLHFError("evaluate: no judge and no reward model; pass --judge file.py:function or train a reward "
                        "model first (Train tab, or `python -m rlhf train-reward`).")
    reference_spec = meta.get("policy_start") or meta["base_model"]
    # Answers as long as the ones annotators judged (and PPO trained on): the detectors compare with those.
    limit = (meta.get("config") or {}).get("max_new_tokens") or store.candidate_max_new_tokens() or 64
    sampling = sampling or evaluation_sampling(limit)
    report = compare_models(
        load_model(ModelConfig(spec=meta["path"], device=device)),
        load_model(ModelConfig(spec=reference_spec, device=device)),
        prompts, judge=judge, reward_meta=reward_meta, sampling=sampling,
        kl_budget=(meta.get("config") or {}).get("target_kl"), reward_function=function,
    )
    # PPO's run: did it raise the reward it optimised? (`rlhf.ppo.reward_trend`; None for DPO)
    return {"policy": meta["id"], "reference": reference_spec, **report, "training_reward": meta.get("reward_trend")}


def compare_models(
    tuned: LoadedModel,
    reference: LoadedModel,
    prompts: list[str],
    judge: Callable[[str, str, str], str] | None = None,
    reward_meta: dict | None = None,
    sampling: SamplingConfig | None = None,
    kl_budget: float | None = None,
    reward_function: Callable[[str, str], float] | None = None,
) -> dict:
    """Tuned vs reference on `prompts`: both answer once with the same settings and seed; the reward model of
    `reward_meta` and its auditor score the answers, `judge` decides them, the drift detectors read them. The
    optimised reward is that reward model's, or `reward_function` when the policy was trained on a Python reward
    (the reward model then only audits). Both models are released before the reward models load."""
    sampling = sampling or evaluation_sampling(64)
    sampling.validate(min_candidates=1)
    encoded = encode_prompts(tuned, prompts, sampling.max_new_tokens)
    answers = {}
    for name, model in (("tuned", tuned), ("reference", reference)):
        answers[name] = sample_answers(model, encoded, sampling)  # same settings and seed for both
    tuned_texts = [a.text for a in answers["tuned"]]
    reference_texts = [a.text for a in answers["reference"]]

    # KL per answer of the models themselves (temperature 1), and at the sampling temperature: the policies PPO
    # trains and penalises (logits divided by it), so the one its KL budget is in.
    temperatures = (1.0, sampling.temperature)
    kl, kl_sampled = mean_kls(answer_logprobs(tuned, encoded, answers["tuned"], temperatures),
                              answer_logprobs(reference, encoded, answers["tuned"], temperatures), len(temperatures))
    del tuned, reference  # the caller's references go too: the reward models need the memory

    # the optimised reward model, its auditor, the detectors
    optimised = held_out = disagreement = None
    if reward_meta is not None:
        from rlhf.reward import RewardModel

        scorer = RewardModel.load(reward_meta["path"])
        heads_tuned = scorer.score_heads(prompts, tuned_texts)
        if reward_function is None:
            optimised = comparison(heads_tuned.mean(1), scorer.score(prompts, reference_texts))
        if heads_tuned.size(1) > 1:
            disagreement = heads_tuned.std(1, correction=0)
        del scorer
        if reward_meta.get("audit"):
            auditor = RewardModel.load(reward_meta["path"], audit=True)
            held_out = comparison(auditor.score(prompts, tuned_texts), auditor.score(prompts, reference_texts))
            del auditor
    if reward_function is not None:
        optimised = comparison(torch.tensor([float(reward_function(p, t)) for p, t in zip(prompts, tuned_texts)]),
                               torch.tensor([float(reward_function(p, r)) for p, r in zip(prompts, reference_texts)]))
    token_counts = [a.num_tokens - (a.finish_reason == "stop") for a in answers["tuned"]]  # without the EOS
    drift = drift_report(prompts, tuned_texts, token_counts, reward_meta.get("labelled_answers") if reward_meta else None,
                         kl=kl_sampled, kl_budget=kl_budget, disagreement=disagreement)
    judged = None
    if judge is not None:
        judged = outcome_rates([judge_outcome(judge(p, a, b)) for p, a, b in zip(prompts, tuned_texts, reference_texts)])
    app_verdict = verdict(optimised, held_out, drift)
    evidence = judged or held_out or optimised  # the headline rates: the strongest evidence there is
    return {
        "judge": "function" if judge is not None else
                 f"auditor:{reward_meta['id']}" if held_out else f"reward_model:{reward_meta['id']}",
        "num_prompts": len(prompts),
        **{k: evidence[k] for k in ("win_rate", "tie_rate", "loss_rate", "score")},
        "verdict": app_verdict["label"],
        "verdict_text": app_verdict["text"],
        "optimised_reward": optimised,
        "held_out": held_out,
        "judged": judged,
        "drift": drift,
        "reward_model": reward_meta["id"] if reward_meta else None,
        "reward_tuned": optimised["reward_tuned"] if optimised else None,
        "reward_reference": optimised["reward_reference"] if optimised else None,
        "kl": kl,
        "kl_at_sampling_temperature": kl_sampled,
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
