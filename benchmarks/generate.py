"""Benchmark of the bundled SmolLM2-135M-Instruct: model load time and sampling throughput, ours vs plain transformers.

Measures, in one run:
1. Load time: dequantising the GGUF (`load_bundled_gguf`) vs loading our safetensors cache (`load_model`), the ratio
   cached/gguf (goal <= 0.2), and the one-time conversion (`ensure_bundled_cache` on an empty cache).
2. Sampling throughput in new tokens per second at batch 1 and 8, the same starter prompts, every row forced to
   `--max-new-tokens`: "ours" is what the app does (`load_model`, auto dtype: bf16 on GPU and on CPUs with native bf16;
   `sample_batch`), "plain" is `AutoModelForCausalLM.from_pretrained(..., dtype=float32)` + `tokenizer(padding=True)` +
   `model.generate`. One warm-up each, then the median of `--repeats` runs. Goal: ours/plain >= 2 at batch 8.

Prints the figures and writes them, with the machine's facts, to benchmarks/results/generate.json.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/generate.py [--repeats 3] [--max-new-tokens 64] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BATCH_SIZES = (1, 8)
LOAD_RATIO_GOAL = 0.2
"""Loading the cache should take at most this fraction of the GGUF dequantisation."""
SPEEDUP_GOAL = 2.0
"""Our sampling at batch 8 should be at least this many times faster than plain fp32."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the median is reported")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="new tokens every row samples")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to sample")
    parser.add_argument(
        "--cache-dir",
        help="model cache to use (RLHF_MODEL_CACHE); default: a fresh temporary folder, so the conversion is measured",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "generate.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # rlhf reads RLHF_MODEL_CACHE when it builds paths; set it before anything of rlhf runs. Everything is local.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-cache-") as tmp:
        os.environ["RLHF_MODEL_CACHE"] = str(Path(args.cache_dir).resolve()) if args.cache_dir else tmp
        run(args)


def run(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO_ROOT))  # run as a script from the repo, rlhf is not an installed package
    import torch
    import transformers

    from rlhf.models import cpu_supports_bf16, resolve_device

    device = resolve_device(args.device)

    def timed(fn):
        """(result, seconds) of fn(), waiting for the GPU's queued work so the clock sees all of it."""
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return result, time.perf_counter() - start

    machine = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_supports_bf16": cpu_supports_bf16(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    print("machine:", json.dumps(machine))

    load = measure_load(timed)
    cache_dir = load.pop("cache_dir")
    throughput = measure_throughput(args, device, cache_dir, timed)

    speedup_at_8 = throughput["batch_8"]["speedup"] if "batch_8" in throughput else None
    goals = {
        "load_ratio_cached_over_gguf": {
            "goal": f"<= {LOAD_RATIO_GOAL}",
            "value": load["ratio_cached_over_gguf"],
            "met": load["ratio_cached_over_gguf"] <= LOAD_RATIO_GOAL,
        },
        "speedup_ours_over_plain_batch_8": {
            "goal": f">= {SPEEDUP_GOAL}",
            "value": speedup_at_8,
            "met": speedup_at_8 is not None and speedup_at_8 >= SPEEDUP_GOAL,
            # fp32 is our choice too on CPUs without native bf16, so the goal only holds where bf16 is native.
            "applies": device.type == "cuda" or machine["cpu_supports_bf16"],
        },
    }
    report = {
        "machine": machine,
        "settings": {"repeats": args.repeats, "max_new_tokens": args.max_new_tokens, "batch_sizes": BATCH_SIZES},
        "load": load,
        "throughput": throughput,
        "goals": goals,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, goal in goals.items():
        print(f"goal {name}: {goal['value']} (goal {goal['goal']}) {'met' if goal['met'] else 'NOT met'}")
    print(f"wrote {args.out}")


def measure_load(timed) -> dict:
    """Seconds to convert the GGUF once, to dequantise it again, and to load the safetensors cache (on CPU)."""
    from rlhf.config import ModelConfig
    from rlhf.models import BUNDLED_CACHE_NAME, ensure_bundled_cache, load_bundled_gguf, load_model, model_cache_dir

    already_cached = (model_cache_dir() / BUNDLED_CACHE_NAME).is_dir()
    cache_dir, conversion_s = timed(ensure_bundled_cache)
    # Both timed loads below come after the conversion, so both read files the OS already holds in memory.
    _, gguf_s = timed(load_bundled_gguf)
    loaded, cached_s = timed(lambda: load_model(ModelConfig(spec="bundled", device="cpu")))
    load = {
        "cache_dir": cache_dir,
        "first_conversion_s": None if already_cached else round(conversion_s, 2),
        "gguf_s": round(gguf_s, 2),
        "gguf_dtype": "float32",
        "cached_s": round(cached_s, 2),
        "cached_dtype": str(loaded.dtype).removeprefix("torch."),
        "ratio_cached_over_gguf": round(cached_s / gguf_s, 3),
    }
    conversion = "skipped (cache already there)" if already_cached else f"{conversion_s:.2f} s"
    print(f"load: first conversion {conversion}; gguf {gguf_s:.2f} s; cached {cached_s:.2f} s "
          f"({load['cached_dtype']}); cached/gguf {load['ratio_cached_over_gguf']}")
    return load


def count_new_tokens(responses, eos_token_id: int) -> int:
    """New tokens actually sampled: each row up to and including its first EOS, never the padding after it."""
    total = 0
    for row in responses.tolist():
        total += row.index(eos_token_id) + 1 if eos_token_id in row else len(row)
    return total


def measure_throughput(args, device, cache_dir: Path, timed) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.config import ModelConfig, SamplingConfig
    from rlhf.generate import encode_prompts, sample_batch, starter_prompts
    from rlhf.models import load_model

    max_new_tokens = args.max_new_tokens
    sampling = SamplingConfig(max_new_tokens=max_new_tokens)
    prompts = starter_prompts()

    ours = load_model(ModelConfig(spec="bundled", device=device.type))
    # sample_batch builds its own GenerationConfig, and transformers fills the fields it leaves unset from the
    # model's: this makes every row run to max_new_tokens (EOS is masked until then) without changing the app's path.
    ours.model.generation_config.min_new_tokens = max_new_tokens

    plain_tokenizer = AutoTokenizer.from_pretrained(cache_dir)
    plain_tokenizer.padding_side = "left"  # what transformers asks for decoder-only batches
    plain_model = AutoModelForCausalLM.from_pretrained(cache_dir, dtype=torch.float32).to(device).eval()

    def sample_ours(batch_prompts):
        ids = encode_prompts(ours, batch_prompts, max_new_tokens)
        return sum(s.num_tokens for s in sample_batch(ours, ids, sampling))

    def sample_plain(batch_prompts):
        texts = [
            plain_tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                add_generation_prompt=True)
            for p in batch_prompts
        ]
        inputs = plain_tokenizer(texts, padding=True, return_tensors="pt").to(device)
        output = plain_model.generate(
            **inputs, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0,
            max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, pad_token_id=plain_tokenizer.pad_token_id,
        )
        return count_new_tokens(output[:, inputs["input_ids"].shape[1]:], plain_tokenizer.eos_token_id)

    def figures(runs, batch_prompts, dtype) -> dict:
        return {
            "tokens_per_s": round(statistics.median(n / s for n, s in runs), 1),
            "tokens_per_s_runs": [round(n / s, 1) for n, s in runs],
            "seconds_median": round(statistics.median(s for _, s in runs), 3),
            "new_tokens": runs[0][0],
            "all_rows_full_length": all(n == len(batch_prompts) * max_new_tokens for n, _ in runs),
            "dtype": dtype,
        }

    results = {}
    for batch_size in BATCH_SIZES:
        batch_prompts = prompts[:batch_size]
        torch.manual_seed(0)
        sample_ours(batch_prompts)  # warm-up: first-call allocations and kernel selection
        sample_plain(batch_prompts)
        # Alternate the two so that a slow spell of a shared machine hits both alike, not one of them.
        ours_runs, plain_runs = [], []
        for _ in range(args.repeats):
            ours_runs.append(timed(lambda: sample_ours(batch_prompts)))
            plain_runs.append(timed(lambda: sample_plain(batch_prompts)))
        ours_figures = figures(ours_runs, batch_prompts, str(ours.dtype).removeprefix("torch."))
        plain_figures = figures(plain_runs, batch_prompts, "float32")
        speedup = round(ours_figures["tokens_per_s"] / plain_figures["tokens_per_s"], 2)
        results[f"batch_{batch_size}"] = {"ours": ours_figures, "plain_fp32": plain_figures, "speedup": speedup}
        print(f"batch {batch_size}: ours ({ours_figures['dtype']}) {ours_figures['tokens_per_s']} tok/s "
              f"{ours_figures['tokens_per_s_runs']}, plain fp32 {plain_figures['tokens_per_s']} tok/s "
              f"{plain_figures['tokens_per_s_runs']}, speedup {speedup}x")
    return results


if __name__ == "__main__":
    main()
