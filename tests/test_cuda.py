"""What only a CUDA GPU can show: the dtype chosen from the real device, training on it, a GPU-saved run resumed on
the CPU, one GPU per Trainer. Skipped without a GPU (they say so); scripts/gpu_check.sh runs `pytest -m cuda`.

The choices themselves are pure functions tested everywhere (tests/test_models.py, tests/test_ppo_devices.py).
"""

import dataclasses

import pytest
import torch

from rlhf.config import PPOConfig

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                   reason="needs a CUDA GPU; scripts/gpu_check.sh runs these on one")]
SMALL = PPOConfig(steps=2, batch_size=4, mini_batch_size=2, ppo_epochs=2, max_new_tokens=6, save_every=1, seed=3)
PROMPTS = ["What is an opossum?", "Hi", "Tell me a joke", "Why is the sky blue?", "Count to three"]


def length_reward(prompts, responses):
    return torch.tensor([len(r) / 10 for r in responses])


def test_native_bf16_is_read_from_the_device_not_from_emulation():
    from rlhf.models import device_supports_bf16, resolve_dtype

    cuda = torch.device("cuda")
    native = torch.cuda.get_device_capability()[0] >= 8  # Ampere and newer; a T4 (7.5) only emulates bf16
    assert device_supports_bf16(cuda) == native
    assert resolve_dtype("auto", cuda) == (torch.bfloat16 if native else torch.float16)
    assert resolve_dtype("auto", cuda, training=True) == (torch.bfloat16 if native else torch.float32)


def test_ppo_trains_on_the_gpu_and_a_gpu_saved_run_resumes_on_the_cpu(tiny_model_dir):
    import threading

    from rlhf.ppo import RewardSource, train_ppo
    from rlhf.store import Store

    store = Store.open("gpu", create=True)
    stop = threading.Event()
    first = train_ppo(store, SMALL, str(tiny_model_dir), RewardSource(length_reward, "function:length"), prompts=PROMPTS,
                      device="cuda", on_step=lambda result: stop.set(), stop=stop)
    assert first["steps_done"] == 1
    state = torch.load(f"{first['path']}/trainer_state.pt", weights_only=True)  # saved from cuda tensors
    assert state["rng"][0]["cuda"].dtype == torch.uint8  # the CUDA generator it sampled with
    resumed = train_ppo(store, SMALL, str(tiny_model_dir), RewardSource(length_reward, "function:length"), prompts=PROMPTS,
                        resume=first["id"], device="cpu")
    assert resumed["steps_done"] == 2 and resumed["id"] == first["id"]


def test_a_trainer_uses_one_gpu_without_a_launcher(tmp_path):
    from trl import RewardConfig

    from rlhf.distributed import one_gpu_per_process

    args = one_gpu_per_process(RewardConfig(output_dir=str(tmp_path), report_to=[]))
    assert args.n_gpu == 1  # not torch.nn.DataParallel over torch.cuda.device_count() GPUs
    if torch.cuda.device_count() < 2:
        pytest.skip("one GPU here: DataParallel would not have been used anyway; needs two to show the change")


def test_ppo_at_the_gpu_defaults_takes_one_step(tiny_model_dir):
    """The UI's GPU defaults (batch 64, minibatch 16, 128 tokens) validate and run a step on the GPU."""
    from rlhf.config import ModelConfig
    from rlhf.models import load_model
    from rlhf.ppo import PPORun

    defaults = dataclasses.replace(PPOConfig(batch_size=64, mini_batch_size=16, max_new_tokens=128), steps=1)
    run = PPORun(defaults, load_model(ModelConfig(spec=str(tiny_model_dir), device="cuda")), length_reward, PROMPTS)
    result = run.step()
    assert result.metrics["ppo/response_length"] > 0 and all(
        v == v for k, v in result.metrics.items() if isinstance(v, float) and k != "ppo/val/var_explained")
