"""One pipeline: a round run from the CLI leaves exactly what the same round run from the UI's handlers leaves (the
rounds timeline, the leaderboard's evaluation figures, the checkpoint's record and its model card), because both
call the same rlhf.pipeline functions."""

import json
from pathlib import Path

from conftest import run_cli
from test_jobs import wait

from rlhf.checkpoints import list_checkpoints
from rlhf.store import Store

PROMPTS = [f"Question number {i}?" for i in range(6)]
SAMPLING = ["--num-candidates", "3", "--max-new-tokens", "8", "--seed", "0"]
PPO = {"steps": 2, "batch_size": 4, "mini_batch_size": 2, "max_new_tokens": 6}
JUDGE = "def shorter(prompt, a, b):\n    return 'a' if len(a) <= len(b) else 'b'\n"


def cli_round(model: str, judge: str) -> Store:
    for command in (("projects", "--create", "cli"),
                    ("generate", "--project", "cli", "--prompts", "-", *SAMPLING, "--model", model),
                    ("annotate", "--project", "cli", "--judge", judge, "--seed", "0"),
                    ("train-reward", "--project", "cli", "--epochs", "1", "--model", model),
                    ("ppo", "--project", "cli", "--model", model, "--steps", "2", "--batch-size", "4",
                     "--mini-batch-size", "2", "--max-new-tokens", "6"),
                    ("next-round", "--project", "cli")):
        done = run_cli(*command, stdin="\n".join(PROMPTS))
        assert done.returncode == 0, (command, done.stderr)
    return Store.open("cli")


def ui_round(model: str, judge: str) -> Store:
    """The same round through what the tabs call: Generate's handler, the judges, the Train tab's job runner and its
    next-round button."""
    from rlhf.config import PPOConfig, RewardTrainConfig
    from rlhf.jobs import start_training
    from rlhf.judges import annotate, load_function
    from rlhf.ui import generate_tab, train_tab

    store = Store.open("ui", create=True)
    generate_tab.generate("ui", "\n".join(PROMPTS), model, 3, 8, 0.7, 1.0, 0, progress=lambda *args, **kwargs: None)
    annotate(store, load_function(judge), "judge:shorter", seed=0)  # the name the CLI gives it
    for kind, config in (("reward", RewardTrainConfig(epochs=1)), ("ppo", PPOConfig(**PPO))):
        job = wait(start_training(kind, "ui", model, config), timeout=300)
        assert job.status == "done", job.error
    train_tab.start_next_round("ui", progress=lambda *args, **kwargs: None)
    return store


def artefacts(store: Store) -> dict:
    """What the timeline, the leaderboard and the card read, as field names (values differ run to run)."""
    from rlhf.arena import _evaluations
    from rlhf.hub import model_card, read_record, stage_checkpoint
    from rlhf.rounds import rounds

    [policy] = list_checkpoints(store, ("ppo",))
    staged = Path(store.folder) / "staged"
    pushed_meta, warnings = stage_checkpoint(policy, staged, read_record(store), False)
    evaluation = json.loads((staged / "evaluation.json").read_text())
    card = model_card(pushed_meta, "me/p", None, None, evaluation, False, warnings, {"adapter"})
    sections = [line for line in card.text.splitlines() if line.startswith("## ")]
    timeline = rounds(store)
    runs = store.candidate_generation_runs()
    return {
        "timeline": [sorted(k for k, v in row.items() if v is not None) for row in timeline],
        "leaderboard_evaluation": sorted(_evaluations(store)[policy["id"]]),
        "meta": sorted(policy),
        "verdict": policy.get("verdict") is not None,
        "card_sections": sections,
        "card_has_health": "Verdict of the before/after evaluation" in card.text,
        "next_round_from_policy": runs[-1]["checkpoint_id"] == policy["id"],
        "next_round_sampling": {k: runs[-1]["params"][k] for k in ("num_candidates", "max_new_tokens")},
    }


def test_a_cli_round_leaves_what_a_ui_round_leaves(tmp_path, tiny_model_dir):
    judge = tmp_path / "judges.py"
    judge.write_text(JUDGE)
    reference = f"{judge}:shorter"
    from_cli = artefacts(cli_round(str(tiny_model_dir), reference))
    from_ui = artefacts(ui_round(str(tiny_model_dir), reference))
    assert from_cli == from_ui
    # and what both leave is the whole record: an evaluated round, a verdict, the card's health section, the next
    # round sampled from the new policy like the first generation
    assert {"win_rate_vs_previous", "kl", "reward_model_accuracy"} <= set(from_cli["timeline"][0])
    assert {"verdict", "kl", "held_out", "optimised_reward", "drift"} <= set(from_cli["leaderboard_evaluation"])
    assert from_cli["verdict"] and from_cli["card_has_health"] and from_cli["next_round_from_policy"]
    assert from_cli["next_round_sampling"] == {"num_candidates": 3, "max_new_tokens": 8}
