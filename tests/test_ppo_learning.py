"""PPO on the real 135M model with a programmatic reward: the reward rises clearly while the KL stays bounded."""

import dataclasses

import pytest

from rlhf.config import PPOConfig
from rlhf.generate import starter_prompts
from rlhf.ppo import RewardSource, programmatic_reward, train_ppo
from rlhf.store import Store

pytestmark = pytest.mark.slow


def twenty_words(prompt: str, response: str) -> float:
    """Best at exactly 20 words; the base model's answers run to the token limit (~40 words)."""
    return -abs(len(response.split()) - 20) / 10


# 16 steps of the 135M: 5.5 min on a quiet 2-core machine, past the suite's 10-min timeout on a busy one (it timed out
# at 608 s beside a reward-model run); the time is not what this test checks.
@pytest.mark.timeout(1500)
def test_word_count_reward_rises_within_16_steps():
    history = []
    config = dataclasses.replace(PPOConfig(), steps=16, save_every=100)  # the defaults otherwise
    train_ppo(Store.open("learning", create=True), config, "bundled", RewardSource(programmatic_reward(twenty_words), "function:twenty_words"), prompts=starter_prompts(), on_step=lambda result: history.append(result))
    scores = [r.metrics["objective/scores"] for r in history]
    kls = [r.metrics["objective/kl"] for r in history]
    eos = [r.metrics["ppo/eos_rate"] for r in history]
    print("scores", [round(s, 2) for s in scores], "kl", [round(k, 1) for k in kls], "eos", eos)
    # First four steps against the last four: one step's 16 answers are too noisy to compare with (its mean score
    # moves by ~0.2 from step to step when nothing is learned). Measured, last 3 minus the first step: +1.16 and +0.65
    # at 12 steps, +0.73 at 16; then on a clean CI clone +0.32 (first 4 vs last 4: +0.35, EOS rate 0.20 -> 0.36),
    # the same code: the runs are not bit-identical from machine to machine.
    def gain(values):
        return sum(values[-4:]) / 4 - sum(values[:4]) / 4

    assert gain(scores) > 0.25
    assert max(kls) < 40  # nats per answer: the KL penalty keeps the policy on a leash
    assert gain(eos) > 0.1  # it learned to end its answers
