import dataclasses
import random

import pytest
import torch

from rlhf.arena import arena_pair, bradley_terry, head_to_head, leaderboard
from rlhf.config import PPOConfig, RLHFError, SamplingConfig
from rlhf.prefer import vote
from rlhf.ppo import RewardSource, train_ppo


def test_bradley_terry_recovers_the_win_ratio():
    games = [("A", "B", 1.0)] * 30 + [("A", "B", 0.0)] * 10  # A wins 3 of 4
    strength = bradley_terry(games)
    assert strength["A"] / strength["B"] == pytest.approx(3.0, rel=0.05)  # the light prior shrinks it a little
    three = bradley_terry([("A", "B", 1.0)] * 15 + [("A", "B", 0.0)] * 5 + [("B", "C", 1.0)] * 15
                          + [("B", "C", 0.0)] * 5 + [("A", "C", 1.0)] * 18 + [("A", "C", 0.0)] * 2)
    assert three["A"] > three["B"] > three["C"]
    assert bradley_terry([]) == {}


def test_arena_votes_are_preference_pairs_and_feed_the_leaderboard(store, tiny_model_dir):
    config = PPOConfig(steps=1, batch_size=2, mini_batch_size=2, max_new_tokens=4, lr=5e-2)
    policy = train_ppo(store, dataclasses.replace(config), str(tiny_model_dir),
                       RewardSource(lambda p, r: torch.tensor([float(len(x)) for x in r]), "function:len"), prompts=["a", "b"],
                       device="cpu")
    sampling = SamplingConfig(num_candidates=1, max_new_tokens=6, seed=0)
    for i in range(3):
        shown = arena_pair(store, f"Question {i}?", str(tiny_model_dir), policy["path"], "alice", sampling,
                           rng=random.Random(i))
        assert shown.kind == "arena" and shown.left and shown.right
        receipt = vote(store, shown.presentation_id, "a", "alice", source="arena")
        assert {receipt.left_model, receipt.right_model} == {str(tiny_model_dir), f"{policy['path']} @ {policy['id']}"}
    votes = store.votes()
    assert len(votes) == 3 and {v["source"] for v in votes} == {"arena"}
    games = head_to_head(store)
    assert len(games) == 3 and {frozenset(g[:2]) for g in games} == {frozenset({str(tiny_model_dir), policy["id"]})}
    rows = leaderboard(store, bootstrap=20)
    assert {r["model"] for r in rows} == {str(tiny_model_dir), policy["id"]}
    assert all(r["votes"] == 3 and r["ci_low"] <= r["rating"] <= r["ci_high"] for r in rows)
    with pytest.raises(RLHFError, match="two different models"):
        arena_pair(store, "Hi", str(tiny_model_dir), str(tiny_model_dir), "alice", sampling)

    # What visitors asked stays in the arena: not in anyone's Prefer queue, not a prompt to train or sample on,
    # and (the head-to-head of an excluded annotator aside) it still ranks the models.
    unvoted = arena_pair(store, "Visitor text?", str(tiny_model_dir), policy["path"], "mallory", sampling)
    assert store.open_pairs("bob") == [] and unvoted.pair_id not in [p["id"] for p in store.open_pairs("alice")]
    assert store.prompts() == []  # the four arena questions are no prompts to train or sample on
    store.exclude_annotator("alice", "owner")
    assert head_to_head(store) == []
    from rlhf.generate import generate_candidates
    from rlhf.models import load_model
    from rlhf.config import ModelConfig

    loaded = load_model(ModelConfig(spec=str(tiny_model_dir), device="cpu", dtype="fp32"))
    generate_candidates(store, loaded, ["Question 0?"], SamplingConfig(num_candidates=2, max_new_tokens=4))
    assert "Question 0?" in [p.text for p in store.prompts()]  # the owner generated for it: now a training prompt


def test_arena_refuses_a_prompt_over_the_limit_before_loading_a_model(store):
    from rlhf.generate import MAX_PROMPT_CHARS

    with pytest.raises(RLHFError, match=f"over the limit of {MAX_PROMPT_CHARS}"):
        arena_pair(store, "x" * (MAX_PROMPT_CHARS + 1), "no/such-model", "no/other-model", "alice")
    assert store.counts()["prompts"] == 0
