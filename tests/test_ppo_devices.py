"""PPO on whatever device it meets: the dtype it trains in, exact resume across devices (RNG state, a GPU-saved state
resumed on a CPU), and a first minibatch whose PPO ratio is exactly 1 under bf16 autocast.

The CUDA variants run where a GPU is (scripts/gpu_check.sh runs `pytest -m cuda` on one); here they skip and say so.
"""

import contextlib
import dataclasses
import threading

import pytest
import torch

from rlhf.config import ModelConfig, PPOConfig, RLHFError
from rlhf.models import load_model
from rlhf.ppo import RewardSource, PPORun, logprobs_from_logits, train_ppo

SMALL = PPOConfig(steps=2, batch_size=4, mini_batch_size=2, ppo_epochs=2, max_new_tokens=6, save_every=1, seed=3)
PROMPTS = ["What is an opossum?", "Hi", "Tell me a joke", "Why is the sky blue?", "Count to three"]
NO_GPU = "needs a CUDA GPU; scripts/gpu_check.sh runs the cuda tests on one"
cuda = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)])


def length_reward(prompts, responses):
    return torch.tensor([len(r) / 10 for r in responses])


@contextlib.contextmanager
def saved_as_on_a_gpu():
    """`torch.save` tags every storage with its device: tag the CPU ones `cuda:0`, as a GPU run's file is tagged
    (ahead of torch's own CPU tagger in its registry)."""
    entry = (0, lambda storage: "cuda:0" if storage.device.type == "cpu" else None, lambda storage, location: None)
    torch.serialization._package_registry.insert(0, entry)
    try:
        yield
    finally:
        torch.serialization._package_registry.remove(entry)


@pytest.mark.parametrize("device", ["cpu", cuda])
def test_rng_state_round_trip_restores_every_generator_sampling_draws_from(tiny_model_dir, device, tmp_path):
    run = PPORun(SMALL, load_model(ModelConfig(spec=str(tiny_model_dir), device=device, dtype="fp32")),
                 length_reward, PROMPTS)
    torch.save(run.state_dict(), tmp_path / "state.pt")
    expected_cpu, expected_device = torch.rand(4), torch.rand(4, device=run.device)
    torch.manual_seed(12345)  # anything else happened in between
    run.load_state_dict(torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True))
    assert torch.equal(torch.rand(4), expected_cpu)
    assert torch.equal(torch.rand(4, device=run.device), expected_device)  # on a GPU: the CUDA generator too
    [rng] = torch.load(tmp_path / "state.pt", weights_only=True)["rng"]  # one process: one rank's state
    assert ("cuda" in rng) == (run.device.type == "cuda")


def test_a_state_saved_on_a_gpu_resumes_on_a_cpu_exactly(tiny_model_dir):
    from safetensors.torch import load_file

    from rlhf.store import Store

    config = dataclasses.replace(SMALL, steps=2)
    straight = train_ppo(Store.open("straight", create=True), config, str(tiny_model_dir),
                         RewardSource(length_reward, "function:length"), prompts=PROMPTS, device="cpu")
    store = Store.open("moved", create=True)
    stop = threading.Event()
    first = train_ppo(store, config, str(tiny_model_dir), RewardSource(length_reward, "function:length"), prompts=PROMPTS,
                      device="cpu", on_step=lambda result: stop.set(), stop=stop)  # stopped after step 1 of 2
    assert first["steps_done"] == 1
    path = f"{first['path']}/trainer_state.pt"
    state = torch.load(path, weights_only=True)
    state["rng"][0]["cuda"] = torch.zeros(16, dtype=torch.uint8)  # a GPU run also saved its CUDA generator
    with saved_as_on_a_gpu():
        torch.save(state, path)
    with pytest.raises(RuntimeError, match="CUDA"):  # what a resume without map_location met on a CPU
        torch.load(path, weights_only=True)
    resumed = train_ppo(store, config, str(tiny_model_dir), RewardSource(length_reward, "function:length"), prompts=PROMPTS,
                        resume=first["id"], device="cpu")
    assert resumed["steps_done"] == 2
    a = load_file(f"{straight['path']}/adapter/adapter_model.safetensors")
    b = load_file(f"{resumed['path']}/adapter/adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the CPU generator came back: the same samples, the same update


def test_an_fp16_policy_is_refused_rather_than_trained_without_a_loss_scaler(tiny_model_dir):
    policy = load_model(ModelConfig(spec=str(tiny_model_dir), device="cpu", dtype="fp16"))
    with pytest.raises(RLHFError, match="fp16.*loss scaler"):
        PPORun(SMALL, policy, length_reward, PROMPTS)


@pytest.mark.parametrize("device", ["cpu", cuda])
def test_first_minibatch_ratio_is_exactly_one_under_bf16_autocast(wide_model_dir, device):
    """Rollout at batch 64, training minibatch 16: before the first update both must compute the same logprobs and
    values, bit for bit. At 64 rows and at 16 a bf16 LM head rounds some logits one bf16 step apart (on this CPU;
    on a GPU cuBLAS picks its kernels by shape), so the rollout computes them in minibatch-sized chunks; the value
    head runs in fp32 outside autocast."""
    policy = load_model(ModelConfig(spec=str(wide_model_dir), device=device, dtype="bf16"))
    # lr 0: the step's updates leave every weight as it was (Adam's update is lr times a finite number), so after it
    # the policy is the one that sampled the batch, and each minibatch's ratio must come out exactly 1
    config = PPOConfig(steps=1, batch_size=64, mini_batch_size=16, max_new_tokens=12, seed=1, lr=0.0)
    run = PPORun(config, policy, length_reward, PROMPTS)
    torch.nn.init.normal_(run.value_head.weight, std=0.1)  # a critic that says something, so values are compared
    result = run.step()
    assert result.metrics["ppo/policy/approxkl_avg"] == 0.0 and result.metrics["ppo/policy/clipfrac_avg"] == 0.0
    rollout = result.rollout
    minibatch = torch.randperm(64)[:16]  # as the PPO epochs draw one, and with gradients on, as they run
    logits, values = run.forward(rollout.queries[minibatch], rollout.query_mask[minibatch],
                                 rollout.responses[minibatch], rollout.mask[minibatch])
    mask = rollout.mask[minibatch]
    ratio = torch.exp(logprobs_from_logits(logits, rollout.responses[minibatch]) - rollout.logprobs[minibatch])[mask]
    assert torch.equal(ratio, torch.ones_like(ratio))
    assert values.dtype == rollout.values.dtype == torch.float32
    assert torch.equal((values * mask).detach(), rollout.values[minibatch])
