"""Rounds of RLHF: generate with the current policy -> label -> reward model -> PPO or DPO -> a new policy.

A round is not stored separately; it is read off what the project holds. Policy checkpoints carry their round (one
more than the policy they started from); a round's votes are those cast between the previous policy and this one.
`next_round` starts the next one: candidates from the newest policy for the project's prompts, ready to label.
"""

from __future__ import annotations

from rlhf.checkpoints import EVALUATION_FILE, POLICY_KINDS, list_checkpoints
from rlhf.config import ModelConfig, SamplingConfig, default_model_spec
from rlhf.store import Store


def rounds(store: Store) -> list[dict]:
    """One row per policy checkpoint, oldest first: round, votes added, reward model accuracy, evaluation."""
    import json
    from pathlib import Path

    rewards = {m["id"]: m for m in list_checkpoints(store, ("reward",))}
    votes = sorted(v["created_at"] for v in store.votes() if v["choice"] != "skip")
    rows, previous_time = [], ""
    for meta in list_checkpoints(store, POLICY_KINDS):
        evaluation_file = Path(meta["path"]) / EVALUATION_FILE
        evaluation = json.loads(evaluation_file.read_text()) if evaluation_file.is_file() else {}
        reward = rewards.get(meta.get("reward", ""), {})
        rows.append({
            "round": meta.get("round", 1),
            "policy": meta["id"],
            "algorithm": meta["kind"],
            "started_from": meta.get("parent") or meta.get("base_model"),
            "votes_added": sum(1 for t in votes if previous_time < t <= meta["created_at"]),
            "reward_model": meta.get("reward"),
            "reward_model_accuracy": (reward.get("metrics") or {}).get("eval_accuracy"),
            "win_rate_vs_previous": evaluation.get("win_rate"),
            "kl": evaluation.get("kl"),
            "created_at": meta["created_at"],
        })
        previous_time = meta["created_at"]
    return rows


def newest_policy_meta(store: Store) -> dict | None:
    """The newest policy checkpoint's meta (with `path`), or None before the first one."""
    policies = list_checkpoints(store, POLICY_KINDS)
    return policies[-1] if policies else None


def newest_policy(store: Store) -> str:
    """The newest policy checkpoint's folder, or the base model when there is none yet."""
    meta = newest_policy_meta(store)
    return meta["path"] if meta else default_model_spec()


def audit_pairs(store: Store, policy: dict, sampling: SamplingConfig | None = None, progress=None,
                cancel=None) -> list[int]:
    """People judge a policy's new behaviour: for every prompt, one answer of the policy and one of the model it
    started from, made a pair (source `audit`, first in the Prefer queue). Returns the new pair ids.

    The reward model never saw answers like the policy's new ones; only people can say whether they are better."""
    from dataclasses import replace

    from rlhf.generate import generate_candidates
    from rlhf.models import load_model

    prompts = [p.text for p in store.prompts()]
    sampling = replace(sampling or last_sampling(store), num_candidates=1)
    answers = []
    for spec in (policy["path"], policy.get("policy_start") or policy["base_model"]):
        result = generate_candidates(store, load_model(ModelConfig(spec=spec)), prompts, sampling, source="audit",
                                     progress=progress, cancel=cancel, min_candidates=1)
        answers.append({c.prompt_id: c.id for c in store.completions(result.run_id)})
    tuned, reference = answers
    return store.add_pairs([(tuned[prompt_id], reference[prompt_id]) for prompt_id in tuned if prompt_id in reference],
                           source="audit")


def next_round(store: Store, sampling: SamplingConfig | None = None, progress=None, cancel=None):
    """Sample fresh candidates from the newest policy for every prompt of the project (to label next)."""
    from rlhf.generate import generate_candidates
    from rlhf.models import load_model

    prompts = [p.text for p in store.prompts()]
    if not prompts:
        from rlhf.config import RLHFError, cli

        raise RLHFError(f"next round: the project has no prompts yet; generate candidates first (Generate tab, or "
                        f"{cli('generate', '--project', store.name, '--prompts', 'prompts.txt')}).")
    loaded = load_model(ModelConfig(spec=newest_policy(store)))
    return generate_candidates(store, loaded, prompts, sampling or last_sampling(store), source="next-round",
                               progress=progress, cancel=cancel)


def last_sampling(store: Store) -> SamplingConfig:
    """The settings of the project's last candidate generation, a fresh seed; the defaults when there is none. A new
    round samples the way the person chose for the first one, with at least two answers per prompt to compare (a
    CLI generation may have sampled one)."""
    runs = store.candidate_generation_runs()
    if not runs:
        return SamplingConfig()
    params = runs[-1]["params"]
    kept = {name: params[name] for name in ("num_candidates", "max_new_tokens", "temperature", "top_p", "batch_size")
            if name in params}
    kept["num_candidates"] = max(2, int(kept.get("num_candidates", 2)))
    return SamplingConfig(**kept)
