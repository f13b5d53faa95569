"""Drift detectors and the verdict: pure functions, against hand-computed values."""

import pytest
import torch

from rlhf.drift import (distinct_ngrams, drift_report, duplicate_share, labelled_profile, quantile)
from rlhf.evaluate import comparison, outcome_rates, verdict

PROMPTS = ["What is an opossum?", "Why is the sky blue?", "How do bees make honey?", "What is a prime number?"]
NORMAL = [
    "An opossum is a marsupial from the Americas that carries its young in a pouch.",
    "Sunlight scatters off air molecules, and blue light scatters the most, so the sky looks blue.",
    "Bees collect nectar, break its sugars down with enzymes and fan it until the water evaporates.",
    "A prime number has exactly two divisors, one and itself: 2, 3, 5 and 7 are primes.",
]
LABELLED = labelled_profile(token_counts=[20, 24, 30, 40, 60, 64, 64, 64], texts=NORMAL * 2,
                            scores=torch.tensor([-1.5, 0.2, 1.0, 2.0]), disagreement=torch.tensor([0.1, 0.1, 0.2, 0.2]))


def test_quantile_interpolates_like_numpy():
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile([10], 0.95) == 10
    assert quantile([0, 10], 0.25) == 2.5
    with pytest.raises(ValueError):
        quantile([], 0.5)


def test_distinct_ngrams_and_duplicates_by_hand():
    assert distinct_ngrams("a b a b a b") == pytest.approx(2 / 5)  # pairs: ab ba ab ba ab
    assert distinct_ngrams("one two three") == 1.0
    assert distinct_ngrams("short") == 1.0
    # two prompts share the answer "SmolLM:" (case and spacing aside): 2 of 3 answers
    assert duplicate_share(["p1", "p2", "p3"], ["SmolLM:", "smollm", "A real answer."]) == pytest.approx(2 / 3)
    # the same answer twice to the same prompt is not sameness across prompts
    assert duplicate_share(["p1", "p1"], ["Yes.", "Yes."]) == 0.0


def test_labelled_profile_records_the_yardsticks():
    assert LABELLED["tokens_p05"] == pytest.approx(21.4)  # 20 + 0.35 * (24 - 20)
    assert LABELLED["tokens_p95"] == 64
    assert LABELLED["score_min"] == -1.5 and LABELLED["score_max"] == 2.0
    assert LABELLED["disagreement_mean"] == pytest.approx(0.15)


def test_a_normal_batch_is_not_flagged():
    report = drift_report(PROMPTS, NORMAL, [22, 25, 28, 30], LABELLED, kl=4.0, kl_budget=6.0,
                          disagreement=torch.tensor([0.1, 0.2, 0.15, 0.1]))
    assert report["flags"] == []
    assert report["length_outside_share"] == 0.0 and report["duplicate_share"] == 0.0


def test_identical_answers_across_prompts_are_flagged():
    report = drift_report(PROMPTS, ["SmolLM:"] * 4, [30] * 4, None)
    assert report["duplicate_share"] == 1.0
    assert any("same answer" in flag for flag in report["flags"])


def test_a_length_collapse_is_flagged():
    # half of 21.4 is 10.7 tokens: answers of 3 tokens are far outside what annotators judged
    report = drift_report(PROMPTS, ["Yes.", "No.", "Blue.", "Two."], [3, 3, 3, 3], LABELLED)
    assert report["length_outside_share"] == 1.0
    assert any("length" in flag for flag in report["flags"])


def test_repetition_disagreement_and_kl_are_flagged():
    loops = ["the sky the sky the sky the sky the sky"] * 4
    report = drift_report(PROMPTS, [f"{loop} {i}" for i, loop in enumerate(loops)], [30] * 4, LABELLED,
                          kl=20.0, kl_budget=6.0, disagreement=torch.tensor([0.5, 0.6, 0.4, 0.5]))
    flags = " | ".join(report["flags"])
    assert "repeat themselves" in flags
    assert "disagree" in flags and report["disagreement_ratio"] == pytest.approx(0.5 / 0.15)
    assert "KL 20.0" in flags and report["kl_over_budget"] == pytest.approx(20 / 6)


def test_verdict_never_calls_an_unconfirmed_win_improved():
    win = comparison(torch.tensor([2.0, 2.0, 2.0, 2.0]), torch.tensor([0.0, 0.0, 0.0, 0.0]))
    even = comparison(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    loss = comparison(torch.tensor([0.0] * 4), torch.tensor([1.0] * 4))
    clean, flagged = {"flags": []}, {"flags": ["100% of the answers are the same answer given to other prompts"]}
    assert win["score"] == 1.0 and even["score"] == 0.5 and loss["score"] == 0.0
    assert verdict(win, win, clean)["label"] == "improved"
    assert verdict(win, even, clean)["label"] == "likely reward hacking"
    assert verdict(win, win, flagged)["label"] == "likely reward hacking"
    assert "same answer" in verdict(win, win, flagged)["text"]
    assert verdict(even, even, flagged)["label"] == "drifted"
    assert verdict(win, None, clean)["label"] == "unconfirmed"
    assert verdict(even, loss, clean)["label"] == "worse"
    assert verdict(even, even, clean)["label"] == "no clear change"


def test_outcome_rates_give_the_score():
    assert outcome_rates(["win", "tie", "loss", "win"]) == {"win_rate": 0.5, "tie_rate": 0.25, "loss_rate": 0.25,
                                                           "score": 0.625}


def test_outside_support_marks_what_the_reward_model_never_saw():
    from rlhf.drift import outside_support

    answers = [NORMAL[0], "Yes.", "the sky the sky the sky the sky the sky the sky", "Same answer.", "Same answer!"]
    prompts = ["p1", "p2", "p3", "p4", "p5"]
    counts = [25, 2, 30, 20, 20]  # "Yes." is far below half of the 5th percentile (10.7 tokens)
    assert outside_support(prompts, answers, counts, LABELLED).tolist() == [False, True, True, True, True]
