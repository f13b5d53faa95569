import json

import pytest
import torch

from rlhf.config import ConfigError, ModelConfig, RLHFError
from rlhf.models import (
    ModelRegistry, choose_dtype, cpu_supports_bf16, device_supports_bf16, ensure_bundled_cache, load_bundled_gguf,
    load_model, resolve_device, resolve_dtype, resolve_source,
)


def test_explicit_dtype_wins_and_auto_follows_the_hardware():
    cpu = torch.device("cpu")
    assert resolve_dtype("fp32", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_dtype("auto", cpu) == (torch.bfloat16 if cpu_supports_bf16() else torch.float32)
    assert resolve_device("cpu") == cpu
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


HARDWARE = {  # (device type, native bf16): what each kind of machine reports
    "T4 / V100 (compute 7.x: bf16 only emulated)": ("cuda", False),
    "A10G / L4 / A100 / H100 / ZeroGPU's H200 (Ampere and newer)": ("cuda", True),
    "CPU with AVX512-BF16, AMX or ARM bf16": ("cpu", True),
    "other CPU": ("cpu", False),
}
BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


@pytest.mark.parametrize("hardware, sampling, training", [
    ("T4 / V100 (compute 7.x: bf16 only emulated)", FP16, FP32),  # tensor cores to sample; no loss scaler in PPO
    ("A10G / L4 / A100 / H100 / ZeroGPU's H200 (Ampere and newer)", BF16, BF16),
    ("CPU with AVX512-BF16, AMX or ARM bf16", BF16, BF16),
    ("other CPU", FP32, FP32),
])
def test_the_dtype_follows_what_the_hardware_computes_natively(hardware, sampling, training):
    device_type, native_bf16 = HARDWARE[hardware]
    assert choose_dtype(device_type, native_bf16) == sampling
    assert choose_dtype(device_type, native_bf16, training=True) == training


@pytest.mark.parametrize("capability, sampling, training", [((7, 5), FP16, FP32), ((7, 0), FP16, FP32),
                                                          ((8, 6), BF16, BF16), ((9, 0), BF16, BF16)])
def test_a_gpu_that_only_emulates_bf16_gets_fp16_and_fp32(monkeypatch, capability, sampling, training):
    """torch's own check run against a GPU's reported capability (T4 7.5, V100 7.0, A10G 8.6, H100 9.0), the way
    `spaces` reports a ZeroGPU device: `is_bf16_supported()` says True on a T4, because it counts emulation."""
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: SimpleNamespace(major=capability[0], minor=capability[1]))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)  # emulation works there
    assert torch.cuda.is_bf16_supported()  # the default: emulation counts, whatever the GPU
    cuda = torch.device("cuda")
    assert device_supports_bf16(cuda) == (capability[0] >= 8)
    assert resolve_dtype("auto", cuda) == sampling
    assert resolve_dtype("auto", cuda, training=True) == training


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where no GPU exists")
def test_asking_for_cuda_without_a_gpu_says_so():
    with pytest.raises(ConfigError, match="no GPU"):
        resolve_device("cuda")


def test_bad_specs_get_messages_that_point_to_the_bundled_model(tmp_path):
    with pytest.raises(RLHFError, match="bundled"):
        resolve_source("./no/such/folder")
    with pytest.raises(RLHFError, match="no config.json"):
        resolve_source(str(tmp_path))
    assert resolve_source("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_unreachable_hub_id_explains_why_and_what_to_do():
    with pytest.raises(RLHFError) as caught:
        load_model(ModelConfig(spec="nobody/no-such-model-here", device="cpu"))
    message = str(caught.value)
    assert "nobody/no-such-model-here" in message and "HF_HUB_OFFLINE=1" in message and "--model bundled" in message


def test_loaded_model_is_ready_for_batched_sampling(tiny):
    tokenizer = tiny.tokenizer
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert not tiny.model.training  # eval: dropout off
    assert tiny.dtype == torch.float32 and tiny.max_context == 256


def test_registry_loads_each_model_once(tiny_model_dir):
    registry = ModelRegistry(max_models=1)
    config = ModelConfig(spec=str(tiny_model_dir), device="cpu", dtype="fp32")
    first = registry.get(config)
    assert registry.get(ModelConfig(spec=str(tiny_model_dir), device="cpu", dtype="fp32")) is first
    other = registry.get(ModelConfig(spec=str(tiny_model_dir), device="cpu", dtype="bf16"))
    assert other is not first and other.dtype == torch.bfloat16
    assert registry.get(config) is not first  # evicted (max_models=1) and loaded again


@pytest.mark.slow
def test_bundled_model_is_converted_once_and_the_cache_matches_the_gguf(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_MODEL_CACHE", str(tmp_path / "cache"))
    cache = ensure_bundled_cache()
    weights = next(cache.glob("*.safetensors"))
    first_write = weights.stat().st_mtime_ns
    assert ensure_bundled_cache() == cache and weights.stat().st_mtime_ns == first_write  # not converted again
    saved = json.loads((cache / "config.json").read_text())
    assert saved["pad_token_id"] == 0 and saved["eos_token_id"] == 2  # <|endoftext|> pads, <|im_end|> ends
    assert not [p for p in cache.parent.glob(".smollm2-135m-instruct-*") if p.is_dir()]  # no temporary folder left behind

    cached = load_model(ModelConfig(spec="bundled", device="cpu", dtype="fp32"))
    gguf_model, _ = load_bundled_gguf()
    ids = cached.tokenizer("An opossum is", return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(cached.model(**ids).logits, gguf_model(**ids).logits)
    assert sum(p.numel() for p in cached.model.parameters()) == pytest.approx(134.5e6, rel=0.01)


def test_the_file_lock_keeps_other_processes_out_until_released(tmp_path):
    import subprocess
    import sys

    from rlhf.models import _file_lock

    lock = tmp_path / "cache" / ".model.lock"
    probe = ("import sys; from filelock import FileLock, Timeout\n"
             "try:\n    FileLock(sys.argv[1]).acquire(timeout=0)\nexcept Timeout:\n    print('held')\n"
             "else:\n    print('free')")

    def other_process() -> str:
        return subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True,
                              check=True).stdout.strip()

    with _file_lock(lock):  # creates the folder it lives in
        assert other_process() == "held"
    assert other_process() == "free"
