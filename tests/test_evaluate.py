import dataclasses

import pytest
import torch

from rlhf.config import PPOConfig, RLHFError, SamplingConfig
from rlhf.evaluate import evaluate_policy, judge_outcome, outcome_rates, training_reward_text
from rlhf.ppo import RewardSource, train_ppo
from rlhf.store import Store

PROMPTS = ["What is an opossum?", "Hi", "Tell me a joke", "Why is the sky blue?"]
CONFIG = PPOConfig(steps=1, batch_size=4, mini_batch_size=2, max_new_tokens=6, seed=1)


def length_reward(prompts, responses):
    return torch.tensor([len(r) / 10 for r in responses])


def test_outcome_rates_and_judge_mapping():
    assert outcome_rates(["win", "tie", "loss", "win"]) == {"win_rate": 0.5, "tie_rate": 0.25, "loss_rate": 0.25,
                                                           "score": 0.625}
    assert [judge_outcome(a) for a in ("a", "b", "tie", "both_bad")] == ["win", "loss", "tie", "tie"]
    with pytest.raises(RLHFError):
        outcome_rates([])


def test_an_unchanged_policy_has_zero_kl_and_a_judge_decides(tiny_model_dir):
    store = Store.open("p", create=True)
    # lr 0: the adapter stays the identity, so the tuned policy is the reference and the KL must be exactly 0.
    train_ppo(store, dataclasses.replace(CONFIG, lr=0.0), str(tiny_model_dir), RewardSource(length_reward, "function:len"),
              prompts=PROMPTS, device="cpu")
    report = evaluate_policy(store, "latest", prompts=PROMPTS, judge=lambda p, a, b: "a" if len(a) > len(b) else "tie",
                             sampling=SamplingConfig(num_candidates=1, max_new_tokens=8, seed=0), device="cpu")
    assert report["kl"] == pytest.approx(0.0, abs=1e-4)
    assert report["win_rate"] + report["tie_rate"] + report["loss_rate"] == pytest.approx(1.0)
    assert report["loss_rate"] == 0.0 and report["num_prompts"] == 4
    assert report["length_tuned"] > 0 and report["reward_tuned"] is None


def test_a_trained_policy_has_moved_from_the_reference(tiny_model_dir):
    store = Store.open("p", create=True)
    train_ppo(store, dataclasses.replace(CONFIG, steps=3, lr=5e-2), str(tiny_model_dir), RewardSource(length_reward, "function:len"), prompts=PROMPTS, device="cpu")
    seen = []

    def judge(prompt, a, b):  # records what it was asked, so the test can check who was `a`
        seen.append((prompt, a, b))
        return "a" if len(a) > len(b) else "b" if len(b) > len(a) else "tie"

    report = evaluate_policy(store, "latest", prompts=PROMPTS, judge=judge,
                             sampling=SamplingConfig(num_candidates=1, max_new_tokens=8, seed=0), device="cpu")
    assert abs(report["kl"]) > 0.01  # one sample per prompt: noisy, but not 0 once the weights moved
    assert [p for p, _, _ in seen] == PROMPTS
    tuned = [e["tuned"] for e in report["examples"]]
    assert tuned == [a for _, a, _ in seen][: len(tuned)]  # the tuned answer is shown as `a`
    wins = sum(len(a) > len(b) for _, a, b in seen) / len(seen)
    assert report["win_rate"] == pytest.approx(wins) and report["judged"]["win_rate"] == pytest.approx(wins)


def test_evaluate_needs_a_policy_and_a_judge(tiny_model_dir):
    store = Store.open("empty", create=True)
    with pytest.raises(RLHFError, match="no ppo or dpo checkpoint"):
        evaluate_policy(store, "latest", prompts=PROMPTS)


def test_training_reward_text_says_whether_ppo_raised_its_own_reward():
    trend = {"label": "flat", "first": 0.08, "last": 0.1, "change": 0.02, "se": 0.11, "steps": 40, "quarter": 10}
    said = training_reward_text(trend)
    assert said.startswith("Training: PPO did not raise the reward it optimised (+0.08 over the first 10 of its 40 "
                           "steps, +0.10 over the last 10 (+- 0.11))")
    assert "More votes" in said  # what to do about it
    assert "lowered" in training_reward_text({**trend, "label": "fell", "last": -0.5})
    rose = training_reward_text({**trend, "label": "rose", "last": 0.9})
    assert rose == "Training: PPO raised the reward it optimised (+0.08 over the first 10 of its 40 steps, +0.90 over " \
                   "the last 10 (+- 0.11))."
