"""Rounds: each policy records its round and lineage; next-round samples from the newest policy."""

import dataclasses

from conftest import run_cli

from rlhf.config import PPOConfig, RewardTrainConfig
from rlhf.judges import annotate
from rlhf.ppo import resolve_reward, train_ppo
from rlhf.reward import train_reward_model
from rlhf.rounds import newest_policy, rounds
from rlhf.store import Store
from test_prefer import add_candidates


def test_two_rounds(tiny_model_dir):
    store = Store.open("rounds", create=True)
    add_candidates(store, prompts=[f"prompt {i}" for i in range(5)], k=3)
    annotate(store, lambda prompt, a, b: "a" if len(a) < len(b) else "b", "judge:short", seed=0)
    reward = train_reward_model(store, RewardTrainConfig(epochs=1), str(tiny_model_dir))
    config = PPOConfig(steps=1, batch_size=2, mini_batch_size=2, max_new_tokens=4)
    reward_source = resolve_reward(store, config)
    first = train_ppo(store, config, str(tiny_model_dir), reward_source, device="cpu")
    assert first["round"] == 1 and first["reward"] == reward["id"]
    assert first["dataset"]["fingerprint"] == reward["dataset"]["fingerprint"]  # which data, through the reward model
    assert newest_policy(store) == first["path"]

    done = run_cli("next-round", "--project", "rounds", "--max-new-tokens", "4")
    assert done.returncode == 0, done.stderr
    runs = store.generation_runs()
    assert runs[-1]["checkpoint_id"] == first["id"]  # round 2's candidates come from round 1's policy
    annotate(store, lambda prompt, a, b: "b", "judge:short", seed=1)
    second = train_ppo(store, dataclasses.replace(config, seed=1), first["path"], reward_source, device="cpu")
    assert second["round"] == 2 and second["parent"] == first["id"]

    timeline = rounds(store)
    assert [r["round"] for r in timeline] == [1, 2]
    assert timeline[0]["votes_added"] == 15  # 5 prompts x 3 candidates = 15 pairs
    assert timeline[1]["votes_added"] == 5  # next-round: 2 candidates a prompt = 5 pairs
    listed = run_cli("rounds", "--project", "rounds")
    assert "round 1:" in listed.stdout and "round 2:" in listed.stdout


def test_a_new_round_samples_like_the_last_generation_not_like_the_arena(store):
    from rlhf.config import SamplingConfig
    from rlhf.rounds import last_sampling

    assert last_sampling(store) == SamplingConfig()  # nothing generated yet: the defaults
    store.start_generation_run("bundled", None, {"num_candidates": 3, "max_new_tokens": 12, "temperature": 0.5,
                                                 "top_p": 0.9, "seed": 7, "batch_size": 8})
    store.start_generation_run("bundled", None, {"num_candidates": 1, "max_new_tokens": 256, "source": "arena"})
    store.start_generation_run("bundled", None, {"num_candidates": 1, "max_new_tokens": 12, "source": "audit"})
    assert last_sampling(store) == SamplingConfig(num_candidates=3, max_new_tokens=12, temperature=0.5, top_p=0.9)
    store.start_generation_run("bundled", None, {"num_candidates": 1, "max_new_tokens": 20, "source": "cli:p.txt"})
    assert last_sampling(store) == SamplingConfig(num_candidates=2, max_new_tokens=20)  # two answers to compare
