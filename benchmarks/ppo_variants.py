"""PPO settings side by side: one round's votes and reward model per rule, several PPO arms on them.

A default of PPO is chosen by comparing arms on the same data. Between two runs of `learning_rules.py` the votes
differ (sampling is seeded but not bit-identical here), so a difference across runs mixes the setting's effect with
the data's. Here, for each rule of `benchmarks/rules.py`, one shared generation (the 64 starter prompts x 4
candidates, 64 tokens), the rule's votes and one reward model (defaults; an arm's "reward" entry holds
RewardTrainConfig overrides, and arms that share them share one reward model); then each arm (PPOConfig overrides)
trains from the same base on its reward model and is judged by the rule on the 32 held-out prompts, as in
`learning_rules.py`: score (win + tie / 2 against the base), KL per answer, length, the app's verdict, the optimised
reward's and the auditor's scores, and the training curve.

An arm with `"reward_function": "oracle"` optimises the rule's own quality instead of the reward model (a perfect
reward model: the rule's quality as a z-score over the labelled answers, clipped to their range, an unacceptable
answer one below the worst): how far PPO's settings go when the reward is right, which separates what PPO cannot
learn from what its reward model does not know. The reward model is still trained: its auditor and labelled-answer
profile feed step selection and the drift detectors, as for any Python reward.

Writes benchmarks/results/ppo_variants.json after every arm (a run stopped early keeps what it finished), e.g.

    .venv/bin/python benchmarks/ppo_variants.py --rules warm,names_subject \\
        --arms '{"no_baseline": {"prompt_baseline": false}, "defaults": {}}'
    .venv/bin/python benchmarks/ppo_variants.py --rules warm \
        --arms '{"defaults": {}, "no_ties": {"reward": {"tie_weight": 0}}}'
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RLHF_MODEL_CACHE", str(REPO_ROOT / ".cache" / "test-models-v1"))

from benchmarks.learning_rules import HELD_OUT_PROMPTS, Clock, ppo_round, run_label, side_by_side  # noqa: E402
from benchmarks.rules import RULES  # noqa: E402


def run(args, home: Path) -> dict:
    from rlhf import pipeline
    from rlhf.config import ModelConfig, RewardTrainConfig, SamplingConfig
    from rlhf.generate import generate_candidates, read_prompts_file, starter_prompts
    from rlhf.judges import annotate
    from rlhf.models import load_model
    from rlhf.store import Store

    train_prompts, held_out, candidates, tokens = starter_prompts(), read_prompts_file(HELD_OUT_PROMPTS), 4, 64
    if args.quick:
        train_prompts, held_out, candidates, tokens = train_prompts[:16], held_out[:8], 3, 16
        args.arms = {name: {"steps": 2, **overrides} for name, overrides in args.arms.items()}
    args.arms = {name: dict(overrides) for name, overrides in args.arms.items()}
    evaluation_sampling = SamplingConfig(num_candidates=1, max_new_tokens=tokens, temperature=0.7, top_p=1.0, seed=0)
    shared = Clock()
    base = Store.open("candidates", create=True)
    shared.time("generate", lambda: generate_candidates(
        base, load_model(ModelConfig(spec="bundled")), train_prompts,
        SamplingConfig(num_candidates=candidates, max_new_tokens=tokens, seed=0), source="benchmark"))
    report = {"run": run_label(), "arms": args.arms, "quick": args.quick, "rules": {}}
    for name in args.rules:
        rule = RULES[name]
        print(f"\n== {name} ({rule.kind}): {rule.guidelines}", flush=True)
        row = report["rules"][name] = {"kind": rule.kind, "arms": {}, "reward_models": {}}
        projects: dict[str, str] = {}  # reward overrides (as JSON) -> the project holding the votes and that model
        for arm, given in args.arms.items():
            overrides = dict(given)  # a copy: every rule's arm must see the arm's own reward settings
            reward_overrides = overrides.pop("reward", {})
            oracle = overrides.pop("reward_function", None) == "oracle"
            key = json.dumps(reward_overrides, sort_keys=True)
            if key not in projects:
                projects[key] = f"{name}-rm{len(projects)}"
                shutil.copytree(base.folder, home / projects[key])
                store = Store.open(projects[key])
                store.save_guidelines(rule.guidelines, author="benchmark")
                clock = Clock()
                clock.time("annotate", annotate, store, rule.judge, f"judge:{rule.name}", seed=0)
                reward = clock.time("train_reward", pipeline.train_reward, store,
                                    RewardTrainConfig(**reward_overrides), "bundled")
                row["reward_models"][key] = {
                    "eval_accuracy": reward["metrics"]["eval_accuracy"],
                    "auditor_accuracy": (reward.get("audit") or {}).get("accuracy_on_reward_model_pairs"),
                    "pairs": reward["metrics"]["n_train"] + reward["metrics"]["n_eval"],
                    "ties": reward["metrics"].get("n_ties", 0), "train_s": clock.stages["train_reward"]}
            # Each arm on a fresh copy of its reward model's project, holding the same votes and reward model.
            folder = home / f"{name}-{arm}"
            shutil.copytree(home / projects[key], folder)
            store = Store.open(folder.name)
            print(f"-- {name} / {arm}: {json.dumps(overrides)}", flush=True)
            reward_function = write_oracle_reward(store, rule, folder) if oracle else None
            result = ppo_round(store, rule, Clock(), 0.0, held_out, evaluation_sampling, overrides, reward_function)
            result.pop("ppo_config", None)
            row["arms"][arm] = {"reward": reward_overrides, **({"reward_function": "oracle"} if oracle else {}),
                                **result}
            print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (dict, list))}), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
            shutil.rmtree(folder, ignore_errors=True)
    return report


def write_oracle_reward(store, rule, folder: Path) -> str:
    """A Python reward file (`path:function`, the CLI's --reward) scoring answers by the rule's own quality, on the
    scale of a normalised reward model: a z-score over the project's labelled answers, clipped to their range (as
    the cautious reward clips), an unacceptable answer (quality None) one under the worst labelled one."""
    import statistics

    qualities = [q for c in store.completions() if (q := rule.quality(c.prompt, c.text)) is not None]
    mean, std = statistics.fmean(qualities), statistics.pstdev(qualities) or 1.0
    low, high = (min(qualities) - mean) / std, (max(qualities) - mean) / std
    file = folder / "oracle_reward.py"
    file.write_text(f"""import sys
sys.path.insert(0, {str(REPO_ROOT)!r})
from benchmarks.rules import RULES

QUALITY = RULES[{rule.name!r}].quality


def reward(prompt, answer):
    text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
    quality = QUALITY(text, answer)
    if quality is None:
        return {low - 1.0!r}
    return min(max((quality - {mean!r}) / {std!r}, {low!r}), {high!r})
""")
    return f"{file}:reward"


def print_table(report: dict) -> None:
    print(f"\n{'rule':<16} {'arm':<20} {'score':>5} {'KL':>5} {'words':>5} {'rm':>5} {'audit':>5} {'ppo s':>6} verdict")
    for name, row in report["rules"].items():
        for arm, r in row["arms"].items():
            print(f"{name:<16} {arm:<20} {r['score']:>5.2f} {r['kl']:>5.1f} {r['length_tuned']:>5.0f} "
                  f"{r['optimised_reward_score'] or 0:>5.2f} {r['auditor_score'] or 0:>5.2f} "
                  f"{r['stages_s']['ppo']:>6.0f} {r['verdict']}")


if __name__ == "__main__":
    sys.exit(side_by_side(__doc__.split("\n\n")[0], "ppo_variants", "PPOConfig overrides", "16 prompts, 2 steps, 8 held out", run, print_table))
