"""The whole loop, twice, in a real Chromium on the tiny model: create a project, generate, label with the keyboard,
train a reward model, run a few PPO steps, compare in the arena and vote, see the leaderboard, start the next round;
then check that every step's data is in the store and in the export."""

import json
from pathlib import Path

import pytest

from browser_loop import (LoopSizes, RoundTimes, arena, create_project, generate, label_all, leaderboard, next_round,
                          prefer_longer_or_shorter, train)
from conftest import ARTIFACTS
from rlhf.checkpoints import list_checkpoints
from rlhf.pipeline import FLAGGED_VERDICTS
from rlhf.store import Store

pytestmark = pytest.mark.browser

PROMPTS = ["What is an opossum?", "Why do opossums play dead?", "Where do opossums live?", "Are opossums dangerous?",
           "What do opossums eat?", "Is an opossum a good pet?", "How long do opossums live?",
           "Do opossums carry rabies?", "What sound does an opossum make?", "Can opossums climb trees?"]


def test_the_whole_loop_twice_in_the_browser(page, tiny_model_dir):
    from rlhf.dataset import export_preferences
    from rlhf.rounds import rounds

    sizes = LoopSizes(prompts=PROMPTS, max_new_tokens=12, ppo_steps=2, ppo_batch=4, ppo_mini=2, ppo_tokens=8, timeout_ms=40_000)
    choose = prefer_longer_or_shorter("shorter")
    create_project(page, "loop")
    store = Store.open("loop")

    # Round 1: candidates from the base model.
    first = RoundTimes()
    generate(page, sizes, first)
    label_all(page, "alice", choose, first, sizes.timeout_ms)
    reward_1 = train(page, "reward", sizes, first)
    policy_1 = train(page, "ppo", sizes, first)
    policy_1_path = str(store.folder / "checkpoints" / policy_1)
    arena(page, policy_1_path, None, "Tell me about opossums.", first, sizes.timeout_ms)
    board = leaderboard(page, policy_1, sizes.timeout_ms)
    # a run whose verdict is flagged (likely on a random tiny model) is audited by people first in the next round
    audited_1 = list_checkpoints(store, ("ppo",))[0].get("verdict") in FLAGGED_VERDICTS
    next_round(page, policy_1, first, sizes.timeout_ms)
    assert first.votes == len(PROMPTS)  # one pair a prompt, each labelled once
    assert "plain order (no reward model" in first.queue_line and "Reward model" not in first.reveals[0]

    # Round 2: the new candidates come from policy 1; the next PPO starts from it (the Train tab picked it).
    second = RoundTimes()
    label_all(page, "alice", choose, second, sizes.timeout_ms)
    # with a reward model, the least certain pairs come first and each vote shows the model's guess
    assert f"least certain first (reward model {reward_1})" in second.queue_line
    assert sum("Reward model" in reveal for reveal in second.reveals) >= len(PROMPTS)
    reward_2 = train(page, "reward", sizes, second)
    assert policy_1_path in page.input_value("#cli-equivalent textarea")  # PPO starts from the round-1 policy
    policy_2 = train(page, "ppo", sizes, second)
    arena(page, str(store.folder / "checkpoints" / policy_2), policy_1_path, "Are opossums marsupials?", second,
          sizes.timeout_ms)
    board = leaderboard(page, policy_2, sizes.timeout_ms)
    assert policy_1 in board  # both rounds' policies are ranked
    next_round(page, policy_2, second, sizes.timeout_ms)
    page.screenshot(path=str(ARTIFACTS / "loop.png"), full_page=True)
    # new candidates for every prompt (the arena's question and pair stay in the arena: visitors' text), plus one
    # audit pair per prompt when round 1 was flagged
    assert second.votes == len(PROMPTS) * (2 if audited_1 else 1)

    # Every step is in the store ...
    runs = store.candidate_generation_runs()
    assert [r["checkpoint_id"] for r in runs] == [None, policy_1, policy_2]  # base, then each round's policy
    votes = store.votes()
    assert sum(v["source"] == "arena" for v in votes) == 2
    assert sum(v["source"] == "prefer" for v in votes) == first.votes + second.votes
    assert [m["id"] for m in list_checkpoints(store, ("reward",))] == [reward_1, reward_2]
    policies = list_checkpoints(store, ("ppo",))
    assert [(m["id"], m["round"]) for m in policies] == [(policy_1, 1), (policy_2, 2)]
    assert policies[1]["reward"] == reward_2 and policies[1]["parent"] == policy_1
    timeline = rounds(store)
    assert [r["round"] for r in timeline] == [1, 2] and all(r["win_rate_vs_previous"] is not None for r in timeline)
    evaluation = json.loads((Path(policies[1]["path"]) / "evaluation.json").read_text())
    assert evaluation["reference"] == policy_1_path  # round 2 is judged against round 1's policy
    # ... and in the export: prefer and arena votes alike.
    export = export_preferences(store, store.folder / "exports" / "check")
    assert sum(export.rows.values()) == len(votes)
