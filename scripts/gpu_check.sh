#!/usr/bin/env bash
# The GPU check, in two steps (benchmarks/gpu_check.py says what it measures and how):
#
#   PYTHON=/path/to/venv/python scripts/gpu_check.sh prepare
#       Here, where pip reaches a registry and the bundled GGUF is installed: the wheels the GPU machine lacks go to
#       .whl/ (trl, datasets and what they need there; transformers and peft at our versions), the SmolLM2 tokenizer
#       to .gpu-check/tokenizer (the 98 MB GGUF cannot travel). Both folders are git-ignored: carry them.
#
#   scripts/gpu_check.sh
#       On the GPU machine (no Hub, no registry), from the repository root, with .whl and .gpu-check carried:
#       installs the wheels, runs the tests that need CUDA (`pytest -m cuda`), then the benchmark. Writes under $OUT
#       (the device tool's output folder; ./gpu-check-out elsewhere): gpu_check.json (every figure), gpu_check.log,
#       cuda-tests.log, cuda-tests.xml, nvidia-smi.txt; prints a summary. On one H200 (2026-12-04) the tests took 52 s;
#       the benchmark ran out of time at its generation section, after a ppo section of 277 s, most of it the profiled
#       step, which then covered the rollout too (it now profiles the update alone, not yet timed there). The other
#       sections took 182 s together. Each part has its own time limit (150 s, 360 s), so the whole stays under 10
#       minutes and what finished comes back.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(trl==1.16.0 datasets==5.2.0 transformers==5.24.0 peft==0.21.2 dill==0.4.1 multiprocess==0.70.19
        regex==2026.11.19 fsspec==2026.9.0)
# Not carried: huggingface_hub 2.4 needs httpx2, which the machine lacks; its own 1.33 satisfies transformers 5.24
# and datasets 5.2, and nothing here talks to the Hub. torch, accelerate, tokenizers, safetensors, pyarrow, pandas,
# psutil, pytest are the machine's.

if [ "${1:-}" = prepare ]; then
  PY="${PYTHON:-python3}"
  rm -rf .whl && mkdir -p .whl .gpu-check
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}" || exit 1
  HF_HUB_OFFLINE=1 "$PY" benchmarks/gpu_check.py --export-tokenizer .gpu-check/tokenizer || exit 1
  du -sh .whl .gpu-check
  exit 0
fi

PY="${PYTHON:-python3}"
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
[ -d .gpu-check/tokenizer ] || { echo "gpu_check: no .gpu-check/tokenizer: run 'scripts/gpu_check.sh prepare' first and carry it"; exit 1; }
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False
export RLHF_TEST_TOKENIZER="$PWD/.gpu-check/tokenizer"

echo "== tests that need CUDA"
timeout 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider --junitxml="$OUT/cuda-tests.xml" \
  tests/test_cuda.py tests/test_ppo_devices.py tests/test_distributed.py 2>&1 | tee "$OUT/cuda-tests.log"
tests_status=${PIPESTATUS[0]}

echo "== benchmark"
timeout 360 "$PY" benchmarks/gpu_check.py --device cuda --tokenizer .gpu-check/tokenizer --out "$OUT/gpu_check.json" \
  --work /tmp/gpu-check --steps 3 2>&1 | tee "$OUT/gpu_check.log"
bench_status=${PIPESTATUS[0]}

echo "== exit status: tests $tests_status, benchmark $bench_status"
[ "$tests_status" = 0 ] && [ "$bench_status" = 0 ]
