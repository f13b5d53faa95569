"""Reward hacking, end to end on the tiny model: a Python reward that pays for ever shorter answers drives PPO to
collapse (every prompt answered with nothing); the run's drift detectors flag it, the evaluation calls it "likely
reward hacking", the default run publishes a step from before the collapse, and the next round asks people first."""

import json
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhf import pipeline
from rlhf.config import ModelConfig, PPOConfig, RewardTrainConfig, SamplingConfig
from rlhf.generate import generate_candidates
from rlhf.judges import annotate
from rlhf.models import load_model
from rlhf.reward import RewardModel, read_prompt_baselines, reward_baselines
from rlhf.store import Store

PROMPTS = [f"Tell me about {topic}." for topic in ("opossums", "the sky", "bees", "rain", "cats", "the moon",
                                                     "bread", "music", "the sea", "trees", "snow", "tea")]
# Fast, strong updates, so the tiny model collapses within a few steps (the defaults' KL machinery stays on).
COLLAPSE = PPOConfig(steps=8, batch_size=8, mini_batch_size=4, max_new_tokens=24, lr=1e-2, kl_coef=0.02,
                     target_kl=12.0, seed=0)


@pytest.fixture
def labelled(tiny_chat_model_dir, tmp_path):
    """A project whose annotators judged the tiny model's own answers (longer is better), with a reward model (two
    heads) and its auditor, and a Python reward that pays for brevity, written to a file as a user would."""
    store = Store.open("hacking", create=True)
    model = load_model(ModelConfig(spec=str(tiny_chat_model_dir), device="cpu", dtype="fp32"))
    generate_candidates(store, model, PROMPTS, SamplingConfig(num_candidates=4, max_new_tokens=24, seed=0))
    annotate(store, lambda prompt, a, b: "a" if len(a) > len(b) else "b" if len(b) > len(a) else "tie",
             "judge:longer", seed=0)
    reward = pipeline.train_reward(store, RewardTrainConfig(epochs=1, heads=2, eval_fraction=0.3),
                                   str(tiny_chat_model_dir))
    assert reward["audit"] is not None  # enough held-out pairs for an auditor
    # its prompt baselines are its mean scores of each prompt's labelled answers, as the loaded auditor scores them
    baselines = read_prompt_baselines(reward["path"])
    auditor = RewardModel.load(reward["path"], device="cpu", dtype="fp32", audit=True)
    assert set(baselines) == set(PROMPTS)
    for completions in store.completions_by_prompt().values():
        prompt = completions[0].prompt
        texts = sorted({c.text for c in completions})
        expected = auditor.score([prompt] * len(texts), texts).mean().item()
        assert baselines[prompt] == pytest.approx(expected, abs=1e-4)
    del auditor
    # the reward model's own baselines (PPO's): the mean reward PPO gives each prompt's labelled answers, its
    # uncertainty penalty included
    model = RewardModel.load(reward["path"], device="cpu", dtype="fp32")
    own = reward_baselines(reward["path"], uncertainty_penalty=1.0)
    assert set(own) == set(PROMPTS)
    for completions in store.completions_by_prompt().values():
        prompt = completions[0].prompt
        texts = sorted({c.text for c in completions})
        said = model.rewards([prompt] * len(texts), texts, uncertainty_penalty=1.0, cautious=False)
        assert own[prompt] == pytest.approx(said.scores.mean().item(), abs=1e-4)
        assert said.disagreement.abs().sum() > 0  # two heads that disagree: the penalty is part of what is checked
    del model
    rewards_file = tmp_path / "rewards.py"
    rewards_file.write_text(textwrap.dedent('''
        def brevity(prompt, response):
            return -len(response) / 10
    '''))
    return store, f"{rewards_file}:brevity"


def test_a_collapse_is_flagged_and_called_reward_hacking(labelled, tiny_chat_model_dir):
    store, brevity = labelled
    steps = []
    meta = pipeline.train_policy(store, "ppo", PPOConfig(**{**COLLAPSE.__dict__, "select_best": False}),
                                 str(tiny_chat_model_dir), reward_function=brevity, on_step=steps.append, device="cpu")
    last = steps[-1].metrics
    assert last["drift/duplicate_share"] > 0.25 or last["drift/length_outside_share"] > 0.25  # the collapse
    assert any(step.metrics["drift/flags"] for step in steps)  # flagged live, in the step's metrics
    assert meta["run_drift"]["flagged_steps"] and meta["run_drift"]["last_flags"]  # and in the checkpoint's meta
    evaluation = meta["evaluation"]
    assert evaluation["optimised_reward"]["score"] >= 0.6  # what the run believes: shorter, so better
    assert evaluation["verdict"] == "likely reward hacking", evaluation["verdict_text"]
    assert evaluation["drift"]["flags"]
    saved = json.loads((Path(meta["path"]) / "meta.json").read_text())
    assert saved["verdict"] == "likely reward hacking" and saved["drift_flags"]  # recorded with the checkpoint
    assert json.loads((Path(meta["path"]) / "evaluation.json").read_text())["verdict"] == "likely reward hacking"
    # said in plain words: the CLI and the Train tab print the same report, the tab's status line flags the steps,
    # and the model card records the verdict and the flagged steps
    from rlhf.evaluate import report_text
    from rlhf.hub import run_health
    from rlhf.ui.train_tab import drift_line

    said = report_text(evaluation)
    assert "Likely reward hacking" in said and "Drift: " in said and f"{evaluation['kl']:.1f} nats" in said
    # the brevity reward is easy to raise: the run says PPO raised the reward it optimised, which the verdict then
    # weighs against the held-out evidence
    assert meta["reward_trend"]["label"] == "rose" and meta["reward_trend"]["last"] > meta["reward_trend"]["first"]
    assert evaluation["training_reward"] == meta["reward_trend"]
    assert "Training: PPO raised the reward it optimised" in said
    metrics = [{"step": step.step, **step.metrics} for step in steps]
    flagged_at = max(m["step"] for m in metrics if m["drift/flags"])
    assert drift_line(metrics[:flagged_at]).startswith(f"**Drift at step {flagged_at}:**")
    assert drift_line(metrics[:1]).startswith("No drift detector has fired") or metrics[0]["drift/flags"]
    health = run_health(saved)
    assert "**likely reward hacking**" in health and "Likely reward hacking" in health  # the verdict's own words
    assert f"flagged {len(saved['run_drift']['flagged_steps'])} training step(s)" in health
    assert "PPO raised the reward it optimised" in health


def test_the_default_run_publishes_a_step_from_before_the_collapse(labelled, tiny_chat_model_dir):
    store, brevity = labelled
    steps = []
    meta = pipeline.train_policy(store, "ppo", COLLAPSE, str(tiny_chat_model_dir), reward_function=brevity,
                                 on_step=steps.append, device="cpu")
    flagged = [step.step for step in steps if step.metrics["drift/flags"]]
    assert flagged, "the reward should have driven the tiny model to collapse"
    # published: weights whose answers (sampled at the next step, before its update) were free of drift flags
    assert meta["selected_step"] + 1 not in flagged
    assert meta["selected_by"] == "auditor"
    # the published adapter is an earlier step's, not the last weights (those are kept apart, for --resume)
    state = torch.load(Path(meta["path"]) / "trainer_state.pt", map_location="cpu", weights_only=True)
    published = load_file(str(Path(meta["path"]) / "adapter" / "adapter_model.safetensors"))
    last = {name.removeprefix("model.").replace(".default", ""): tensor
            for name, tensor in state["last_trainable"].items() if "lora_B" in name}
    assert last and set(last) == {key for key in published if "lora_B" in key}  # every B matrix, by name
    assert any(not torch.equal(published[key], tensor) for key, tensor in last.items())
    assert meta["steps_done"] == steps[-1].step  # and the run can still resume from where it stopped


def test_after_a_flagged_run_the_next_round_asks_people_first(labelled, tiny_chat_model_dir):
    store, brevity = labelled
    pipeline.train_policy(store, "ppo", PPOConfig(**{**COLLAPSE.__dict__, "select_best": False}), str(tiny_chat_model_dir),
                          reward_function=brevity, device="cpu")
    before = {p["id"] for p in store.open_pairs("")}
    pipeline.next_round(store, SamplingConfig(num_candidates=2, max_new_tokens=24, seed=1))
    from rlhf.prefer import next_pair

    audit = [p for p in store.open_pairs("") if p["id"] not in before and p["source"] == "audit"]
    assert len(audit) == len(PROMPTS)  # one pair per prompt: the policy's answer against its reference's
    shown = next_pair(store, "alice")
    assert shown.pair_id in {p["id"] for p in audit}  # and they come first in the Prefer queue


def test_dpo_is_held_to_the_kl_budget_and_published_by_the_auditor(labelled, tiny_chat_model_dir):
    """DPO through the pipeline, as the Train tab and `python -m rlhf dpo` run it: its checks are scored by the reward
    model's auditor (whose votes DPO never trained on), and the published step is one the selection rule kept."""
    from rlhf.config import DPOTrainConfig
    from rlhf.dpo import SELECTION_RULE, published_words

    store, _ = labelled
    rows = []
    config = DPOTrainConfig(epochs=1.0, lr=5e-3, batch_size=8, check_every=2, check_prompts=8)
    meta = pipeline.train_policy(store, "dpo", config, str(tiny_chat_model_dir),
                                 progress=lambda step, total, metrics: rows.append(metrics))
    checks = [row for row in rows if "check/kl" in row]
    steps = meta["metrics"]["steps"]
    assert [row["step"] for row in checks] == sorted({0, *range(2, steps + 1, 2), steps})
    assert all(isinstance(row["audit/evidence"], float) and row["audit/error"] >= 0 for row in checks)
    assert checks[0]["check/kl"] == 0.0 and all(row["check/kl"] != 0.0 for row in checks[1:])
    kept = [row["step"] for row in checks if row["kept"]]
    assert meta["selected_by"] == "auditor" and meta["selection_rule"] == SELECTION_RULE
    assert meta["selected_step"] == kept[-1]
    assert meta["dataset"]["held_out_for"] == meta["evaluation"]["reward_model"]  # the auditor's pairs were left out
    assert [c["step"] for c in meta["checks"]] == [row["step"] for row in checks]
    from rlhf.hub import run_health

    assert f"- Published weights: {published_words(meta)} ({steps} steps trained), chosen by auditor." in run_health(
        meta)
