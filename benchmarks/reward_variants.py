"""Reward-model settings side by side: which one ranks answers it never saw the way the annotators would?

PPO can only learn what its reward model ranks right, and the answers it writes are not the ones people labelled.
So a reward model is judged here on answers it never saw, to prompts it never saw. For each rule of
`benchmarks/rules.py`: one shared generation (the 64 starter prompts x 4 candidates, 64 tokens), the rule's votes,
then one reward model per arm (RewardTrainConfig overrides) on those same votes. Figures per arm:

- `eval_accuracy`: on the held-out decided pairs (the same pairs for every arm; ties are split apart from them);
- `unseen_pair_accuracy`: on fresh answers of the base policy to the 32 held-out prompts (8 each, never labelled),
  over every pair of answers to one prompt that the rule decides, the share the reward model orders as the rule does
  (its standard error beside it); what PPO's per-prompt comparisons need;
- `unseen_spearman`: rank correlation of the reward model's score with the rule's quality over those answers;
- `train_s`: the whole `train-reward` (reward model and auditor).

Writes benchmarks/results/reward_variants.json after every arm, e.g.

    .venv/bin/python benchmarks/reward_variants.py --rules warm,names_subject,concise \\
        --arms '{"decided only": {}, "ties": {"tie_weight": 1.0}}'
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RLHF_MODEL_CACHE", str(REPO_ROOT / ".cache" / "test-models-v1"))

from benchmarks.learning_rules import HELD_OUT_PROMPTS, Clock, run_label, side_by_side  # noqa: E402
from benchmarks.rules import RULES  # noqa: E402


def ranking_agreement(rule, prompts: list[str], answers: list[str], scores: list[float]) -> dict:
    """How the reward model's scores order answers against the rule: within each prompt, over every pair the rule
    decides, the share ordered alike (a score tie counts half) and its standard error; and the rank correlation of
    score with quality across all acceptable answers. Pure."""
    by_prompt: dict[str, list[tuple[str, float]]] = {}
    for prompt, answer, score in zip(prompts, answers, scores, strict=True):
        by_prompt.setdefault(prompt, []).append((answer, score))
    agree = []
    for prompt, group in by_prompt.items():
        for (a, score_a), (b, score_b) in itertools.combinations(group, 2):
            verdict = rule.judge(prompt, a, b)
            if verdict in ("a", "b"):
                margin = (score_a - score_b) * (1 if verdict == "a" else -1)
                agree.append(1.0 if margin > 0 else 0.5 if margin == 0 else 0.0)
    share = sum(agree) / len(agree) if agree else None
    error = math.sqrt(share * (1 - share) / len(agree)) if agree else None
    rated = [(rule.quality(p, a), s) for p, a, s in zip(prompts, answers, scores)]
    rated = [(q, s) for q, s in rated if q is not None]
    return {"unseen_pair_accuracy": share, "unseen_pair_accuracy_se": error, "unseen_pairs": len(agree),
            "unseen_spearman": spearman([q for q, _ in rated], [s for _, s in rated]), "unseen_answers": len(rated)}


def spearman(x: list[float], y: list[float]) -> float | None:
    """Rank correlation, ties given their mean rank. Pure."""
    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        result, i = [0.0] * len(values), 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                result[order[k]] = (i + j) / 2
            i = j + 1
        return result
    if len(x) < 3:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    spread = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / spread if spread else None


def run(args, home: Path) -> dict:
    from rlhf import pipeline
    from rlhf.config import ModelConfig, RewardTrainConfig, SamplingConfig
    from rlhf.generate import generate_candidates, read_prompts_file, starter_prompts
    from rlhf.judges import annotate
    from rlhf.models import load_model
    from rlhf.reward import RewardModel
    from rlhf.store import Store

    train_prompts, held_out, candidates, unseen_per_prompt, tokens = (
        starter_prompts(), read_prompts_file(HELD_OUT_PROMPTS), 4, 8, 64)
    if args.quick:
        train_prompts, held_out, candidates, unseen_per_prompt, tokens = (
            train_prompts[:16], held_out[:8], 3, 3, 16)
    shared = Clock()
    loaded = load_model(ModelConfig(spec="bundled"))
    base = Store.open("candidates", create=True)
    shared.time("generate", generate_candidates, base, loaded, train_prompts,
                SamplingConfig(num_candidates=candidates, max_new_tokens=tokens, seed=0), source="benchmark")
    unseen_store = Store.open("unseen", create=True)
    unseen_run = shared.time("generate_unseen", generate_candidates, unseen_store, loaded, held_out,
                             SamplingConfig(num_candidates=unseen_per_prompt, max_new_tokens=tokens, seed=1),
                             source="benchmark")
    del loaded
    unseen = unseen_store.completions(run_id=unseen_run.run_id)
    report = {"run": run_label(), "arms": args.arms, "quick": args.quick, "stages_s": shared.stages,
              "unseen": {"prompts": len(held_out), "answers_per_prompt": unseen_per_prompt}, "rules": {}}
    for name in args.rules:
        rule = RULES[name]
        print(f"\n== {name} ({rule.kind}): {rule.guidelines}", flush=True)
        row = report["rules"][name] = {"kind": rule.kind, "arms": {}}
        shutil.copytree(base.folder, home / name)
        store = Store.open(name)
        store.save_guidelines(rule.guidelines, author="benchmark")
        annotate(store, rule.judge, f"judge:{rule.name}", seed=0)
        row["votes"] = {choice: sum(v["choice"] == choice for v in store.votes())
                        for choice in ("a", "b", "tie", "both_bad")}
        for arm, overrides in args.arms.items():
            print(f"-- {name} / {arm}: {json.dumps(overrides)}", flush=True)
            clock = Clock()
            meta = clock.time("train_reward", pipeline.train_reward, store, RewardTrainConfig(**overrides), "bundled")
            scores = RewardModel.load(meta["path"]).score([c.prompt for c in unseen], [c.text for c in unseen])
            result = {"eval_accuracy": meta["metrics"]["eval_accuracy"],
                      "train_accuracy": meta["metrics"]["train_accuracy"],
                      "auditor_accuracy": (meta.get("audit") or {}).get("accuracy_on_reward_model_pairs"),
                      "pairs": meta["metrics"]["n_train"], "held_out_pairs": meta["metrics"]["n_eval"],
                      "ties": meta["metrics"].get("n_ties", 0), "steps": meta["metrics"]["steps"],
                      **ranking_agreement(rule, [c.prompt for c in unseen], [c.text for c in unseen],
                                          scores.tolist()),
                      "train_s": clock.stages["train_reward"]}
            row["arms"][arm] = result
            print(json.dumps(result), flush=True)
            shutil.rmtree(meta["path"], ignore_errors=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def print_table(report: dict) -> None:
    print(f"\n{'rule':<16} {'arm':<16} {'held-out':>8} {'auditor':>7} {'unseen':>6} {'+-':>5} {'rho':>5} "
          f"{'rows':>9} {'train s':>7}")
    for name, row in report["rules"].items():
        for arm, r in row["arms"].items():
            print(f"{name:<16} {arm:<16} {r['eval_accuracy'] or 0:>8.2f} {r['auditor_accuracy'] or 0:>7.2f} "
                  f"{r['unseen_pair_accuracy'] or 0:>6.2f} {r['unseen_pair_accuracy_se'] or 0:>5.2f} "
                  f"{r['unseen_spearman'] or 0:>5.2f} {r['pairs']:>4}+{r['ties']:<4} {r['train_s']:>7.0f}")


if __name__ == "__main__":
    sys.exit(side_by_side(__doc__.split("\n\n")[0], "reward_variants", "RewardTrainConfig overrides", "16 prompts, 8 held out, 16 tokens", run, print_table))
