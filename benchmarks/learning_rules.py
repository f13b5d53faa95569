"""Does a round at the project's defaults teach the policy what the annotators prefer? Six kinds of preference.

For each scripted annotator rule of `benchmarks/rules.py` (four chose the defaults, two are held out), one RLHF round
on the bundled SmolLM2-135M-Instruct, through the same library calls as `python -m rlhf` and the Train tab
(`rlhf.pipeline`), with the defaults:

1. generate: the 64 starter prompts x 4 candidates, 64 new tokens, seed 0 (sampled once: the candidates do not depend
   on the rule; each rule's project starts from a copy and the stage's time is counted in every rule's round);
2. annotate: the rule's judge votes on every pair (6 a prompt, in random left/right order);
3. train-reward (defaults: LoRA, one head, an auditor trained on the held-out 20% of the pairs only);
4. ppo (defaults), which ends with the app's own before/after evaluation;
5. the held-out test: the tuned policy against the base model on 32 prompts it never trained on
   (`benchmarks/heldout_prompts.txt`), judged by the rule itself, which neither the reward model nor the policy saw:
   score = win + tie / 2 (0.5: no change), KL per answer, length, and the app's own verdict on the same answers
   (made from its auditor and drift detectors, without the judge);
6. dpo (defaults) on the same votes, the same held-out test;
7. on two rules (`--rloo-rules`), TRL 1.16's RLOOTrainer on the same reward (the same reward model with the same
   caution: clipped to the labelled range, answers unlike any labelled one scored as the worst) for PPO's wall time,
   then the same held-out test: the anchor. Reward-vs-time curves of both give the learning-speed comparison.

Goals (issue 11): every rule >= 0.80 at KL <= 8, none below the base model (0.5), the app's verdict agreeing with the
judge on every rule ("improved" exactly when the judge's score is >= 0.6), a round <= 20 minutes; DPO >= 0.70 at
KL <= 8 on every rule; PPO reaching RLOO's final reward in at most half RLOO's time at no higher KL.

Writes benchmarks/results/learning_rules.json (one entry per rule: `score`, `kl`, ... and `dpo_*`, `rloo_*` keys) and
prints the table. Run it alone on the machine (its times are measurements), e.g.

    flock /tmp/rlhf-bench.lock .venv/bin/python benchmarks/learning_rules.py
    .venv/bin/python benchmarks/learning_rules.py --quick      # the script itself in a few minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from the repo: rlhf is not an installed package
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RLHF_MODEL_CACHE", str(REPO_ROOT / ".cache" / "test-models-v1"))

from benchmarks.rules import HELD_OUT_RULES, RULES, TUNING_RULES  # noqa: E402

HELD_OUT_PROMPTS = REPO_ROOT / "benchmarks" / "heldout_prompts.txt"
SCORE_GOAL, KL_GOAL, DPO_SCORE_GOAL, ROUND_GOAL_S = 0.80, 8.0, 0.70, 20 * 60
IMPROVED_AT = 0.6
"""The judge says "improved" at a score of at least this (the app's verdict uses the same threshold)."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", default=",".join(TUNING_RULES + HELD_OUT_RULES),
                        help="comma-separated rule names (default: all six)")
    parser.add_argument("--rloo-rules", default="concise,names_subject",
                        help="rules that also get the RLOO anchor (default: concise,names_subject)")
    parser.add_argument("--dpo-rules", default=None,
                        help="rules that also get DPO (default: every rule run; an empty string: none)")
    parser.add_argument("--ppo-rules", default=None,
                        help="rules that get the PPO round (default: every rule run; an empty string: none, e.g. to "
                             "measure DPO alone with --update)")
    parser.add_argument("--update", action="store_true",
                        help="merge into the existing report: the rules run replace what they measured, the rest "
                             "stays, and each row says which run measured each part")
    parser.add_argument("--quick", action="store_true",
                        help="check the script: 16 prompts, 3 candidates, 16 tokens, 2 PPO steps, 8 held-out prompts")
    parser.add_argument("--ppo", default="{}", help='PPOConfig overrides as JSON (default: none: the defaults)')
    parser.add_argument("--dpo", default="{}", help='DPOTrainConfig overrides as JSON (default: none: the defaults)')
    parser.add_argument("--keep", action="store_true", help="keep the data directory and say where")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report (default: benchmarks/results/learning_rules.json; --quick: a .tmp file)")
    args = parser.parse_args()
    args.rules = [r for r in args.rules.split(",") if r]
    args.rloo_rules = [r for r in args.rloo_rules.split(",") if r]
    args.dpo_rules = args.rules if args.dpo_rules is None else [r for r in args.dpo_rules.split(",") if r]
    args.ppo_rules = args.rules if args.ppo_rules is None else [r for r in args.ppo_rules.split(",") if r]
    if set(args.rloo_rules) - set(args.ppo_rules):
        parser.error("--rloo-rules: the RLOO anchor runs for PPO's wall time; give those rules the PPO round too")
    for name in args.rules + args.rloo_rules + args.dpo_rules + args.ppo_rules:
        if name not in RULES:
            parser.error(f"unknown rule {name!r}; known: {', '.join(RULES)}")
    if args.out is None:
        name = "learning_rules.quick.tmp" if args.quick else "learning_rules.json"
        args.out = REPO_ROOT / "benchmarks" / "results" / name
    return args


class Clock:
    def __init__(self):
        self.stages: dict[str, float] = {}

    def time(self, name: str, fn, *args, **kwargs):
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        self.stages[name] = round(time.perf_counter() - started, 1)
        print(f"  {name}: {self.stages[name]:.1f} s", flush=True)
        return result


def main() -> int:
    args = parse_args()
    home = Path(tempfile.mkdtemp(prefix="rlhf-bench-rules-"))
    os.environ["RLHF_HOME"] = str(home)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    earlier = json.loads(args.out.read_text()) if args.update and args.out.is_file() else None

    def write(report: dict) -> None:  # after every rule: a long run stopped early keeps the rules it finished
        if earlier is not None:
            report = merged(earlier, report)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    try:
        report = run(args, home, write)
    finally:
        if args.keep:
            print(f"data directory kept: {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)
    print_table(merged(earlier, report) if earlier is not None else report)
    print(f"wrote {args.out}")
    return 0


def side_by_side(description: str, report_name: str, arms_help: str, quick_help: str, run, print_table) -> int:
    """The command line of the side-by-side benchmarks (ppo_variants.py, reward_variants.py): parse --rules, --arms,
    --quick and --out, call `run(args, home)` in a temporary data directory that is removed afterwards (the report
    is written as it goes), print the table."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rules", required=True, help="comma-separated rule names")
    parser.add_argument("--arms", required=True, help=f"JSON {{arm name: {arms_help}}}, run in this order")
    parser.add_argument("--quick", action="store_true", help=f"check the script: {quick_help}")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON report (default: benchmarks/results/{report_name}.json; --quick: a .tmp file)")
    args = parser.parse_args()
    args.rules = [r for r in args.rules.split(",") if r]
    args.arms = json.loads(args.arms)
    unknown = [r for r in args.rules if r not in RULES]
    if unknown:
        parser.error(f"unknown rule(s) {unknown}; known: {', '.join(RULES)}")
    if args.out is None:
        args.out = REPO_ROOT / "benchmarks" / "results" / f"{report_name}.{'quick.tmp' if args.quick else 'json'}"
    home = Path(tempfile.mkdtemp(prefix=f"rlhf-bench-{report_name}-"))
    os.environ["RLHF_HOME"] = str(home)
    try:
        report = run(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print_table(report)
    print(f"wrote {args.out}")
    return 0


def run_label() -> str:
    """When and at which commit a run measured (a row may hold parts measured by different runs)."""
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                           capture_output=True, text=True).stdout.strip()
    return f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, commit {commit.stdout.strip()}{'+edits' if dirty else ''}"


PARTS = {"ppo": lambda key: not key.startswith(("dpo_", "rloo_", "speed")), "dpo": lambda key: key.startswith("dpo_"),
         "rloo": lambda key: key.startswith(("rloo_", "speed"))}


def merged(earlier: dict, report: dict) -> dict:
    """`report`'s rules over `earlier`'s: each part (ppo, dpo, rloo) a rule's new row measured replaces that part of
    its old row; parts it did not measure stay, with the label of the run that measured them (`measured_by`)."""
    rules = {name: dict(row) for name, row in earlier.get("rules", {}).items()}
    for name, row in rules.items():
        row.setdefault("measured_by", {part: earlier["settings"].get("run", "an earlier run") for part in PARTS
                                       if any(PARTS[part](key) for key in row if key != "measured_by")})
    for name, row in report["rules"].items():
        old = rules.get(name, {"measured_by": {}})
        for part in row["measured_by"]:
            old = {key: value for key, value in old.items() if key == "measured_by" or not PARTS[part](key)}
        rules[name] = {**old, **{k: v for k, v in row.items() if k != "measured_by"},
                       "measured_by": {**old["measured_by"], **row["measured_by"]}}
    runs = [*earlier["settings"].get("runs", [earlier["settings"]]), report["settings"]]
    return {**report, "settings": {**report["settings"], "runs": runs}, "rules": rules, "goals": goals(rules)}


def run(args, home: Path, write) -> dict:
    import torch

    from rlhf.config import DPOTrainConfig, ModelConfig, PPOConfig, SamplingConfig
    from rlhf.generate import generate_candidates, read_prompts_file, starter_prompts
    from rlhf.models import load_model
    from rlhf.store import Store

    train_prompts = starter_prompts()
    held_out = read_prompts_file(HELD_OUT_PROMPTS)
    candidates, tokens = 4, 64
    ppo_overrides, dpo_overrides = json.loads(args.ppo), json.loads(args.dpo)
    if args.quick:
        train_prompts, held_out, candidates, tokens = train_prompts[:16], held_out[:8], 3, 16
        ppo_overrides = {"steps": 2, **ppo_overrides}
    sampling = SamplingConfig(num_candidates=candidates, max_new_tokens=tokens, seed=0)
    evaluation_sampling = SamplingConfig(num_candidates=1, max_new_tokens=tokens, temperature=0.7, top_p=1.0, seed=0)

    print("== generate (shared by every rule)", flush=True)
    shared = Clock()
    base = Store.open("candidates", create=True)
    shared.time("generate", lambda: generate_candidates(base, load_model(ModelConfig(spec="bundled")), train_prompts,
                                                          sampling, source="benchmark"))

    def report(results: dict) -> dict:
        """The whole report so far."""
        return {
            "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                        "torch_threads": torch.get_num_threads()},
            "settings": {
                "train_prompts": len(train_prompts), "held_out_prompts": len(held_out), "candidates": candidates,
                "max_new_tokens": tokens, "quick": args.quick, "ppo_overrides": ppo_overrides,
                "dpo_overrides": dpo_overrides, "dpo_config": dataclasses.asdict(DPOTrainConfig(**dpo_overrides)),
                "ppo_config": dataclasses.asdict(PPOConfig(**ppo_overrides)),
                "tuning_rules": list(TUNING_RULES), "held_out_rules": list(HELD_OUT_RULES),
                "score": "win + tie / 2 of the tuned policy against the base model under the rule's judge, held-out "
                         "prompts; the judge's verdict is 'improved' at >= 0.6",
                "run": label, "rules_run": args.rules, "ppo_rules": args.ppo_rules, "dpo_rules": args.dpo_rules,
                "rloo_rules": args.rloo_rules,
            },
            "rules": results,
            "goals": goals(results),
        }

    label = run_label()
    results = {}
    for name in args.rules:
        rule = RULES[name]
        print(f"\n== {name} ({rule.kind}): {rule.guidelines}", flush=True)
        gc.collect()
        parts = {"ppo": name in args.ppo_rules, "dpo": name in args.dpo_rules, "rloo": name in args.rloo_rules}
        results[name] = run_rule(rule, base, home, shared.stages["generate"], held_out, evaluation_sampling,
                                 ppo_overrides, dpo_overrides, parts)
        results[name]["measured_by"] = {part: label for part, done in parts.items() if done}
        print(json.dumps({k: v for k, v in results[name].items() if not isinstance(v, (dict, list))}), flush=True)
        write(report(results))
    return report(results)


def run_rule(rule, base, home: Path, generate_s: float, held_out: list[str], evaluation_sampling, ppo_overrides: dict,
             dpo_overrides: dict, parts: dict[str, bool]) -> dict:
    from rlhf import pipeline
    from rlhf.config import DPOTrainConfig, RewardTrainConfig
    from rlhf.judges import annotate
    from rlhf.store import Store

    shutil.copytree(base.folder, home / rule.name)
    store = Store.open(rule.name)
    store.save_guidelines(rule.guidelines, author="benchmark")
    clock = Clock()
    clock.time("annotate", annotate, store, rule.judge, f"judge:{rule.name}", seed=0)
    reward = clock.time("train_reward", pipeline.train_reward, store, RewardTrainConfig(), "bundled")
    reward_figures = {"eval_accuracy": reward["metrics"]["eval_accuracy"],
                      "auditor_accuracy": (reward.get("audit") or {}).get("accuracy_on_reward_model_pairs")}
    row: dict = {"kind": rule.kind, "held_out_rule": rule.name in HELD_OUT_RULES}
    if parts["ppo"]:
        row.update(ppo_round(store, rule, clock, generate_s, held_out, evaluation_sampling, ppo_overrides))
        row["reward_model"] = reward_figures
    if parts["dpo"]:
        dpo = clock.time("dpo", pipeline.train_policy, store, "dpo", DPOTrainConfig(**dpo_overrides), "bundled")
        dpo_test = held_out_test(store, dpo["path"], held_out, rule, evaluation_sampling)
        row.update({"dpo_score": dpo_test["judged"]["score"], "dpo_kl": dpo_test["kl"],
                    "dpo_verdict": dpo_test["verdict"], "dpo_length": dpo_test["length_tuned"],
                    "dpo_s": clock.stages["dpo"], "dpo_steps": dpo["metrics"]["steps"],
                    "dpo_pairs": dpo["metrics"]["n_pairs"], "dpo_selected_step": dpo["selected_step"],
                    "dpo_selected_scale": dpo.get("selected_scale", 1.0),
                    "dpo_selected_by": dpo["selected_by"], "dpo_kl_budget_stop": dpo.get("kl_budget_stop"),
                    "dpo_checks": dpo.get("checks"), "dpo_reward_model": reward_figures,
                    "dpo_examples": dpo_test["examples"][:3]})
    if parts["rloo"]:
        budget = clock.stages["ppo"]
        rloo = run_rloo(store, reward["id"], budget, row["ppo_config"])
        rloo_test = compare_rloo(rloo["model"], held_out, rule, evaluation_sampling, reward)
        row.update({"rloo_score": rloo_test["judged"]["score"], "rloo_kl": rloo_test["kl"],
                    "rloo_verdict": rloo_test["verdict"], "rloo_length": rloo_test["length_tuned"],
                    "rloo_s": rloo["seconds"], "rloo_curve": rloo["curve"]})
        row["speed"] = speed_comparison(row["curve"], rloo["curve"])
    row.pop("ppo_config", None)
    return row


def ppo_round(store, rule, clock, generate_s: float, held_out: list[str], evaluation_sampling,
              ppo_overrides: dict, reward_function: str | None = None) -> dict:
    """PPO at the defaults (on the newest reward model, or a Python `reward_function`) and the held-out test of what
    it published: the round's PPO part of the row."""
    from rlhf import pipeline
    from rlhf.config import PPOConfig

    steps: list[dict] = []
    ppo = clock.time("ppo", pipeline.train_policy, store, "ppo", PPOConfig(**ppo_overrides), "bundled",
                     reward_function=reward_function, on_step=lambda result: steps.append(result.metrics))
    round_s = generate_s + sum(seconds for stage, seconds in clock.stages.items() if stage != "dpo")
    test = held_out_test(store, ppo["path"], held_out, rule, evaluation_sampling)
    return {
        "score": test["judged"]["score"], "kl": test["kl"], "verdict": test["verdict"],
        "judge_verdict": judge_verdict(test["judged"]["score"]),
        "verdict_agrees": (test["verdict"] == "improved") == (test["judged"]["score"] >= IMPROVED_AT),
        "length_tuned": test["length_tuned"], "length_reference": test["length_reference"],
        "auditor_score": (test["held_out"] or {}).get("score"),
        "optimised_reward_score": (test["optimised_reward"] or {}).get("score"),
        "drift_flags": test["drift"]["flags"],
        "round_s": round(round_s, 1), "stages_s": {"generate": generate_s, **clock.stages},
        "ppo": {"steps_done": ppo["steps_done"], "selected_step": ppo["selected_step"],
                "selected_by": ppo["selected_by"], "kl_guard": ppo.get("kl_guard"),
                "reward_trend": ppo.get("reward_trend"),
                "app_evaluation_verdict": (ppo.get("evaluation") or {}).get("verdict")},
        "curve": [{"step": m["step"], "t": m["time/step_s"], "score": m["objective/scores"],
                   "kl": m["objective/kl"], "audit": m.get("audit/scores"), "audit_gain": m.get("audit/gain"),
                   "audit_evidence": m.get("audit/evidence")} for m in steps],
        "examples": test["examples"][:3],
        "ppo_config": ppo["config"],
    }


def held_out_test(store, policy_path: str, prompts: list[str], rule, sampling) -> dict:
    from rlhf.pipeline import evaluate

    return evaluate(store, policy_path, prompts=prompts, judge=rule.judge, sampling=sampling, save=False)


def judge_verdict(score: float) -> str:
    return "improved" if score >= IMPROVED_AT else "worse" if score <= 1 - IMPROVED_AT else "no clear change"


def run_rloo(store, reward_id: str, budget_s: float, ppo_config: dict) -> dict:
    """TRL's RLOOTrainer on the PPO run's reward, for `budget_s` seconds of training: returns the merged model and the
    reward-vs-time curve (the same cautious reward PPO optimised)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    from rlhf.config import ModelConfig, PPOConfig
    from rlhf.generate import chat_messages
    from rlhf.models import load_model
    from rlhf.ppo import resolve_reward

    config = PPOConfig(**{k: v for k, v in ppo_config.items() if k in {f.name for f in dataclasses.fields(PPOConfig)}})
    reward = resolve_reward(store, config, reward_id)
    loaded = load_model(ModelConfig(spec="bundled"))
    prompts = [p.text for p in store.prompts()]
    dataset = Dataset.from_list([{"prompt": chat_messages(p)} for p in prompts])
    scores: list[float] = []

    def reward_model(prompts, completions, **kwargs) -> list[float]:
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        users = [p[-1]["content"] if isinstance(p, list) else p for p in prompts]
        values = reward.fn(users, texts).scores.tolist()
        scores.append(sum(values) / len(values))
        return values

    reward_model.__name__ = "reward_model"
    clock: dict = {}
    curve: list[dict] = []

    class Budget(TrainerCallback):
        def on_train_begin(self, args_, state, control, **kwargs):
            clock["start"] = time.perf_counter()

        def on_step_end(self, args_, state, control, **kwargs):
            if time.perf_counter() - clock["start"] >= budget_s:
                control.should_training_stop = True

        def on_log(self, args_, state, control, logs=None, **kwargs):
            if logs and "kl" in logs:
                curve.append({"step": state.global_step, "t": round(time.perf_counter() - clock["start"], 1),
                              "score": scores[-1], "kl": logs["kl"] * logs["completions/mean_length"]})

    args = RLOOConfig(
        output_dir=str(Path(store.folder) / "rloo"), report_to="none", save_strategy="no", logging_steps=1, seed=0,
        use_cpu=not torch.cuda.is_available(), bf16=loaded.dtype == torch.bfloat16, gradient_checkpointing=False,
        disable_dropout=True, per_device_train_batch_size=config.batch_size, num_generations=4,
        max_completion_length=config.max_new_tokens, temperature=config.temperature, top_p=1.0, top_k=0,
        learning_rate=config.lr, beta=config.kl_coef, max_steps=1_000_000, max_grad_norm=config.max_grad_norm,
        disable_tqdm=True,
    )
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = RLOOTrainer(model=loaded.model, reward_funcs=reward_model, args=args, train_dataset=dataset,
                          processing_class=loaded.tokenizer, peft_config=lora, callbacks=[Budget()])
    started = time.perf_counter()
    trainer.train()
    seconds = round(time.perf_counter() - started, 1)
    loaded.model = trainer.model.merge_and_unload().eval()
    return {"model": loaded, "seconds": seconds, "curve": curve}


def compare_rloo(tuned, prompts: list[str], rule, sampling, reward_meta: dict) -> dict:
    from rlhf.config import ModelConfig
    from rlhf.evaluate import compare_models
    from rlhf.models import load_model

    return compare_models(tuned, load_model(ModelConfig(spec="bundled")), prompts, judge=rule.judge,
                          reward_meta=reward_meta, sampling=sampling)


def speed_comparison(ppo_curve: list[dict], rloo_curve: list[dict], window: int = 3) -> dict:
    """When each method's smoothed training reward first reaches RLOO's final one, and the KL then."""
    def smoothed(curve: list[dict], clock_key: str) -> list[dict]:
        out, elapsed = [], 0.0
        for i, point in enumerate(curve):
            elapsed = point["t"] if clock_key == "elapsed" else elapsed + point["t"]
            chunk = curve[max(0, i - window + 1) : i + 1]
            out.append({"t": elapsed, "score": sum(c["score"] for c in chunk) / len(chunk),
                        "kl": sum(c["kl"] for c in chunk) / len(chunk)})
        return out

    ppo, rloo = smoothed(ppo_curve, "step"), smoothed(rloo_curve, "elapsed")
    if not ppo or not rloo:
        return {}
    target = rloo[-1]["score"]
    rloo_at = next(p for p in rloo if p["score"] >= target)
    ppo_at = next((p for p in ppo if p["score"] >= target), None)
    return {"rloo_final_score": target, "rloo_time_s": rloo_at["t"], "rloo_kl": rloo_at["kl"],
            "ppo_time_s": ppo_at["t"] if ppo_at else None, "ppo_kl": ppo_at["kl"] if ppo_at else None,
            "time_ratio": round(ppo_at["t"] / rloo_at["t"], 3) if ppo_at and rloo_at["t"] else None,
            "met": bool(ppo_at and rloo_at["t"] and ppo_at["t"] <= 0.5 * rloo_at["t"] and ppo_at["kl"] <= rloo_at["kl"])}


def goals(results: dict) -> dict:
    """Each goal over the rules measured for it (a run that measured one part leaves the others out)."""
    ppo = [r for r in results.values() if "score" in r]
    dpo = [r for r in results.values() if "dpo_score" in r]
    return {
        "every_rule_score_at_least_0.80_at_kl_8": all(r["score"] >= SCORE_GOAL and r["kl"] <= KL_GOAL for r in ppo),
        "none_below_base": all(r["score"] >= 0.5 for r in ppo),
        "verdict_agrees_with_judge": all(r["verdict_agrees"] for r in ppo),
        "round_at_most_20_min": all(r["round_s"] <= ROUND_GOAL_S for r in ppo),
        "dpo_at_least_0.70_at_kl_8": all(r["dpo_score"] >= DPO_SCORE_GOAL and r["dpo_kl"] <= KL_GOAL for r in dpo)
                                     if len(dpo) == len(results) else None,
        "ppo_twice_as_fast_as_rloo": [r["speed"].get("met") for r in results.values() if "speed" in r],
    }


def print_table(report: dict) -> None:
    print(f"\n{'rule':<16} {'kind':<24} {'score':>5} {'KL':>5} {'words':>11} {'verdict':<22} {'agrees':>6} "
          f"{'round':>6} {'dpo':>11} {'rloo':>11}")
    for name, r in report["rules"].items():
        dpo = f"{r['dpo_score']:.2f}/{r['dpo_kl']:.1f}" if "dpo_score" in r else "-"
        rloo = f"{r['rloo_score']:.2f}/{r['rloo_kl']:.1f}" if "rloo_score" in r else "-"
        if "score" not in r:  # DPO alone
            print(f"{name:<16} {r['kind']:<24} {'-':>5} {'-':>5} {'':>11} {'':<22} {'':>6} {'':>6} {dpo:>11} "
                  f"{rloo:>11}")
            continue
        print(f"{name:<16} {r['kind']:<24} {r['score']:>5.2f} {r['kl']:>5.1f} "
              f"{r['length_reference']:>4.0f}->{r['length_tuned']:<4.0f} {r['verdict']:<22} "
              f"{str(r['verdict_agrees']):>6} {r['round_s'] / 60:>5.1f}m {dpo:>11} {rloo:>11}")
    print("goals:", json.dumps(report["goals"]))


if __name__ == "__main__":
    sys.exit(main())
