"""One full RLHF round with default settings, through the CLI as a user runs it: does it move the policy, how long it takes.

Every stage is `python -m rlhf ...` in a subprocess, in a fresh data directory (RLHF_HOME, a temporary folder):
1. `projects --create round`
2. `generate --prompts rlhf/assets/starter_prompts.txt --num-candidates 4 --max-new-tokens 64 --seed 0`
   (64 prompts x 4 candidates = 6 pairs a prompt, 384 pairs)
3. `annotate --judge JUDGE`: a scripted judge with a consistent, learnable preference (the answer whose word count is
   closer to 25 wins; equal distances are a tie), written by this script to a file; it votes on every pair
4. `stats --json` (the label distribution; cheap)
5. `train-reward` with its defaults
6. `ppo` with its defaults (plus `--ppo-args`, none by default)
7. `evaluate --policy latest --judge JUDGE`: win/tie/loss under the same judge, and, since a reward model exists, its
   mean scores of the tuned and the reference answers, KL and lengths
8. `evaluate --policy latest` without a judge: the newest reward model decides (same seed, so the same answers)

Reports each stage's wall time (process start to exit: imports and model loading included, as a user waits for it),
the reward model's held-out accuracy (its meta.json), PPO's first and last step (objective/scores, objective/kl,
ppo/eos_rate, response length; from metrics.jsonl in the PPO checkpoint) and the evaluations. Prints a table and
writes benchmarks/results/round.json.

Takes ~20 minutes on 2 CPU cores; shares the machine politely with other benchmarks when run under their lock:

    flock /tmp/rlhf-bench.lock .venv/bin/python benchmarks/round.py [--keep] [--ppo-args "--steps 60 --lr 5e-4"]
    .venv/bin/python benchmarks/round.py --quick     # the script itself in ~2 minutes: 8 prompts, 2 PPO steps
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTER_PROMPTS = REPO_ROOT / "rlhf" / "assets" / "starter_prompts.txt"
DEFAULT_MODEL_CACHE = REPO_ROOT / ".cache" / "test-models-v1"
PROJECT = "round"
TARGET_WORDS = 25
"""The judge prefers the answer whose word count is closer to this."""

JUDGE_SOURCE = f'''"""Scripted judge of benchmarks/round.py: the answer whose word count is closer to {TARGET_WORDS} wins."""

TARGET_WORDS = {TARGET_WORDS}


def closer_to_target(prompt, a, b):
    distance_a = abs(len(a.split()) - TARGET_WORDS)
    distance_b = abs(len(b.split()) - TARGET_WORDS)
    if distance_a == distance_b:
        return "tie"
    return "a" if distance_a < distance_b else "b"
'''


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="check the script at a tiny scale: 8 prompts, 3 candidates, 16 new tokens, 2 PPO steps "
                             "(writes benchmarks/results/round.quick.tmp unless --out is given)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory (RLHF_HOME) and say where")
    parser.add_argument("--ppo-args", default="",
                        help='extra arguments for `ppo`, e.g. "--steps 60 --kl-coef 0.1" (default: none, the defaults)')
    parser.add_argument("--model-cache", default=None,
                        help=f"RLHF_MODEL_CACHE for every stage (default: $RLHF_MODEL_CACHE, else {DEFAULT_MODEL_CACHE}, "
                             "where the bundled model is already converted)")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default: benchmarks/results/round.json)")
    args = parser.parse_args()
    if args.out is None:
        args.out = REPO_ROOT / "benchmarks" / "results" / ("round.quick.tmp" if args.quick else "round.json")
    return args


class StageFailed(Exception):
    pass


def run_stage(name: str, cli_args: list[str], env: dict, log_dir: Path) -> dict:
    """Run `python -m rlhf CLI_ARGS`; its stderr goes live to ours (progress) and, with stdout, to log files.

    Returns {seconds, stdout, stderr}; raises StageFailed (with the CLI's last lines) on a non-zero exit."""
    command = [sys.executable, "-m", "rlhf", *cli_args]
    print(f"\n== {name}: {shlex.join(['python', '-m', 'rlhf', *cli_args])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err_chunks: list[bytes] = []

    def pump_stderr() -> None:  # live progress (PPO's step lines) and a copy for the report
        for chunk in iter(lambda: os.read(process.stderr.fileno(), 4096), b""):
            err_chunks.append(chunk)
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()

    pump = threading.Thread(target=pump_stderr, daemon=True)
    pump.start()
    stdout = process.stdout.read().decode("utf-8", errors="replace")
    process.wait()
    pump.join()
    seconds = time.perf_counter() - started
    stderr = b"".join(err_chunks).decode("utf-8", errors="replace")
    (log_dir / f"{name}.stdout").write_text(stdout)
    (log_dir / f"{name}.stderr").write_text(stderr)
    print(f"== {name}: exit {process.returncode} after {seconds:.1f} s", file=sys.stderr, flush=True)
    if process.returncode != 0:
        tail = "\n".join((stderr.strip().splitlines() or ["(no stderr)"])[-15:])
        raise StageFailed(f"stage {name!r} exited with status {process.returncode} after {seconds:.1f} s:\n{tail}")
    return {"seconds": round(seconds, 1), "stdout": stdout, "stderr": stderr}


def last_json_line(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise StageFailed(f"no JSON line in the output:\n{text[-2000:]}")


def checkpoints(home: Path, kind: str) -> list[Path]:
    root = home / PROJECT / "checkpoints"
    return sorted(p for p in root.glob(f"{kind}-*") if (p / "meta.json").is_file()) if root.is_dir() else []


def ppo_figures(checkpoint: Path) -> dict:
    rows = [json.loads(line) for line in (checkpoint / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not rows:
        raise StageFailed(f"{checkpoint / 'metrics.jsonl'} is empty")
    keys = {"scores": "objective/scores", "kl": "objective/kl", "eos_rate": "ppo/eos_rate",
            "response_length": "ppo/response_length", "entropy": "objective/entropy",
            "rlhf_reward": "objective/rlhf_reward", "kl_coef": "objective/kl_coef",
            "clipfrac": "ppo/policy/clipfrac_avg", "var_explained": "ppo/val/var_explained"}

    def pick(row: dict) -> dict:
        return {name: row.get(key) for name, key in keys.items()}

    def mean_of(part: list[dict], key: str) -> float:
        return sum(r[key] for r in part) / len(part)

    # First and last single steps are noisy (16 answers each); the mean of the first and last quarter is steadier.
    quarter = max(1, len(rows) // 4)
    return {
        "steps": len(rows),
        "first": pick(rows[0]),
        "last": pick(rows[-1]),
        f"first_{quarter}_mean": {name: mean_of(rows[:quarter], key) for name, key in keys.items()
                                  if name in ("scores", "kl", "eos_rate", "response_length")},
        f"last_{quarter}_mean": {name: mean_of(rows[-quarter:], key) for name, key in keys.items()
                                 if name in ("scores", "kl", "eos_rate", "response_length")},
        "step_seconds_mean": mean_of(rows, "time/step_s"),
        "last_samples": rows[-1].get("samples", [])[:3],
    }


def main() -> int:
    args = parse_args()
    home = Path(tempfile.mkdtemp(prefix="rlhf-bench-round-"))
    model_cache = Path(args.model_cache or os.environ.get("RLHF_MODEL_CACHE") or DEFAULT_MODEL_CACHE).resolve()
    env = {**os.environ, "RLHF_HOME": str(home), "RLHF_MODEL_CACHE": str(model_cache), "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    log_dir = home / "logs"
    log_dir.mkdir()
    judge_file = home / "judge.py"
    judge_file.write_text(JUDGE_SOURCE)
    judge = f"{judge_file}:closer_to_target"
    try:
        return run_round(args, home, env, log_dir, judge, model_cache)
    except StageFailed as error:
        print(f"\nFAILED: {error}", file=sys.stderr)
        print(f"logs and data kept in {home}", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if args.keep:
            print(f"data directory kept: {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)


def run_round(args, home: Path, env: dict, log_dir: Path, judge: str, model_cache: Path) -> int:
    if args.quick:
        prompts_file = home / "prompts.txt"
        prompts = [line for line in STARTER_PROMPTS.read_text().splitlines() if line.strip() and line[0] != "#"]
        prompts_file.write_text("\n".join(prompts[:8]) + "\n")
        num_candidates, max_new_tokens = 3, 16  # 3 candidates: 24 pairs, enough for train-reward's min_pairs after ties
        quick_ppo = ["--steps", "2", "--max-new-tokens", str(max_new_tokens)]
        eval_tokens = ["--max-new-tokens", str(max_new_tokens)]
    else:
        prompts_file, num_candidates, max_new_tokens = STARTER_PROMPTS, 4, 64
        quick_ppo, eval_tokens = [], []
    ppo_extra = shlex.split(args.ppo_args)
    project = ["--project", PROJECT]
    stages: dict[str, dict] = {}

    def stage(name: str, cli_args: list[str]) -> dict:
        result = run_stage(name, cli_args, env, log_dir)
        stages[name] = {"seconds": result["seconds"], "command": shlex.join(["python", "-m", "rlhf", *cli_args])}
        return result

    stage("create", ["projects", "--create", PROJECT])
    generated = stage("generate", ["generate", *project, "--prompts", str(prompts_file),
                                   "--num-candidates", str(num_candidates), "--max-new-tokens", str(max_new_tokens),
                                   "--seed", "0"])
    candidates = [json.loads(line) for line in generated["stdout"].splitlines() if line.startswith("{")]
    stage("annotate", ["annotate", *project, "--judge", judge, "--seed", "0"])
    labels = json.loads(stage("stats", ["stats", *project, "--json"])["stdout"])
    stage("train_reward", ["train-reward", *project])
    reward_ckpts = checkpoints(home, "reward")
    if not reward_ckpts:
        raise StageFailed("train-reward succeeded but left no reward checkpoint")
    reward_meta = json.loads((reward_ckpts[-1] / "meta.json").read_text())
    stage("ppo", ["ppo", *project, *quick_ppo, *ppo_extra])
    ppo_ckpts = checkpoints(home, "ppo")
    if not ppo_ckpts:
        raise StageFailed("ppo succeeded but left no PPO checkpoint")
    ppo_meta = json.loads((ppo_ckpts[-1] / "meta.json").read_text())
    ppo = ppo_figures(ppo_ckpts[-1])
    judged = last_json_line(stage("evaluate_judge", ["evaluate", *project, "--policy", "latest", "--judge", judge,
                                                     *eval_tokens, "--out", str(home / "eval-judge.json")])["stdout"])
    by_rm = last_json_line(stage("evaluate_reward_model", ["evaluate", *project, "--policy", "latest", *eval_tokens,
                                                           "--out", str(home / "eval-rm.json")])["stdout"])

    import torch  # only for the machine's facts, after the stages so it holds no memory while they run

    words = [len(c["text"].split()) for c in candidates]
    rm = reward_meta["metrics"]
    evaluation_keys = ("win_rate", "tie_rate", "loss_rate", "reward_tuned", "reward_reference", "kl",
                       "length_tuned", "length_reference")
    report = {
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available(), "python": platform.python_version()},
        "settings": {
            "quick": args.quick, "model_cache": str(model_cache), "prompts": len(set(c["prompt"] for c in candidates)),
            "num_candidates": num_candidates, "generate_max_new_tokens": max_new_tokens,
            "judge": f"closer to {TARGET_WORDS} words wins, equal distance is a tie",
            "ppo_args": quick_ppo + ppo_extra, "ppo_config": ppo_meta["config"],
            "reward_config": reward_meta["config"], "evaluate_sampling": judged["sampling"],
        },
        "stages_seconds": {name: s["seconds"] for name, s in stages.items()},
        "total_seconds": round(sum(s["seconds"] for s in stages.values()), 1),
        "commands": {name: s["command"] for name, s in stages.items()},
        "data": {
            "candidates": len(candidates),
            "candidates_ended": sum(c["finish_reason"] == "stop" for c in candidates),
            "candidate_words_mean": sum(words) / len(words),
            "candidates_within_5_words_of_target": sum(abs(w - TARGET_WORDS) <= 5 for w in words),
            "pairs": labels["pairs"], "votes": labels["votes"], "labels": labels["labels"],
        },
        "reward_model": {
            "id": reward_meta["id"], "eval_accuracy": rm["eval_accuracy"], "train_accuracy": rm["train_accuracy"],
            "n_train": rm["n_train"], "n_eval": rm["n_eval"], "steps": rm["steps"], "final_loss": rm["final_loss"],
            "mode": rm.get("mode"), "normalisation": reward_meta["normalisation"],
        },
        "ppo": {"id": ppo_meta["id"], **ppo},
        "evaluate_judge": {k: judged[k] for k in evaluation_keys},
        "evaluate_reward_model": {k: by_rm[k] for k in evaluation_keys},
        "examples": judged["examples"][:3],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print_table(report)
    print(f"wrote {args.out}")
    return 0


def print_table(report: dict) -> None:
    def f(value, digits=3) -> str:
        return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    print("\nstage                    seconds")
    for name, seconds in report["stages_seconds"].items():
        print(f"  {name:<22} {seconds:>7.1f}")
    print(f"  {'total':<22} {report['total_seconds']:>7.1f}")
    d = report["data"]
    print(f"\ndata: {d['candidates']} candidates ({d['candidates_ended']} ended, mean {d['candidate_words_mean']:.1f} "
          f"words, {d['candidates_within_5_words_of_target']} within 5 words of {TARGET_WORDS}); {d['votes']} votes "
          f"{d['labels']}")
    r = report["reward_model"]
    print(f"reward model: held-out accuracy {f(r['eval_accuracy'])} on {r['n_eval']} pairs, train accuracy "
          f"{f(r['train_accuracy'])} on {r['n_train']}, {r['steps']} steps, final loss {f(r['final_loss'])}")
    p = report["ppo"]
    print(f"\nppo ({p['steps']} steps, {p['step_seconds_mean']:.1f} s/step)   first      last")
    for key in ("scores", "kl", "eos_rate", "response_length", "entropy", "kl_coef"):
        print(f"  {key:<28} {f(p['first'][key]):>8} {f(p['last'][key]):>9}")
    quarter_first = next(k for k in p if k.startswith("first_") and k.endswith("_mean"))
    quarter_last = next(k for k in p if k.startswith("last_") and k.endswith("_mean"))
    print(f"  ({quarter_first} / {quarter_last}: scores {f(p[quarter_first]['scores'])} -> {f(p[quarter_last]['scores'])},"
          f" eos {f(p[quarter_first]['eos_rate'])} -> {f(p[quarter_last]['eos_rate'])}, length "
          f"{f(p[quarter_first]['response_length'], 1)} -> {f(p[quarter_last]['response_length'], 1)} tokens)")
    print("\nevaluate (tuned vs reference)   judge   reward model")
    for key in ("win_rate", "tie_rate", "loss_rate", "reward_tuned", "reward_reference", "kl", "length_tuned",
                "length_reference"):
        print(f"  {key:<28} {f(report['evaluate_judge'][key]):>7} {f(report['evaluate_reward_model'][key]):>9}")


if __name__ == "__main__":
    sys.exit(main())
