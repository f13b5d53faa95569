"""Benchmark of LEARNING per wall-clock second: our PPO vs TRL's critic-free RLOOTrainer, same model, same reward.

Both methods train a LoRA adapter on the bundled SmolLM2-135M-Instruct, on the same prompts (`starter_prompts()`),
with the same programmatic reward (best at 20 words: `-abs(words - 20) / 10`, the one tests/test_ppo_learning.py
uses), the same sampling (temperature 0.7, full distribution, at most 48 new tokens) and a KL penalty to the frozen
base model. Each gets the same wall-clock budget (`--budget-s`), one after the other, never at the same time:

- "ppo": `rlhf.ppo.train_ppo` with PPOConfig's defaults (LoRA; a batch of 16 prompts, one answer each; 2 PPO epochs
  over minibatches of 8; lr 1e-3; kl_coef 0.05; a value head). The budget ends the run through its `stop` event.
- "rloo": TRL's `RLOOTrainer` (LoRA through `peft_config`, the same rank, alpha and target modules as ours; beta 0.05;
  4 answers per prompt, 16 answers per step, one gradient step per batch as TRL's defaults do; lr 1e-3 decayed
  linearly to 0 over the budget by the clock; no gradient checkpointing; bf16 autocast where ours uses bf16).

Both report, per step, against the wall-clock time since training started (model loading excluded):
- reward: the mean programmatic reward of the answers the step sampled, read by wrapping the function (so neither
  PPO's missing-EOS penalty nor the optional `--rloo-missing-eos-penalty` is in it);
- KL: nats per answer, the sum over the answer's tokens of logprob - ref_logprob (the k1 estimator both use), at the
  sampling temperature. Ours logs it per answer (`objective/kl`); TRL logs it per token (total KL / total tokens), so
  it is multiplied by the mean answer length of the same batch, which gives exactly total KL / answers.

It prints the time each needs to reach the other's final reward (curves smoothed by a trailing moving average of
`--smooth` points, i.e. the same number of sampled answers for both) and the KL there, the best reward each reached
within KL budgets (the reward-KL frontier), and checks the target: ours reaches RLOO's final reward in at most half
the time RLOO first reached it, at no higher KL than RLOO had then. Writes benchmarks/results/learning.json and a
plot, benchmarks/results/learning.png (needs matplotlib, a benchmark-only dependency: `pip install matplotlib`).
`--from-json FILE` redoes the comparison and the plot from a saved run without training.

Run it alone on the machine (it is a timing measurement), e.g.

    RLHF_MODEL_CACHE=.cache/test-models-v1 flock /tmp/rlhf-bench.lock .venv/bin/python benchmarks/learning.py
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TIME_RATIO_GOAL = 0.5
"""Ours should reach RLOO's final reward in at most this fraction of RLOO's time (at no higher KL)."""
KL_LIMITS = (5, 10, 15, 20)
"""KL budgets (nats per answer) at which the best reward each method reached is reported."""
RLOO_NUM_GENERATIONS = 4
RLOO_BATCH = 16
"""Answers per RLOO step (4 prompts x 4 answers): the same number of answers per step as our PPO batch."""
RLOO_BETA = 0.05
"""RLOO's KL coefficient: TRL's default, and the same as our kl_coef default (both a per-answer k1 penalty)."""


def twenty_words(prompt: str, response: str) -> float:
    """Best at exactly 20 words; the base model's answers run to the token limit (~40 words)."""
    return -abs(len(response.split()) - 20) / 10


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=600.0, help="wall-clock seconds of training for each method")
    parser.add_argument("--methods", default="ppo,rloo", help="comma-separated: ppo, rloo (both by default)")
    parser.add_argument("--ppo-steps", type=int, default=None,
                        help="PPOConfig.steps (its LR decays to 0 over them); default: PPOConfig's own default")
    parser.add_argument("--rloo-lr", type=float, default=1e-3, help="RLOO learning rate (LoRA)")
    parser.add_argument("--rloo-missing-eos-penalty", type=float, default=0.0,
                        help="subtract this from RLOO's training reward for answers that never end, as our PPO's "
                             "missing_eos_penalty does (default 0: RLOO trains on the plain reward); the reported "
                             "reward never includes it")
    parser.add_argument("--smooth", type=int, default=3, help="points in the trailing moving average")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "learning.json")
    parser.add_argument("--plot", type=Path, default=None, help="PNG path (default: the JSON path with .png)")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="train nothing: recompute the comparison and the plot from a saved run's points")
    args = parser.parse_args()
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(args.methods) - {"ppo", "rloo"}
    if unknown or not args.methods:
        parser.error(f"--methods: unknown {sorted(unknown)}; use ppo, rloo or both")
    args.plot = args.plot or args.out.with_suffix(".png")
    return args


def main() -> None:
    args = parse_args()
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        args.budget_s, args.smooth = report["settings"]["budget_s"], report["settings"]["smooth_points"]
        finish(args, report["machine"], report["settings"], report["runs"])
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(REPO_ROOT))  # run as a script from the repo, rlhf is not an installed package
    from rlhf.models import model_cache_dir

    # Keep using the model cache the environment points at (or the default one) while PPO's checkpoints go to a
    # temporary data directory that disappears with the run.
    os.environ["RLHF_MODEL_CACHE"] = str(model_cache_dir().resolve())
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-learning-") as tmp:
        os.environ["RLHF_HOME"] = tmp
        run(args, Path(tmp))


def machine_facts(device) -> dict:
    import peft
    import torch
    import transformers
    import trl

    from rlhf.models import cpu_supports_bf16

    return {
        "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
        "peft": peft.__version__, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu_supports_bf16": cpu_supports_bf16(), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def run(args: argparse.Namespace, tmp: Path) -> None:
    from rlhf.models import resolve_device

    device = resolve_device(args.device)
    machine = machine_facts(device)
    print("machine:", json.dumps(machine))
    runs = {}
    for method in args.methods:
        gc.collect()
        load_before = os.getloadavg()
        print(f"\n== {method}: training for {args.budget_s:.0f} s ==", flush=True)
        runs[method] = run_ppo(args, device) if method == "ppo" else run_rloo(args, device, tmp)
        runs[method]["loadavg_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
        summary = runs[method]["points"][-1] if runs[method]["points"] else {}
        print(f"{method}: {len(runs[method]['points'])} steps in {runs[method]['train_s']:.0f} s "
              f"({runs[method]['dtype']}); last step: reward {summary.get('reward')}, kl {summary.get('kl')}")
    settings = {
        "budget_s": args.budget_s, "smooth_points": args.smooth, "seed": args.seed,
        "reward": "-abs(len(response.split()) - 20) / 10 (mean over the step's sampled answers)",
        "kl": "nats per answer: sum over answer tokens of logprob - ref_logprob (k1), at the sampling temperature",
        "time": "wall-clock seconds since training started, at the end of each step (model loading excluded)",
        "prompts": "rlhf.generate.starter_prompts()",
        "lock": "run under `flock /tmp/rlhf-bench.lock` so that benchmarks run one at a time",
        "loadavg": "each point's `loadavg` is the 1-minute load average then: well above 2 means other work shared "
                   "the 2 cores and that step's time is inflated",
    }
    finish(args, machine, settings, runs)


def finish(args: argparse.Namespace, machine: dict, settings: dict, runs: dict) -> None:
    """Smooth the curves, compare, write the JSON and the plot, print the figures."""
    for result in runs.values():
        result["smoothed"] = smoothed_curves(result["points"], args.smooth, args.budget_s)
        result["final"] = result["smoothed"][-1] if result["smoothed"] else None
    comparison = compare(runs) if set(runs) == {"ppo", "rloo"} else None
    report = {"machine": machine, "settings": settings, "runs": runs, "comparison": comparison}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(runs, args.plot, args.budget_s, args.smooth)
    print_summary(runs, comparison)
    print(f"wrote {args.out} and {args.plot}")


# ---------------------------------------------------------------------------------------------------------------------
# The two runs
# ---------------------------------------------------------------------------------------------------------------------
def run_ppo(args: argparse.Namespace, device) -> dict:
    import torch

    from rlhf.config import PPOConfig
    from rlhf.generate import starter_prompts
    from rlhf.ppo import RewardSource, programmatic_reward, train_ppo
    from rlhf.store import Store

    config = PPOConfig(seed=args.seed)
    if args.ppo_steps is not None:
        config = dataclasses.replace(config, steps=args.ppo_steps)
    scored = programmatic_reward(twenty_words)
    raw_scores: list[float] = []

    def reward_fn(prompts, responses):  # the raw function's values, before PPO's missing-EOS penalty
        scores = scored(prompts, responses)
        raw_scores[:] = scores.tolist()
        return scores

    stop = threading.Event()
    points: list[dict] = []
    clock: dict = {}

    def on_step(result) -> None:
        now = time.perf_counter()
        m = result.metrics
        if "start" not in clock:  # training starts when the first step did: model loading is not counted
            clock["start"] = now - m["time/step_s"]
        elapsed = now - clock["start"]
        points.append({
            "step": result.step, "t": round(elapsed, 2),
            "reward": round(sum(raw_scores) / len(raw_scores), 4),
            "kl": round(m["objective/kl"], 4),
            "eos_rate": m["ppo/eos_rate"], "length": m["ppo/response_length"],
            "scores_with_eos_penalty": round(m["objective/scores"], 4), "kl_coef": m["objective/kl_coef"],
            "entropy": round(m["objective/entropy"], 3), "approxkl": m["ppo/policy/approxkl_avg"],
            "clipfrac": m["ppo/policy/clipfrac_avg"], "var_explained": m["ppo/val/var_explained"],
            "lr": m["ppo/lr"], "step_s": m["time/step_s"], "loadavg": round(os.getloadavg()[0], 2),
            "sample": result.samples[0]["response"][:200],
        })
        print(f"  ppo step {result.step:3d} t={elapsed:6.1f}s reward {points[-1]['reward']:+.3f} "
              f"kl {m['objective/kl']:6.2f} eos {m['ppo/eos_rate']:.2f} len {m['ppo/response_length']:.1f} "
              f"({m['time/step_s']:.1f} s/step)", flush=True)
        if elapsed >= args.budget_s:
            stop.set()

    store = Store.open("learning-bench", create=True)
    train_ppo(store, config, "bundled", RewardSource(reward_fn, "function:twenty_words"), prompts=starter_prompts(),
              on_step=on_step, stop=stop, device=args.device)
    from rlhf.models import resolve_dtype

    dtype = str(resolve_dtype("auto", device)).removeprefix("torch.")
    gc.collect()
    torch.cuda.empty_cache() if device.type == "cuda" else None
    return {
        "method": "ours: rlhf.ppo.train_ppo (PPO with a value head, LoRA)",
        "dtype": f"{dtype} base weights + fp32 LoRA, {dtype} autocast" if dtype != "float32" else "float32",
        "config": dataclasses.asdict(config),
        "answers_per_step": config.batch_size,
        "train_s": points[-1]["t"] if points else 0.0,
        "points": points,
    }


def run_rloo(args: argparse.Namespace, device, tmp: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    from rlhf.config import ModelConfig, PPOConfig
    from rlhf.generate import chat_messages, starter_prompts
    from rlhf.models import load_model

    ours = PPOConfig()  # the settings both must share: sampling, LoRA shape
    loaded = load_model(ModelConfig(spec="bundled", device=args.device))  # bf16 on GPU / CPUs with native bf16
    bf16 = loaded.dtype == torch.bfloat16
    dataset = Dataset.from_list([{"prompt": chat_messages(p)} for p in starter_prompts()])
    raw_means: list[float] = []  # the plain reward's mean, per call (one call per step: one generation per step)
    eos_ids = {loaded.tokenizer.eos_token_id}
    penalty = args.rloo_missing_eos_penalty

    def word_count_reward(completions, completion_ids=None, **kwargs) -> list[float]:
        values = [twenty_words("", c[0]["content"] if isinstance(c, list) else c) for c in completions]
        raw_means.append(sum(values) / len(values))
        if penalty and completion_ids is not None:  # TRL passes the ids, truncated after the first EOS
            values = [v - penalty * (not ids or ids[-1] not in eos_ids) for v, ids in zip(values, completion_ids)]
        return values

    word_count_reward.__name__ = "twenty_words"
    budget = args.budget_s
    clock: dict = {}
    points: list[dict] = []

    class Budget(TrainerCallback):
        """Timestamps every logged step and stops training once the budget is spent."""

        def on_train_begin(self, args_, state, control, **kwargs):
            clock["start"] = time.perf_counter()

        def on_step_end(self, args_, state, control, **kwargs):
            if time.perf_counter() - clock["start"] >= budget:
                control.should_training_stop = True

        def on_log(self, args_, state, control, logs=None, **kwargs):
            if not logs or "kl" not in logs:
                return
            elapsed = time.perf_counter() - clock["start"]
            length = logs["completions/mean_length"]
            points.append({
                "step": state.global_step, "t": round(elapsed, 2),
                "reward": round(raw_means[-1], 4),  # = rewards/twenty_words/mean when no penalty is added
                "logged_reward": logs["rewards/twenty_words/mean"],
                # TRL logs total KL / total answer tokens; times the mean answer length = total KL / answers.
                "kl": round(logs["kl"] * length, 4), "kl_per_token": logs["kl"],
                "eos_rate": round(1 - logs["completions/clipped_ratio"], 4), "length": length,
                "entropy_per_token": logs.get("entropy"), "clip_ratio": logs.get("clip_ratio/region_mean"),
                "lr": logs.get("learning_rate"), "step_s": logs.get("step_time"),
                "reward_std": logs.get("reward_std"), "loadavg": round(os.getloadavg()[0], 2),
            })
            p = points[-1]
            print(f"  rloo step {p['step']:3d} t={elapsed:6.1f}s reward {p['reward']:+.3f} kl {p['kl']:6.2f} "
                  f"eos {p['eos_rate']:.2f} len {length:.1f}", flush=True)

    class TimedRLOOTrainer(RLOOTrainer):
        """Learning rate decayed linearly to 0 over the wall-clock budget (the step count it fits is not known)."""

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                def by_clock(_step: int) -> float:
                    started = clock.get("start")
                    return 1.0 if started is None else max(0.0, 1 - (time.perf_counter() - started) / budget)

                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, by_clock)
            return self.lr_scheduler

    config = RLOOConfig(
        output_dir=str(tmp / "rloo"), report_to="none", save_strategy="no", logging_steps=1, seed=args.seed,
        use_cpu=device.type == "cpu", bf16=bf16, gradient_checkpointing=False, disable_dropout=True,
        per_device_train_batch_size=RLOO_BATCH, num_generations=RLOO_NUM_GENERATIONS, gradient_accumulation_steps=1,
        max_completion_length=ours.max_new_tokens, temperature=ours.temperature, top_p=1.0, top_k=0,
        learning_rate=args.rloo_lr, beta=RLOO_BETA, max_steps=1_000_000,  # the budget callback ends the run
        max_grad_norm=ours.max_grad_norm, dataloader_num_workers=0,
    )
    lora = LoraConfig(r=ours.lora_r, lora_alpha=ours.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = TimedRLOOTrainer(model=loaded.model, reward_funcs=word_count_reward, args=config,
                               train_dataset=dataset, processing_class=loaded.tokenizer, peft_config=lora,
                               callbacks=[Budget()])
    trainer.train()
    dtype = str(loaded.dtype).removeprefix("torch.")
    del trainer, loaded
    gc.collect()
    return {
        "method": "TRL RLOOTrainer (critic-free, leave-one-out baseline, LoRA via peft_config)",
        "dtype": f"{dtype} base weights + fp32 LoRA, bf16 autocast (bf16=True)" if bf16 else "float32",
        "config": {
            "num_generations": RLOO_NUM_GENERATIONS, "per_device_train_batch_size": RLOO_BATCH,
            "learning_rate": args.rloo_lr, "lr_schedule": "linear to 0 over the wall-clock budget",
            "beta": RLOO_BETA, "max_completion_length": ours.max_new_tokens, "temperature": ours.temperature,
            "top_p": 1.0, "top_k": 0, "num_iterations": 1, "lora_r": ours.lora_r, "lora_alpha": ours.lora_alpha,
            "gradient_checkpointing": False, "bf16": bf16, "max_grad_norm": ours.max_grad_norm,
            "missing_eos_penalty": penalty,
        },
        "answers_per_step": RLOO_BATCH,
        "train_s": points[-1]["t"] if points else 0.0,
        "points": points,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Curves and comparison
# ---------------------------------------------------------------------------------------------------------------------
def smoothed_curves(points: list[dict], window: int, budget_s: float) -> list[dict]:
    """Trailing moving average of reward and KL over `window` steps, for the steps that ended within the budget."""
    inside = [p for p in points if p["t"] <= budget_s] or points[:1]
    out = []
    for i, p in enumerate(inside):
        chunk = inside[max(0, i - window + 1) : i + 1]
        out.append({
            "step": p["step"], "t": p["t"],
            "reward": round(sum(c["reward"] for c in chunk) / len(chunk), 4),
            "kl": round(sum(c["kl"] for c in chunk) / len(chunk), 4),
            "eos_rate": round(sum(c["eos_rate"] for c in chunk) / len(chunk), 4),
            "full_window": len(chunk) == window,
        })
    return out


def time_to_reach(smoothed: list[dict], reward: float) -> dict | None:
    """The first smoothed point whose reward is at least `reward`, or None if the curve never gets there.

    Points whose window is not full yet (the first steps) are skipped: one lucky batch is not "reached".
    """
    for i, p in enumerate(smoothed):
        if (p["full_window"] or i == len(smoothed) - 1) and p["reward"] >= reward:
            return p
    return None


def compare(runs: dict) -> dict:
    result = {}
    for method, other in (("ppo", "rloo"), ("rloo", "ppo")):
        final = runs[other]["final"]
        # The other's own time to its final reward is when its smoothed curve first got there (a method that
        # plateaued early gets credit for it), and its KL is the KL it had then.
        target = time_to_reach(runs[other]["smoothed"], final["reward"])
        reached = time_to_reach(runs[method]["smoothed"], final["reward"])
        result[f"{method}_reaches_{other}_final"] = {
            "target_reward": final["reward"], f"{other}_end_s": final["t"],
            f"{other}_time_s": target["t"], f"{other}_kl": target["kl"],
            "reached": reached is not None,
            "time_s": reached["t"] if reached else None, "step": reached["step"] if reached else None,
            "kl": reached["kl"] if reached else None,
            "time_ratio": round(reached["t"] / target["t"], 3) if reached and target["t"] else None,
        }
    ours = result["ppo_reaches_rloo_final"]
    time_met = ours["reached"] and ours["time_ratio"] <= TIME_RATIO_GOAL
    kl_met = ours["reached"] and ours["kl"] <= ours["rloo_kl"]
    result["goal"] = {
        "goal": f"ours reaches RLOO's final smoothed reward in <= {TIME_RATIO_GOAL} x the time RLOO first reached "
                "it, at a KL no higher than RLOO's KL then",
        "time_ratio": ours["time_ratio"], "time_met": bool(time_met),
        "kl_ours": ours["kl"], "kl_rloo": ours["rloo_kl"], "kl_met": bool(kl_met),
        "met": bool(time_met and kl_met),
    }
    result["finals"] = {m: runs[m]["final"] for m in ("ppo", "rloo")}
    result["best_reward_at_kl"] = {
        f"kl<={limit}": {m: best_reward_within_kl(runs[m]["smoothed"], limit) for m in ("ppo", "rloo")}
        for limit in KL_LIMITS
    }
    return result


def best_reward_within_kl(smoothed: list[dict], limit: float) -> float | None:
    """The best smoothed reward among the points whose smoothed KL is at most `limit`: the reward-KL frontier."""
    rewards = [p["reward"] for p in smoothed if p["full_window"] and p["kl"] <= limit]
    return max(rewards) if rewards else None


def print_summary(runs: dict, comparison: dict | None) -> None:
    print()
    for method, result in runs.items():
        final = result["final"]
        if final:
            print(f"{method} ({result['dtype']}): final (smoothed, t={final['t']:.0f} s, step {final['step']}) "
                  f"reward {final['reward']:+.3f}, KL {final['kl']:.2f} nats/answer, EOS rate {final['eos_rate']:.2f}")
    if comparison is None:
        return
    for key, row in comparison.items():
        if not key.endswith("_final"):
            continue
        method, other = key.split("_reaches_")[0], key.split("_reaches_")[1].removesuffix("_final")
        if row["reached"]:
            print(f"{method} reaches {other}'s final reward {row['target_reward']:+.3f} at t={row['time_s']:.0f} s "
                  f"(step {row['step']}, KL {row['kl']:.2f}); {other} took {row[f'{other}_time_s']:.0f} s "
                  f"(KL {row[f'{other}_kl']:.2f}): ratio {row['time_ratio']}")
        else:
            print(f"{method} never reaches {other}'s final reward {row['target_reward']:+.3f}")
    for limit, row in comparison["best_reward_at_kl"].items():
        print(f"best smoothed reward at {limit} nats: " + ", ".join(
            f"{m} {'-' if v is None else f'{v:+.3f}'}" for m, v in row.items()))
    goal = comparison["goal"]
    print(f"goal: time ratio {goal['time_ratio']} (<= {TIME_RATIO_GOAL}: {'met' if goal['time_met'] else 'NOT met'}), "
          f"KL {goal['kl_ours']} vs {goal['kl_rloo']} ({'met' if goal['kl_met'] else 'NOT met'}): "
          f"{'met' if goal['met'] else 'NOT met'}")


def plot(runs: dict, path: Path, budget_s: float, window: int) -> None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is missing: no plot (pip install matplotlib; a benchmark-only dependency)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"ppo": "tab:blue", "rloo": "tab:orange"}
    labels = {"ppo": "ours: PPO", "rloo": "TRL RLOO"}
    fig, (ax_reward, ax_kl) = plt.subplots(1, 2, figsize=(12, 4.5))
    for method, result in runs.items():
        raw, smooth = result["points"], result["smoothed"]
        for ax, key in ((ax_reward, "reward"), (ax_kl, "kl")):
            ax.plot([p["t"] for p in raw], [p[key] for p in raw], color=colours[method], alpha=0.3, lw=1,
                    marker="o", ms=2.5)
            ax.plot([p["t"] for p in smooth], [p[key] for p in smooth], color=colours[method], lw=2,
                    label=f"{labels[method]} ({result['dtype'].split(' ')[0]}, moving average of {window})")
    ax_reward.set(title="Reward (mean over sampled answers; best 0)", xlabel="wall-clock seconds",
                  ylabel="-|words - 20| / 10")
    ax_kl.set(title="KL to the reference", xlabel="wall-clock seconds", ylabel="nats per answer")
    for ax in (ax_reward, ax_kl):
        ax.axvline(budget_s, color="grey", ls=":", lw=1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("SmolLM2-135M + LoRA, word-count reward, same prompts, same wall-clock budget")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
