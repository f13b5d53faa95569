"""Benchmark of one PPO iteration: our `rlhf.ppo.PPORun` vs trl 1.12.0's `trl.experimental.ppo.PPOTrainer`.

One invocation measures, on this machine, with the same model (SmolLM2-135M-Instruct, the bundled safetensors cache),
the same prompts (`rlhf.generate.starter_prompts()`), batch 4, 32-token responses, 2 PPO epochs, 1 minibatch (flags
change them):

- PPO episodes per second: answers trained per second in steady state (`--warmup` steps are run and not timed, then
  `--steps` steps are timed back to back).
- Peak resident memory: each side runs in its own subprocess, which reports its RSS high-water mark (`VmHWM` from
  /proc/self/status, checked against `ru_maxrss`), with its RSS after imports and after loading for a breakdown.

Sides:
- `ours`: LoRA policy (PPOConfig's r/alpha, all linear layers) on a frozen base in the dtype `load_model` picks
  (bf16 on CPUs with native bf16, with bf16 autocast; fp32 elsewhere); reference = adapter disabled; value head on the
  policy's hidden state.
- `ours-fp32`: the same, every weight and op in fp32: the like-for-like line against TRL, which runs fp32.
- `trl-lora`: TRL 1.12 with `peft_config` (the same LoRA settings): policy = LoRA on the base, reference = adapter
  disabled, plus a full value model and a reward model.
- `trl-full`: TRL 1.12 with four full models (policy, reference, value, reward).
TRL 1.12's PPOTrainer builds its own `Accelerator()` without mixed precision, so it runs fp32 whatever `bf16` says; we
set `bf16=False` and `gradient_checkpointing=False` (it never enables checkpointing itself) so the config says what
runs.

Reward, the same kind on both sides: TRL 1.12's PPOTrainer accepts only a reward *model* (an nn.Module read at the last
real token). We give it what its examples do: the base model as `AutoModelForSequenceClassification` with a fresh
scalar head, as both reward and value model. Ours takes a reward function, so ours scores with a second copy of the
135M model loaded the same way (`rlhf.reward.load_sequence_classifier`, in our side's dtype), run on the decoded
answers with the chat template (`rlhf.reward.conversation_ids`): both sides pay for a 135M reward-model forward per
step. The scores are meaningless (a random head); only speed and memory are measured. TRL reads the reward model on
the token ids directly, we decode and re-tokenise: that small cost is ours.

Update-phase efficiency (ours): the machine's peak matmul GFLOP/s is measured in the same run (`torch.matmul` of
`--matmul-size` square matrices, fp32 and bf16, `--threads` threads, best of 10), and our update phase (step minus
rollout: the PPO epochs' forward, backward and optimizer steps) is timed and its FLOPs estimated from the shapes that
actually went through `PPORun.forward` with gradients on:

    FLOPs = sum over update forwards of
              4 * N_body * B * L          forward (2) + activation-gradient backward (2) through the frozen base;
                                          no weight gradients for the base (LoRA)
            + 4 * N_head * B * T          the tied LM head, applied to the T response positions only
            + 6 * N_lora * B * L          LoRA adapters: forward, activation and weight gradients
            + 12 * n_layers * d_attn * B * L^2   attention scores and mixing (full L x L; forward + 2x backward)

with B the minibatch, L = padded query + response width, T the response width, N_body the decoder's linear weights,
N_head = vocab x hidden, N_lora the adapters' parameters. Elementwise work (norms, softmax over the 49k vocabulary,
Adam) is not counted. Achieved GFLOP/s / peak of the dtype the matmuls ran in is the fraction reported.

Run it under the shared benchmark lock, so benchmarks by different people run one at a time:

    flock /tmp/rlhf-bench.lock .venv/bin/python benchmarks/ppo.py [--steps 4] [--sides ours,ours-fp32,trl-lora,trl-full]

The TRL side runs in its own virtualenv (`--trl-venv`, default .cache/trl112-venv), created on first use with pinned
versions (torch==2.13.0 takes the local CPU wheel). Prints a table and writes benchmarks/results/ppo.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TRL_VENV = REPO_ROOT / ".cache" / "trl112-venv"
TRL_PINS = ["torch==2.13.0", "trl==1.12.0", "transformers==5.24.0", "peft==0.21.2", "accelerate==1.15.0", "datasets"]
"""torch==2.13.0 exactly: the local CPU wheel. A looser pin would download a CUDA build."""
SIDES = ("ours", "ours-fp32", "trl-lora", "trl-full")
SPEEDUP_GOAL = 2.0
"""ours / TRL-LoRA episodes per second should be at least this."""
MEMORY_GOAL = 0.35
"""ours / TRL-LoRA peak RSS should be at most this."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=4, help="answers per PPO step")
    parser.add_argument("--response-length", type=int, default=32, help="most tokens per answer")
    parser.add_argument("--ppo-epochs", type=int, default=2, help="passes over each batch")
    parser.add_argument("--num-minibatches", type=int, default=1, help="minibatches per batch")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per side (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocations, kernel choice)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads, every side")
    parser.add_argument("--matmul-size", type=int, default=2048, help="square matmul size for the peak GFLOP/s probe")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated subset of {','.join(SIDES)}")
    parser.add_argument("--model-dir", type=Path,
                        help="model folder (default: the bundled SmolLM2-135M-Instruct cache, RLHF_MODEL_CACHE)")
    parser.add_argument("--trl-venv", type=Path, default=DEFAULT_TRL_VENV, help="virtualenv with trl 1.12.0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "ppo.json")
    parser.add_argument("--worker", choices=("matmul",) + SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------------
# Memory (stdlib only: this file also runs inside the TRL virtualenv)
# ---------------------------------------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def memory_now() -> dict:
    """Current RSS and high-water mark of this process, in MB."""
    return {"rss_mb": round(_status_kb("VmRSS") / 1024, 1), "hwm_mb": round(_status_kb("VmHWM") / 1024, 1)}


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def contention(wall_s: float, cpu_s: float, threads: int, load_before: tuple) -> dict:
    """How much of the CPU the timed part got: utilisation well below 1 means other work shared the cores."""
    return {"cpu_s": round(cpu_s, 2), "cpu_utilisation": round(cpu_s / (wall_s * threads), 3),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def peak_memory() -> dict:
    """The process's RSS high-water mark, two ways (they agree on Linux; ru_maxrss is in KB there)."""
    return {"vmhwm_mb": round(_status_kb("VmHWM") / 1024, 1),
            "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


# ---------------------------------------------------------------------------------------------------------------------
# Workers: each runs in its own process and writes one JSON file
# ---------------------------------------------------------------------------------------------------------------------
def worker_matmul(spec: dict) -> dict:
    """Best-of-10 torch.matmul GFLOP/s at fp32 and bf16, `threads` threads."""
    import torch

    torch.set_num_threads(spec["threads"])
    n = spec["matmul_size"]
    flops = 2 * n**3
    result = {"size": n, "threads": torch.get_num_threads()}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(3):
            torch.matmul(a, b)
        seconds = []
        for _ in range(10):
            start = time.perf_counter()
            torch.matmul(a, b)
            seconds.append(time.perf_counter() - start)
        seconds.sort()
        result[f"{name}_gflops"] = round(flops / seconds[0] / 1e9, 1)
        result[f"{name}_gflops_median"] = round(flops / seconds[len(seconds) // 2] / 1e9, 1)
    return result


def worker_ours(spec: dict, fp32: bool) -> dict:
    """Our PPORun: LoRA policy + value head on one base, reward = a second 135M copy with a fresh scalar head."""
    sys.path.insert(0, str(REPO_ROOT))  # run as a script from the repo: rlhf is not an installed package
    import torch

    torch.set_num_threads(spec["threads"])
    from rlhf.config import ModelConfig, PPOConfig
    from rlhf.models import load_model
    from rlhf.ppo import PPORun
    from rlhf.reward import (
        conversation,
        conversation_ids,
        load_sequence_classifier,
        raw_scores,
    )

    memory = {"after_imports": memory_now()}
    started = time.perf_counter()
    policy = load_model(ModelConfig(spec=spec["model_dir"], device="cpu", dtype="fp32" if fp32 else "auto"))
    tokenizer = policy.tokenizer
    torch.manual_seed(spec["seed"])  # the reward head's random init
    reward_model = load_sequence_classifier(spec["model_dir"], tokenizer.pad_token_id, dtype=policy.dtype).eval()
    phases = {"generate": 0.0, "reward": 0.0, "rollout_forward": 0.0, "rollout": 0.0, "update_forward": 0.0}

    def reward_fn(prompts: list[str], responses: list[str]) -> torch.Tensor:
        start = time.perf_counter()
        sequences = [conversation_ids(tokenizer, conversation(p, r)) for p, r in zip(prompts, responses)]
        scores = raw_scores(reward_model, sequences, tokenizer.pad_token_id)
        phases["reward"] += time.perf_counter() - start
        return scores

    mini_batch = spec["batch_size"] // spec["num_minibatches"]
    config = PPOConfig(steps=spec["warmup"] + spec["steps"], batch_size=spec["batch_size"], mini_batch_size=mini_batch,
                       ppo_epochs=spec["ppo_epochs"], max_new_tokens=spec["response_length"], seed=spec["seed"])
    run = PPORun(config, policy, reward_fn, spec["prompts"])
    memory["after_load"] = memory_now()
    load_s = time.perf_counter() - started

    # Parameter counts for the FLOPs estimate (base weights only; LoRA counted apart).
    inner = run.model.get_base_model() if hasattr(run.model, "get_base_model") else run.model
    model_config = inner.config
    n_body = sum(p.numel() for n, p in inner.model.layers.named_parameters() if p.dim() == 2 and "lora_" not in n)
    n_head = inner.lm_head.weight.numel()
    n_lora = sum(p.numel() for n, p in run.model.named_parameters() if "lora_" in n)
    n_layers = model_config.num_hidden_layers
    d_attn = model_config.num_attention_heads * getattr(model_config, "head_dim",
                                                        model_config.hidden_size // model_config.num_attention_heads)
    counters = {"update_flops": 0.0, "update_forwards": 0, "widths": []}

    # Instrument the run without changing it: instance attributes shadow the methods step() calls.
    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] += time.perf_counter() - start
        return wrapper

    run._sample = timed("generate", run._sample)
    forward = run.forward

    def counted_forward(queries, query_mask, responses, mask, reference=False):
        start = time.perf_counter()
        try:
            return forward(queries, query_mask, responses, mask, reference=reference)
        finally:
            elapsed = time.perf_counter() - start
            if torch.is_grad_enabled():  # a PPO-epoch forward; rollout forwards run under no_grad
                phases["update_forward"] += elapsed
                b, width = queries.size(0), queries.size(1) + responses.size(1)
                t = responses.size(1)
                counters["update_flops"] += (4 * n_body * b * width + 4 * n_head * b * t + 6 * n_lora * b * width
                                             + 12 * n_layers * d_attn * b * width**2)
                counters["update_forwards"] += 1
            else:
                phases["rollout_forward"] += elapsed
                counters["widths"].append([queries.size(1), responses.size(1)])

    run.forward = counted_forward

    for _ in range(spec["warmup"]):
        run.step()
    memory["after_warmup"] = memory_now()
    for key in phases:
        phases[key] = 0.0
    counters.update(update_flops=0.0, update_forwards=0, widths=[])
    step_seconds, lengths, eos_rates = [], [], []
    load_before, cpu_before = os.getloadavg(), cpu_seconds()
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        result = run.step()
        step_seconds.append(time.perf_counter() - start)
        phases["rollout"] += result.metrics["time/rollout_s"]  # steps 1-3 of the step, timed by the step itself
        lengths.append(result.metrics.get("ppo/response_length"))
        eos_rates.append(result.metrics.get("ppo/eos_rate"))
    total = sum(step_seconds)
    cpu_timed = cpu_seconds() - cpu_before
    update_s = total - phases["rollout"]
    rollout_other = phases["rollout"] - phases["generate"] - phases["reward"] - phases["rollout_forward"]
    dtype = str(policy.dtype).removeprefix("torch.")
    return {
        "dtype": f"{dtype} weights, {dtype} autocast; fp32 LoRA, value head and logits" if dtype != "float32"
        else "float32",
        "matmul_dtype": "bf16" if dtype == "bfloat16" else "fp32",
        "load_s": round(load_s, 2),
        "step_seconds": [round(s, 3) for s in step_seconds],
        "seconds_timed": round(total, 3),
        "episodes_per_s": round(spec["steps"] * spec["batch_size"] / total, 4),
        "phases_s_per_step": {
            "rollout": round(phases["rollout"] / spec["steps"], 3),
            "rollout/generate": round(phases["generate"] / spec["steps"], 3),
            "rollout/reward_model": round(phases["reward"] / spec["steps"], 3),
            "rollout/policy_and_ref_forwards": round(phases["rollout_forward"] / spec["steps"], 3),
            "rollout/other": round(rollout_other / spec["steps"], 3),
            "update": round(update_s / spec["steps"], 3),
            "update/forwards": round(phases["update_forward"] / spec["steps"], 3),
            "update/backward_optimizer_rest": round((update_s - phases["update_forward"]) / spec["steps"], 3),
        },
        "response_length_mean": round(sum(lengths) / len(lengths), 2) if all(lengths) else None,
        "eos_rate_mean": round(sum(eos_rates) / len(eos_rates), 3) if all(e is not None for e in eos_rates) else None,
        "query_response_widths": counters["widths"][::2],  # one per step (policy and reference forwards share it)
        "update": {
            "flops_per_step": counters["update_flops"] / spec["steps"],
            "seconds_per_step": round(update_s / spec["steps"], 3),
            "achieved_gflops": round(counters["update_flops"] / update_s / 1e9, 1),
            "forwards_per_step": counters["update_forwards"] / spec["steps"],
            "params": {"n_body": n_body, "n_head": n_head, "n_lora": n_lora, "n_layers": n_layers, "d_attn": d_attn},
        },
        "memory_mb": memory,
        "peak_memory": peak_memory(),
        "threads": torch.get_num_threads(),
        "contention": contention(total, cpu_timed, torch.get_num_threads(), load_before),
    }


def worker_trl(spec: dict, lora: bool) -> dict:
    """TRL 1.12's PPOTrainer (run with the TRL virtualenv's Python), timed per step by a callback."""
    import torch

    torch.set_num_threads(spec["threads"])
    import transformers
    import trl
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as ppo_module

    memory = {"after_imports": memory_now()}
    started = time.perf_counter()
    model_dir = spec["model_dir"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    # SmolLM2's pad and EOS are both <|im_end|>, which also sits inside every chat prompt, and TRL builds its masks as
    # `ids != pad`: pad with <|endoftext|> (the cache's tokenizer already does; make sure).
    tokenizer.pad_token = "<|endoftext|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    dtype = torch.float32
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    ref_policy = None if lora else AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    torch.manual_seed(spec["seed"])  # the fresh score heads
    value_model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=dtype)
    reward_model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=dtype)
    for model in (value_model, reward_model):
        model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")

    def encode(prompt: str) -> list[int]:  # as rlhf.generate.encode_chat
        encoded = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                                add_generation_prompt=True)
        return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)

    dataset = Dataset.from_dict({"input_ids": [encode(p) for p in spec["prompts"]]})
    total_steps = spec["warmup"] + spec["steps"]
    output_dir = tempfile.mkdtemp(prefix="rlhf-bench-trl-")
    config = PPOConfig(
        output_dir=output_dir, per_device_train_batch_size=spec["batch_size"], gradient_accumulation_steps=1,
        num_mini_batches=spec["num_minibatches"], num_ppo_epochs=spec["ppo_epochs"],
        response_length=spec["response_length"], total_episodes=spec["batch_size"] * total_steps,
        stop_token="eos", missing_eos_penalty=1.0, temperature=0.7, kl_coef=0.05, seed=spec["seed"],
        num_sample_generations=0, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True,
        bf16=False, gradient_checkpointing=False,
    )

    class StepClock(TrainerCallback):
        def __init__(self):
            self.marks, self.logs = [], []

        def on_train_begin(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), cpu_seconds(), os.getloadavg()))

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), cpu_seconds(), os.getloadavg()))

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs or {}))

    generation = {"seconds": [], "widths": [], "lengths": []}
    batch_generation = ppo_module.batch_generation

    def timed_generation(model, queries, *args, **kwargs):  # train() looks the function up in its module
        start = time.perf_counter()
        query_responses, logits = batch_generation(model, queries, *args, **kwargs)
        generation["seconds"].append(time.perf_counter() - start)
        responses = query_responses[:, queries.size(1):]
        generation["widths"].append([queries.size(1), responses.size(1)])
        ended = responses == tokenizer.eos_token_id
        width = responses.size(1)
        lengths = [int(row.nonzero()[0]) + 1 if row.any() else width for row in ended]
        generation["lengths"].append(sum(lengths) / len(lengths))
        return query_responses, logits

    ppo_module.batch_generation = timed_generation
    clock = StepClock()
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                         reward_model=reward_model, train_dataset=dataset, value_model=value_model,
                         eval_dataset=dataset, peft_config=peft_config, callbacks=[clock])
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    memory["after_load"] = memory_now()
    load_s = time.perf_counter() - started
    trainer.train()
    marks = clock.marks  # (wall, cpu, load) at train begin, then at the end of each step
    step_seconds = [b[0] - a[0] for a, b in itertools.pairwise(marks)]
    cpu_timed = marks[-1][1] - marks[spec["warmup"]][1]
    timed = step_seconds[spec["warmup"]:]
    total = sum(timed)
    gen_timed = generation["seconds"][spec["warmup"]:]
    eos = [log["val/num_eos_tokens"] for log in clock.logs if "val/num_eos_tokens" in log][spec["warmup"]:]
    lengths = generation["lengths"][spec["warmup"]:]
    return {
        "dtype": "float32 (TRL 1.12 PPOTrainer: its Accelerator has no mixed precision; bf16=False)",
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "models": "policy (LoRA) + value + reward" if lora else "policy + reference + value + reward",
        "trainable_params": trainable,
        "load_s": round(load_s, 2),
        "step_seconds": [round(s, 3) for s in timed],
        "warmup_step_seconds": [round(s, 3) for s in step_seconds[:spec["warmup"]]],
        "seconds_timed": round(total, 3),
        "episodes_per_s": round(len(timed) * spec["batch_size"] / total, 4),
        "phases_s_per_step": {
            "generate": round(sum(gen_timed) / len(timed), 3),
            "rest (ref/value/reward forwards, PPO epochs)": round((total - sum(gen_timed)) / len(timed), 3),
        },
        "response_length_mean": round(sum(lengths) / len(lengths), 2),
        "eos_rate_mean": round(sum(eos) / len(eos) / spec["batch_size"], 3) if eos else None,
        "query_response_widths": generation["widths"][spec["warmup"]:],
        "memory_mb": memory,
        "peak_memory": peak_memory(),
        "threads": torch.get_num_threads(),
        "contention": contention(total, cpu_timed, torch.get_num_threads(), marks[spec["warmup"]][2]),
    }


def run_worker(args: argparse.Namespace) -> None:
    spec = json.loads(args.spec.read_text())
    if args.worker == "matmul":
        result = worker_matmul(spec)
    elif args.worker in ("ours", "ours-fp32"):
        result = worker_ours(spec, fp32=args.worker == "ours-fp32")
    else:
        result = worker_trl(spec, lora=args.worker == "trl-lora")
    args.result.write_text(json.dumps(result, indent=2))


# ---------------------------------------------------------------------------------------------------------------------
# The parent: prepares the TRL venv, runs each side in turn, compares
# ---------------------------------------------------------------------------------------------------------------------
def trl_python(venv: Path) -> Path:
    """The TRL virtualenv's Python, creating the venv with pinned versions when missing or wrong."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import trl, sys; sys.exit(trl.__version__ != '1.12.0')"]
    if python.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return python
    print(f"creating the TRL 1.12 virtualenv in {venv} (a few minutes, once)", flush=True)
    base_python = getattr(sys, "_base_executable", None) or "python3"  # the same Python as ours: the torch wheel fits
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *TRL_PINS], check=True)
    subprocess.run(check, check=True)
    return python


def run_side(name: str, python: Path, spec_path: Path, workdir: Path) -> dict:
    """Run one worker in its own process; its stdout/stderr go to a log whose tail is shown on failure."""
    result_path, log_path = workdir / f"{name}.json", workdir / f"{name}.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONWARNINGS="ignore")
    command = [str(python), str(Path(__file__).resolve()), "--worker", name, "--spec", str(spec_path),
               "--result", str(result_path)]
    started = time.perf_counter()
    with log_path.open("w") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT, check=False)
    wall = time.perf_counter() - started
    if completed.returncode != 0 or not result_path.exists():
        tail = log_path.read_text()[-3000:]
        print(f"{name}: FAILED (exit {completed.returncode})\n{tail}", flush=True)
        return {"error": f"exit {completed.returncode}", "log_tail": tail}
    result = json.loads(result_path.read_text())
    result["process_wall_s"] = round(wall, 1)
    return result


def main() -> None:
    args = parse_args()
    if args.worker:
        run_worker(args)
        return
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = set(sides) - set(SIDES)
    if unknown:
        raise SystemExit(f"--sides: unknown {sorted(unknown)}; choose from {','.join(SIDES)}")
    if args.batch_size % args.num_minibatches:
        raise SystemExit("--batch-size must be a multiple of --num-minibatches")
    if args.warmup < 0 or args.steps < 1:
        raise SystemExit("--steps must be at least 1 and --warmup at least 0")
    if args.warmup < 1 and any(s.startswith("trl") for s in sides):
        print("note: with --warmup 0 TRL's first step includes its start-up", flush=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO_ROOT))
    import platform

    from rlhf.config import PPOConfig
    from rlhf.generate import starter_prompts
    from rlhf.models import cpu_supports_bf16, ensure_bundled_cache

    model_dir = args.model_dir.resolve() if args.model_dir else ensure_bundled_cache()
    defaults = PPOConfig()
    spec = {
        "model_dir": str(model_dir), "prompts": starter_prompts(), "batch_size": args.batch_size,
        "response_length": args.response_length, "ppo_epochs": args.ppo_epochs,
        "num_minibatches": args.num_minibatches, "steps": args.steps, "warmup": args.warmup,
        "threads": args.threads, "seed": args.seed, "matmul_size": args.matmul_size,
        "lora_r": defaults.lora_r, "lora_alpha": defaults.lora_alpha,
    }
    trl_py = trl_python(args.trl_venv) if any(s.startswith("trl") for s in sides) else None
    machine = {"cpu_count": os.cpu_count(), "cpu_supports_bf16": cpu_supports_bf16(), "threads": args.threads,
               "python": platform.python_version(), "load_average_at_start": os.getloadavg()}
    print("machine:", json.dumps(machine), flush=True)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-ppo-") as tmp:
        workdir = Path(tmp)
        spec_path = workdir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        matmul = run_side("matmul", Path(sys.executable), spec_path, workdir)
        print(f"matmul peak ({args.matmul_size}^2, {args.threads} threads): fp32 {matmul.get('fp32_gflops')} GFLOP/s, "
              f"bf16 {matmul.get('bf16_gflops')} GFLOP/s", flush=True)
        for side in sides:
            python = trl_py if side.startswith("trl") else Path(sys.executable)
            print(f"running {side} ...", flush=True)
            results[side] = run_side(side, python, spec_path, workdir)
            if "error" not in results[side]:
                r = results[side]
                print(f"  {side}: {r['episodes_per_s']} episodes/s, steps {r['step_seconds']} s, peak "
                      f"{r['peak_memory']['vmhwm_mb']} MB, CPU utilisation {r['contention']['cpu_utilisation']}, "
                      f"{r['dtype']}", flush=True)

    efficiency = {}
    for side in ("ours", "ours-fp32"):
        r = results.get(side)
        if r and "error" not in r and "error" not in matmul:
            peak = matmul[f"{r['matmul_dtype']}_gflops"]
            efficiency[side] = {"achieved_gflops": r["update"]["achieved_gflops"], "peak_gflops": peak,
                                "peak_dtype": r["matmul_dtype"],
                                "fraction_of_peak": round(r["update"]["achieved_gflops"] / peak, 3)}

    def ratio(a: str, b: str, key) -> float | None:
        if a in results and b in results and "error" not in results[a] and "error" not in results[b]:
            return round(key(results[a]) / key(results[b]), 3)
        return None

    eps = lambda r: r["episodes_per_s"]
    mem = lambda r: r["peak_memory"]["vmhwm_mb"]
    ratios = {
        "ours_over_trl_lora_episodes_per_s": ratio("ours", "trl-lora", eps),
        "ours_over_trl_lora_peak_memory": ratio("ours", "trl-lora", mem),
        "ours_fp32_over_trl_lora_episodes_per_s": ratio("ours-fp32", "trl-lora", eps),
        "ours_fp32_over_trl_lora_peak_memory": ratio("ours-fp32", "trl-lora", mem),
        "ours_over_trl_full_episodes_per_s": ratio("ours", "trl-full", eps),
        "ours_over_trl_full_peak_memory": ratio("ours", "trl-full", mem),
    }
    speed, memory = ratios["ours_over_trl_lora_episodes_per_s"], ratios["ours_over_trl_lora_peak_memory"]
    goals = {
        "ours_over_trl_lora_episodes_per_s": {"goal": f">= {SPEEDUP_GOAL}", "value": speed,
                                              "met": speed is not None and speed >= SPEEDUP_GOAL},
        "ours_over_trl_lora_peak_memory": {"goal": f"<= {MEMORY_GOAL}", "value": memory,
                                           "met": memory is not None and memory <= MEMORY_GOAL},
    }
    report = {
        "machine": machine,
        "settings": {k: v for k, v in spec.items() if k not in ("prompts", "model_dir")}
        | {"model": Path(spec["model_dir"]).name, "num_prompts": len(spec["prompts"]),
           "reward": "135M AutoModelForSequenceClassification with a fresh head, both sides (see the docstring)"},
        "matmul_peak": matmul,
        "sides": results,
        "update_efficiency": efficiency,
        "ratios": ratios,
        "goals": goals,
    }
    print_table(results, efficiency, ratios, goals)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def print_table(results: dict, efficiency: dict, ratios: dict, goals: dict) -> None:
    print()
    print(f"{'side':<10} {'episodes/s':>10} {'s/step':>7} {'peak RSS MB':>11} {'rollout s':>9} {'update s':>8} "
          f"{'resp len':>8} {'CPU util':>8}  dtype")
    for side, r in results.items():
        if "error" in r:
            print(f"{side:<10} FAILED: {r['error']}")
            continue
        phases = r["phases_s_per_step"]
        rollout = phases.get("rollout", phases.get("generate"))
        update = phases.get("update", phases.get("rest (ref/value/reward forwards, PPO epochs)"))
        print(f"{side:<10} {r['episodes_per_s']:>10.3f} {r['seconds_timed'] / len(r['step_seconds']):>7.2f} "
              f"{r['peak_memory']['vmhwm_mb']:>11.0f} {rollout:>9.2f} {update:>8.2f} "
              f"{r['response_length_mean']:>8} {r['contention']['cpu_utilisation']:>8.2f}  {r['dtype']}")
    print("(TRL's 'rollout s' is generation only and its 'update s' everything else; ours splits after step 3 of PPORun.step. "
          "CPU util = CPU seconds / (wall x threads) over the timed steps: well below 1 means other work shared the "
          "cores and the figures are not clean.)")
    for side, e in efficiency.items():
        print(f"{side} update phase: {e['achieved_gflops']} GFLOP/s of {e['peak_gflops']} {e['peak_dtype']} matmul "
              f"peak = {e['fraction_of_peak']:.1%}")
    for name, value in ratios.items():
        if value is not None:
            print(f"{name}: {value}")
    for name, goal in goals.items():
        print(f"goal {name}: {goal['value']} (goal {goal['goal']}) {'met' if goal['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
