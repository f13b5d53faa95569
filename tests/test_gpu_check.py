"""benchmarks/gpu_check.py, the logic scripts/gpu_check.sh runs on a GPU machine: a dry run of every section on this
CPU with a tiny model (so the GPU run is known to start and write its JSON), the busy-time arithmetic by hand, and
the GPU defaults it measures kept equal to the Train tab's.

What only the GPU run shows: the figures themselves, CUDA kernel time, and the pre-Ampere (fp16) sections.
"""

import json
import subprocess
import sys

import torch
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402


def test_busy_time_is_the_union_of_kernels_inside_the_window():
    kernels = [(0, 10), (5, 15), (20, 30), (40, 50)]  # two overlap (two streams), one outside the window
    assert gpu_check.busy_intervals_us(kernels, 2, 25) == (15 - 2) + (25 - 20)
    assert gpu_check.busy_intervals_us([], 0, 10) == 0


def test_it_measures_the_train_tabs_gpu_defaults(monkeypatch):
    from rlhf.pipeline import hardware_defaults

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # what the tab offers on a GPU Space
    defaults = hardware_defaults()
    for field in ("batch_size", "mini_batch_size", "ppo_epochs", "lora", "lora_r", "target_kl", "kl_horizon"):
        assert getattr(defaults["ppo"], field) == getattr(gpu_check.GPU_PPO, field), field
    assert gpu_check.GPU_PPO.max_new_tokens == 128  # Generate's default candidates: PPO samples as long
    assert defaults["reward"].batch_size == gpu_check.GPU_REWARD_BATCH


def test_a_dry_run_on_the_cpu_fills_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny",
                           "--steps", "1", "--warmup", "0", "--out", str(out), "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    sections = json.loads(out.read_text())["sections"]
    assert not [name for name, figures in sections.items() if "error" in figures], sections
    assert sections["machine"]["pre_ampere_choices"] == {"inference": "torch.float16", "training": "torch.float32"}
    ppo = sections["ppo"]
    assert len(ppo["steps"]) == 1 and ppo["mean"]["rollout_s"] > 0 and ppo["mean"]["update_s"] > 0
    assert 0 < ppo["update_gpu_busy"]["share_profiled"] <= 1  # on a CPU: time inside aten ops
    ensemble = sections["ppo_ensemble"]  # 4 untrained heads: the uncertainty penalty has a spread to subtract
    assert ensemble["reward_heads"] == 4 and all(step["disagreement"] > 0 for step in ensemble["steps"])
    assert ppo["reward_heads"] == 1 and all(step["disagreement"] is None for step in ppo["steps"])
    assert sections["generation"]["tokens"] == 8 * 8  # batch 8, 8 tokens each (random weights never stop early)
    assert sections["generation_batch8"]["batch"] == 8
    assert sections["reward_epoch"]["steps"] >= 1 and sections["reward_epoch"]["pairs"] == 16
    pre_ampere = sections["pre_ampere"]  # on a CPU without native bf16: fp32 throughout
    assert pre_ampere["ppo"]["train_dtype"] == pre_ampere["generation"]["dtype"] == "float32"
    assert "fp32" in pre_ampere["reward_epoch"]["mode"]
    assert "skipped" in sections["two_gpus"]
    assert "GPU check summary" in done.stdout
