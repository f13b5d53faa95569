"""Reward model: the pure functions by hand, then real training on the tiny model (no mocks), scoring, and the CLI.

One LoRA reward model is trained per module on a toy preference a model can learn (the judge prefers the answer that
praises opossums) and shared by the tests that read it.
"""

import argparse
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

from rlhf.checkpoints import fingerprint_files, run_log_path
from rlhf.config import RewardTrainConfig, RLHFError
from rlhf.judges import annotate
from rlhf.reward import (
    RewardModel,
    answer_start,
    bootstrap_weights,
    build_reward_model,
    conversation,
    conversation_ids,
    load_sequence_classifier,
    load_tokenizer,
    mean_over_answer,
    normalise,
    pad_right,
    ensemble_reward,
    pairwise_accuracy,
    prompt_baselines,
    prompt_key,
    reward_baselines,
    split_by_pair,
    split_ties,
    train_reward_model,
    weighted_pair_loss,
)
from rlhf.store import Store
from test_dataset import labelled_project


# pure functions, by hand -------------------------------------------------------------------------------------------
def test_pairwise_accuracy_by_hand():
    assert pairwise_accuracy([2.0, 1.0, 0.5, -1.0], [1.0, 3.0, 0.5, -2.0]) == 0.5  # win, loss, tie (a loss), win
    assert pairwise_accuracy(torch.tensor([1.0]), torch.tensor([0.0])) == 1.0
    with pytest.raises(ValueError, match="one length"):
        pairwise_accuracy([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no pairs"):
        pairwise_accuracy([], [])


def test_prompt_baselines_average_each_prompts_answers():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    assert prompt_key([{"role": "user", "content": "Hi?"}]) == prompt_key("Hi?") == "Hi?"  # one user message: its text
    assert prompt_key(chat) != "Hi?"  # a system prompt makes it another prompt
    baselines = prompt_baselines(["Hi?", [{"role": "user", "content": "Hi?"}], chat, "Bye?"], [1.0, 2.0, -1.0, 0.5])
    assert baselines == {"Hi?": 1.5, prompt_key(chat): -1.0, "Bye?": 0.5}


def test_reward_baselines_are_the_mean_score_less_the_penalised_mean_disagreement(tmp_path):
    assert reward_baselines(tmp_path, 1.0) == {}  # a checkpoint trained before they were kept
    (tmp_path / "prompt_baselines.json").write_text(json.dumps(
        {"score": {"Hi?": 1.5, "Bye?": -0.5}, "disagreement": {"Hi?": 0.2, "Bye?": 0.0}}))
    assert reward_baselines(tmp_path, 0.0) == {"Hi?": 1.5, "Bye?": -0.5}
    assert reward_baselines(tmp_path, 2.0) == pytest.approx({"Hi?": 1.1, "Bye?": -0.5})


def test_normalise_by_hand():
    scores = torch.tensor([1.0, 3.0, 5.0])
    assert torch.allclose(normalise(scores, mean=3.0, std=2.0), torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(normalise([4.0], mean=1.0, std=0.5), torch.tensor([6.0]))
    with pytest.raises(ValueError, match="std must be positive"):
        normalise(scores, mean=0.0, std=0.0)


def test_normalise_each_head_on_its_own():
    scores = torch.tensor([[1.0, 10.0], [3.0, 30.0]])  # (N=2, K=2)
    assert torch.allclose(normalise(scores, mean=[2.0, 20.0], std=[1.0, 10.0]), torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


def test_bootstrap_weights_resample_each_head():
    weights = bootstrap_weights(n_rows=50, heads=4, seed=0)
    assert weights.shape == (50, 4)
    assert (weights.sum(0) == 50).all()  # each head draws N rows with replacement
    assert (weights == 0).any(0).all()  # so each head leaves some rows out (about 37% of them)
    assert not torch.equal(weights[:, 0], weights[:, 1])  # and heads differ
    assert torch.equal(bootstrap_weights(50, 4, seed=0), weights)  # seeded
    assert torch.equal(bootstrap_weights(3, 1, seed=0), torch.ones(3, 1))  # one head: every row once


def test_weighted_pair_loss_by_hand():
    chosen, rejected = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    # head 0: -log sigmoid(1) = 0.3133; head 1: -log sigmoid(0) = log 2 = 0.6931
    assert weighted_pair_loss(chosen, rejected, torch.ones(1, 2)).item() == pytest.approx((0.31326 + 0.69315) / 2,
                                                                                        abs=1e-4)
    # counted twice by head 0 and not at all by head 1: only head 0's loss
    assert weighted_pair_loss(chosen, rejected, torch.tensor([[2.0, 0.0]])).item() == pytest.approx(0.31326, abs=1e-4)


def test_a_tie_pulls_two_scores_together_by_hand():
    chosen, rejected = torch.tensor([[2.0]]), torch.tensor([[0.0]])
    decided, tie = torch.tensor([1.0]), torch.tensor([0.5])
    # decided: -log sigmoid(2) = softplus(-2) = 0.1269, as without a label
    assert weighted_pair_loss(chosen, rejected, torch.ones(1, 1), decided).item() == pytest.approx(0.12693, abs=1e-4)
    assert weighted_pair_loss(chosen, rejected, torch.ones(1, 1), decided) == weighted_pair_loss(
        chosen, rejected, torch.ones(1, 1))
    # tie: (softplus(-2) + softplus(2)) / 2 = (0.1269 + 2.1269) / 2 = 1.1269, the same whichever answer is first
    assert weighted_pair_loss(chosen, rejected, torch.ones(1, 1), tie).item() == pytest.approx(1.12693, abs=1e-4)
    assert weighted_pair_loss(rejected, chosen, torch.ones(1, 1), tie).item() == pytest.approx(1.12693, abs=1e-4)
    # least (log 2) where the scores are equal: there its gradient is zero, elsewhere it pushes the gap shut
    level = torch.tensor([[0.3]], requires_grad=True)
    loss = weighted_pair_loss(level, torch.tensor([[0.3]]), torch.ones(1, 1), tie)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2)) and level.grad.item() == pytest.approx(0.0, abs=1e-7)
    gap = torch.tensor([[2.0]], requires_grad=True)
    weighted_pair_loss(gap, torch.tensor([[0.0]]), torch.ones(1, 1), tie).backward()
    assert gap.grad.item() == pytest.approx(0.5 * (torch.sigmoid(torch.tensor(2.0)).item() - 0.5) * 2, abs=1e-5)


def test_split_ties_follow_their_pair():
    # pair 1 and 2 have decided votes too: held-out pair 2's tie is held out, pair 1's trains; 10 pairs are ties only
    tie_pair_ids = [1, 2, *range(10, 20)]
    train, held_out = split_ties(tie_pair_ids, held_out_pairs={2}, decided_pairs={1, 2}, eval_fraction=0.2, seed=0)
    assert sorted(train + held_out) == list(range(12))
    assert 0 in train and 1 in held_out
    assert len(held_out) == 1 + 2  # pair 2's, and round(10 tie-only pairs * 0.2)
    assert split_ties(tie_pair_ids, {2}, {1, 2}, 0.2, seed=0) == (train, held_out)  # seeded
    assert split_ties([], set(), set(), 0.2, 0) == ([], [])


def test_ensemble_reward_is_mean_minus_k_std():
    heads = torch.tensor([[1.0, 3.0], [2.0, 2.0]])  # answer 0: heads disagree (std 1); answer 1: they agree
    reward, disagreement = ensemble_reward(heads, uncertainty_penalty=0.5)
    assert torch.allclose(disagreement, torch.tensor([1.0, 0.0]))
    assert torch.allclose(reward, torch.tensor([2.0 - 0.5, 2.0]))
    single, none = ensemble_reward(torch.tensor([[4.0]]), uncertainty_penalty=1.0)
    assert single.item() == 4.0 and none.item() == 0.0


def test_split_by_pair_keeps_both_votes_on_a_pair_together():
    pair_ids = [1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # pair 2 labelled by two annotators
    train, held_out = split_by_pair(pair_ids, eval_fraction=0.2, seed=0)
    assert sorted(train + held_out) == list(range(len(pair_ids)))
    assert len({pair_ids[i] for i in held_out}) == 2  # round(10 pairs * 0.2)
    assert not {pair_ids[i] for i in train} & {pair_ids[i] for i in held_out}
    assert split_by_pair(pair_ids, 0.2, seed=0) == (train, held_out)  # seeded
    assert split_by_pair(pair_ids, 0.0, seed=0) == (list(range(11)), [])
    assert len(split_by_pair([1, 2], 0.01, seed=0)[1]) == 1  # something is always held out when asked for
    assert len(split_by_pair([1, 2], 0.99, seed=0)[0]) == 1  # and something always trains


def test_pad_right_and_conversation():
    input_ids, attention_mask = pad_right([[5, 6, 7], [8]], pad_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert conversation("Hi?", "Yo.") == [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Yo."}]
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    assert conversation(system, "Yo.")[:2] == system


def test_mean_over_answer_by_hand():
    token_scores = torch.tensor([[[1.0], [2.0], [3.0], [4.0]],
                                 [[5.0], [6.0], [7.0], [9.0]]])  # (B=2, T=4, K=1); the second row is padded at 3
    attention_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    pooled = mean_over_answer(token_scores, attention_mask, torch.tensor([2, 1]))
    assert pooled.tolist() == [[(3 + 4) / 2], [(6 + 7) / 2]]  # the prompt's tokens and the padding are left out
    two_heads = torch.cat([token_scores, -token_scores], dim=2)  # (2, 4, 2): each head pooled on its own
    assert mean_over_answer(two_heads, attention_mask, torch.tensor([2, 1])).tolist() == [[3.5, -3.5], [6.5, -6.5]]


def test_answer_start_is_where_the_answer_begins(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    chat = conversation("Why do opossums play dead?", "To fool a predator.")
    ids = conversation_ids(tokenizer, chat)
    start = answer_start(tokenizer, chat)
    assert tokenizer.decode(ids[start:]) == "To fool a predator.<|im_end|>\n"
    assert tokenizer.decode(ids[:start]).endswith("<|im_start|>assistant\n")
    # truncation drops tokens from the front, so the answer starts that many tokens earlier, and never below 0
    assert answer_start(tokenizer, chat, max_length=len(ids) - 3) == start - 3
    assert answer_start(tokenizer, chat, max_length=4) == 0


# tokenisation: the same as TRL's -----------------------------------------------------------------------------------
def test_conversation_ids_match_trl_reward_trainer_tokenisation(store, tmp_path, tiny_model_dir):
    """We tokenise pairs ourselves (to truncate instead of dropping long ones); TRL must see the very same ids."""
    from trl import RewardConfig, RewardTrainer

    from rlhf.dataset import training_pairs

    labelled_project(store)
    rows = training_pairs(store, min_pairs=1).dataset
    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_sequence_classifier(tiny_model_dir, tokenizer.pad_token_id)
    args = RewardConfig(output_dir=str(tmp_path / "rm"), use_cpu=True, bf16=False, activation_checkpointing=False,
                        report_to=[])
    trainer = RewardTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    for row, trl_row in zip(rows, trainer.train_dataset):
        for side in ("chosen", "rejected"):
            ours = conversation_ids(tokenizer, conversation(row["prompt"], row[side][0]["content"]))
            assert ours == trl_row[f"{side}_ids"]
    first = conversation_ids(tokenizer, conversation("p1", "p1 answer 1"))
    assert first == trainer.train_dataset[0]["chosen_ids"]
    assert tokenizer.decode(first) == (  # SmolLM2's default system prompt; no generation prompt after the answer
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\np1<|im_end|>\n<|im_start|>assistant\np1 answer 1<|im_end|>\n"
    )
    assert conversation_ids(tokenizer, conversation("p1", "p1 answer 1"), max_length=5) == first[-5:]  # keeps the end
    # the head finds the last real token through config.pad_token_id: <|endoftext|>, not the EOS that ends each turn
    assert model.config.pad_token_id == tokenizer.pad_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


# training on a learnable toy preference ----------------------------------------------------------------------------
GOOD, BAD = "Opossums are wonderful animals, {}.", "Cats are fine, {}."


def opossum_project(store, n_prompts=12):
    """n_prompts pairs, one answer praising opossums, in alternating candidate order; a judge prefers it."""
    run = store.start_generation_run("base-model", None, {"temperature": 0.8})
    rows = []
    for i in range(n_prompts):
        answers = [GOOD.format(i), BAD.format(i)][:: 1 if i % 2 else -1]
        rows += [(f"Question {i}?", j, text, 5, "stop") for j, text in enumerate(answers)]
    store.add_completions(run, rows, source="test")
    decided = annotate(store, lambda prompt, a, b: "a" if "Opossum" in a else "b", "judge:opossum", seed=0)
    assert decided == n_prompts
    return store


TOY_CONFIG = RewardTrainConfig(epochs=4, lr=2e-2, batch_size=4, lora_r=4, lora_alpha=8)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """One LoRA reward model trained on the opossum project: (store, meta, lines of the live log)."""
    store = opossum_project(Store.open("toy", create=True, root=tmp_path_factory.mktemp("home")))
    steps = []

    def progress(step, total, metrics):  # what the run's log holds when each step is reported
        [log] = (store.folder / "runs").glob("reward-*.jsonl")
        steps.append((step, total, [json.loads(line) for line in log.read_text().splitlines()]))

    meta = train_reward_model(store, TOY_CONFIG, str(tiny_model_dir), progress=progress)
    assert steps and steps[-1][0] == steps[-1][1] == meta["metrics"]["steps"]
    assert all([row["step"] for row in rows] == list(range(1, step + 1)) for step, _, rows in steps)  # live
    return store, meta, [json.loads(line) for line in run_log_path(store, meta["id"]).read_text().splitlines()]


def test_training_writes_a_complete_checkpoint(trained, tiny_model_dir):
    store, meta, live = trained
    path = Path(meta["path"])
    assert path.parent == store.folder / "checkpoints" and path.name == meta["id"] and meta["id"].startswith("reward-")
    assert (path / "adapter" / "adapter_config.json").is_file()
    assert (path / "adapter" / "adapter_model.safetensors").is_file()
    assert (path / "adapter" / "tokenizer.json").is_file() and not (path / "model").exists()
    assert not list(path.parent.glob(".*partial"))
    kept = json.loads((path / "prompt_baselines.json").read_text())  # PPO's per-prompt baselines
    assert set(kept) == {"score", "disagreement"} and len(kept["score"]) == len(kept["disagreement"]) > 1
    saved = json.loads((path / "meta.json").read_text())
    assert {k: v for k, v in meta.items() if k != "path"} == saved  # what is returned is what was written
    assert (meta["kind"], meta["base_model"]) == ("reward", str(tiny_model_dir))
    assert meta["config"]["lr"] == TOY_CONFIG.lr and meta["config"]["lora"] is True
    m = meta["metrics"]
    assert (m["n_train"], m["n_eval"]) == (10, 2) and m["steps"] == 4 * math.ceil(10 / 4)
    assert math.isfinite(m["train_loss"]) and m["final_loss"] < m["train_loss"] < math.log(2) + 0.05
    assert set(meta["normalisation"]) == {"mean", "std"} and len(meta["normalisation"]["std"]) == TOY_CONFIG.heads
    assert min(meta["normalisation"]["std"]) > 0 and meta["heads"] == TOY_CONFIG.heads
    assert meta["audit"] is None  # 2 held-out pairs: too few for an auditor
    labelled = meta["labelled_answers"]
    assert labelled["count"] == 24 and labelled["score_min"] < 0 < labelled["score_max"]  # 12 pairs, 24 answers
    assert meta["dataset"]["rows"] == 12 and len(meta["dataset"]["fingerprint"]) == 16
    assert len(meta["dataset"]["eval_pair_ids"]) == 2
    lines = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in lines[:-1]] == list(range(1, m["steps"] + 1))
    assert {"reward/loss", "reward/accuracy", "reward/margin", "reward/learning_rate"} <= set(lines[0])
    assert lines[-1]["reward/eval_accuracy"] == m["eval_accuracy"]
    assert live == lines  # the live log saw every line as it came


def test_every_trainable_parameter_changed(trained, tiny_model_dir):
    from peft import PeftModel

    _, meta, _ = trained
    tokenizer = load_tokenizer(tiny_model_dir)
    initial = build_reward_model(tiny_model_dir, TOY_CONFIG, tokenizer.pad_token_id)
    again = build_reward_model(tiny_model_dir, TOY_CONFIG, tokenizer.pad_token_id)
    before = {name: p.detach().clone() for name, p in initial.named_parameters() if p.requires_grad}
    assert all(torch.equal(before[name], p) for name, p in again.named_parameters() if p.requires_grad)  # seeded
    assert any(".score." in name for name in before) and any("lora_B" in name for name in before)
    base = load_sequence_classifier(tiny_model_dir, tokenizer.pad_token_id, heads=TOY_CONFIG.heads)
    after = dict(PeftModel.from_pretrained(base, Path(meta["path"]) / "adapter").named_parameters())
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert unchanged == []


def test_scores_are_normalised_and_accuracy_is_computed_right(trained):
    from datasets import Dataset

    _, meta, _ = trained
    reward_model = RewardModel.load(meta["path"], device="cpu", dtype="fp32")
    rows = Dataset.from_parquet(str(Path(meta["dataset"]["export_dir"]) / "data" / "train.parquet")).to_list()
    chosen = reward_model.score([r["prompt"] for r in rows], [r["chosen"][0]["content"] for r in rows])
    rejected = reward_model.score([r["prompt"] for r in rows], [r["rejected"][0]["content"] for r in rows])
    # on the reference samples (every answer of the pairs, once each) each head scores ~N(0, 1)
    heads = torch.cat([reward_model.score_heads([r["prompt"] for r in rows], [r[side][0]["content"] for r in rows])
                       for side in ("chosen", "rejected")])  # (N, K)
    assert heads.shape == (2 * len(rows), TOY_CONFIG.heads) and torch.isfinite(heads).all()
    assert heads.mean(0).abs().max().item() < 1e-3 and (heads.std(0, correction=0) - 1).abs().max().item() < 1e-3
    assert torch.allclose(torch.cat([chosen, rejected]), heads.mean(1))  # `score` is the heads' mean
    # the meta's accuracies are the share of pairs ranked right, recomputed here from the loaded model
    held_out = [i for i, r in enumerate(rows) if r["pair_id"] in meta["dataset"]["eval_pair_ids"]]
    trained_on = [i for i in range(len(rows)) if i not in held_out]
    assert meta["metrics"]["eval_accuracy"] == pairwise_accuracy(chosen[held_out], rejected[held_out])
    assert meta["metrics"]["train_accuracy"] == pairwise_accuracy(chosen[trained_on], rejected[trained_on])
    # and the toy preference was learnt, also on a prompt and answers it never saw
    assert meta["metrics"]["eval_accuracy"] == meta["metrics"]["train_accuracy"] == 1.0
    unseen = reward_model.score(["Question 99?"] * 2, [GOOD.format(99), BAD.format(99)])
    assert unseen[0] > unseen[1]
    raw = reward_model.score_raw(["Question 99?"], [GOOD.format(99)])  # (1, K)
    stats = meta["normalisation"]
    expected = ((raw - torch.tensor(stats["mean"])) / torch.tensor(stats["std"])).mean(1)
    assert torch.allclose(unseen[:1], expected)


def test_batched_scores_equal_one_at_a_time(trained):
    """Right padding and the pad id: the reward is read at each sequence's own last real token."""
    _, meta, _ = trained
    reward_model = RewardModel.load(meta["path"], device="cpu", dtype="fp32")
    prompts = ["Hi", "A much longer question about opossums and their habits?", "Why?"]
    responses = ["Opossums!", "Cats are fine, but opossums are wonderful animals with fifty teeth.", ""]
    batched = reward_model.score(prompts, responses, batch_size=16)
    single = torch.cat([reward_model.score([p], [r]) for p, r in zip(prompts, responses)])
    assert torch.allclose(batched, single, atol=1e-5)
    assert reward_model.model.config.pad_token_id == reward_model.tokenizer.pad_token_id


def test_a_reward_read_as_the_mean_over_the_answer_trains_saves_and_scores_the_same(tiny_model_dir, tmp_path):
    """pooling="mean": the toy preference is learnt, the loaded model normalises the labelled answers to ~N(0, 1)
    (so it reads scores as training did), and its raw score is the mean of the head's output over the answer's
    tokens, recomputed here one prefix at a time (causal attention: the last-token score of a prefix is the head's
    output at that token)."""
    store = opossum_project(Store.open("mean", create=True, root=tmp_path))
    config = dataclasses.replace(TOY_CONFIG, pooling="mean")
    meta = train_reward_model(store, config, str(tiny_model_dir))
    assert meta["config"]["pooling"] == "mean" and meta["metrics"]["train_accuracy"] == 1.0
    reward_model = RewardModel.load(meta["path"], device="cpu", dtype="fp32")
    assert reward_model.pooling == "mean"
    unseen = reward_model.score(["Question 99?"] * 2, [GOOD.format(99), BAD.format(99)])
    assert unseen[0] > unseen[1]
    answers = [(f"Question {i}?", text.format(i)) for i in range(12) for text in (GOOD, BAD)]
    heads = reward_model.score_heads([p for p, _ in answers], [a for _, a in answers])
    assert abs(heads.mean().item()) < 1e-3 and abs(heads.std(correction=0).item() - 1) < 1e-3

    chat = conversation("Question 99?", GOOD.format(99))
    ids = conversation_ids(reward_model.tokenizer, chat)
    start = answer_start(reward_model.tokenizer, chat)
    with torch.no_grad():
        per_token = [reward_model.model(input_ids=torch.tensor([ids[: t + 1]])).logits[0, 0].item()
                     for t in range(start, len(ids))]
    raw = reward_model.score_raw(["Question 99?"], [GOOD.format(99)])[0, 0].item()
    assert raw == pytest.approx(sum(per_token) / len(per_token), abs=1e-4)
    assert raw != pytest.approx(per_token[-1], abs=1e-4)  # not the last token's reading
    batched = reward_model.score(["Hi", "Question 99?"], ["Opossums!", BAD.format(99)])  # padding: rows apart
    single = torch.cat([reward_model.score(["Hi"], ["Opossums!"]),
                        reward_model.score(["Question 99?"], [BAD.format(99)])])
    assert torch.allclose(batched, single, atol=1e-5)


def test_ties_train_their_answers_scores_together(tiny_model_dir, tmp_path):
    """Pairs the judge calls a tie differ in a detail that does not matter (an exclamation): learning from ties, the
    reward model scores them closer than without, and its meta counts them."""
    store = Store.open("ties", create=True, root=tmp_path)
    run = store.start_generation_run("base-model", None, {"temperature": 0.8})
    plain, loud = "Cats are fine, {}.", "Cats are fine, {}!"
    store.add_completions(run, [(f"Question {i}?", j, text.format(i), 5, "stop") for i in range(10)
                                for j, text in enumerate([GOOD, BAD][:: 1 if i % 2 else -1])], source="test")
    store.add_completions(run, [(f"Tie {i}?", j, text.format(i), 5, "stop")
                                for i in range(12) for j, text in enumerate((plain, loud))], source="test")
    annotate(store, lambda prompt, a, b: "a" if "Opossum" in a else "b" if "Opossum" in b else "tie", "judge:toy",
             seed=0)
    assert [sum(v["choice"] == c for v in store.votes()) for c in ("tie", "a", "b")] == [12, 5, 5]
    gaps, fingerprints = {}, {}
    for weight in (0.0, 1.0):
        meta = train_reward_model(store, dataclasses.replace(TOY_CONFIG, tie_weight=weight), str(tiny_model_dir))
        model = RewardModel.load(meta["path"], device="cpu", dtype="fp32")
        prompts = [f"Tie {i}?" for i in range(12)]
        gap = model.score(prompts, [plain.format(i) for i in range(12)]) - model.score(
            prompts, [loud.format(i) for i in range(12)])
        decided = model.score(["Question 99?"] * 2, [GOOD.format(99), BAD.format(99)])
        gaps[weight] = gap.abs().mean().item()
        assert decided[0] > decided[1]  # the decided preference is still learnt
        assert meta["metrics"]["n_train"] + meta["metrics"]["n_eval"] == 10  # accuracies: decided pairs only
        assert meta["metrics"]["n_ties"] == (10 if weight else 0)  # 2 of 12 tie-only pairs held out
        assert meta["dataset"]["ties"] == (12 if weight else 0)
        fingerprints[weight] = meta["dataset"]["fingerprint"]
        assert meta["labelled_answers"]["count"] == (20 + 24 if weight else 20)  # tie answers were labelled too
    assert gaps[1.0] < 0.5 * gaps[0.0], gaps
    assert fingerprints[1.0] != fingerprints[0.0]  # the data behind a checkpoint includes the ties it learnt from
    data = Path(meta["dataset"]["export_dir"]) / "data"
    assert fingerprints[1.0] == fingerprint_files([data / "train.parquet", data / "ties.parquet"])  # as a push records


# failures ----------------------------------------------------------------------------------------------------------
def test_too_few_pairs_says_how_many_are_needed(store, tiny_model_dir):
    labelled_project(store)  # 3 decided votes
    with pytest.raises(RLHFError, match="has 3 decided preference pairs; at least 8 are needed"):
        train_reward_model(store, RewardTrainConfig(), str(tiny_model_dir))
    assert not (store.folder / "checkpoints").exists() or not any((store.folder / "checkpoints").iterdir())


def test_a_diverging_loss_raises_and_keeps_nothing(store, tiny_model_dir):
    opossum_project(store, n_prompts=8)
    config = RewardTrainConfig(epochs=1, lr=1e30, batch_size=2, eval_fraction=0.0)
    with pytest.raises(RLHFError, match=r"the loss became nan at step \d+; nothing was saved. Lower the learning rate"):
        train_reward_model(store, config, str(tiny_model_dir))
    assert list((store.folder / "checkpoints").iterdir()) == []
    assert list((store.folder / "runs").iterdir()) == []  # nor a log of a run that left no checkpoint


def test_load_refuses_what_is_not_a_reward_checkpoint(tmp_path):
    with pytest.raises(RLHFError, match="not a checkpoint folder"):
        RewardModel.load(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"id": "dpo-1", "kind": "dpo"}))
    with pytest.raises(RLHFError, match="is a dpo checkpoint, not a reward model"):
        RewardModel.load(tmp_path)


# CLI ---------------------------------------------------------------------------------------------------------------
def cli_parser() -> argparse.ArgumentParser:
    from rlhf.__main__ import build_parser

    return build_parser()


def test_cli_flags():
    parser = cli_parser()
    args = parser.parse_args(["train-reward", "--project", "p"])
    assert (args.lora, args.spec, args.epochs, args.eval_fraction) == (None, None, None, None)  # dataclass defaults
    assert parser.parse_args(["train-reward", "--project", "p", "--full"]).lora is False
    assert parser.parse_args(["train-reward", "--project", "p", "--no-lora"]).lora is False
    assert parser.parse_args(["train-reward", "--project", "p", "--lora-r", "4", "--lr", "1e-3"]).lora_r == 4
    args = parser.parse_args(["score", "--project", "p", "--prompt", "q", "--response", "a"])
    assert args.reward_model == "latest"


def test_cli_score_without_a_reward_model_is_a_clear_error(store):
    args = cli_parser().parse_args(["score", "--project", store.name, "--prompt", "q", "--response", "a"])
    with pytest.raises(RLHFError, match="has no reward checkpoint yet"):
        args.func(args)


def reward_cli(*args: str):
    import os

    return subprocess.run([sys.executable, "-m", "rlhf", *args], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ), timeout=600)


def test_cli_train_reward_then_score_end_to_end(store, tiny_model_dir):
    opossum_project(store, n_prompts=8)
    done = reward_cli("train-reward", "--project", store.name, "--model", str(tiny_model_dir), "--full",
                      "--epochs", "1", "--batch-size", "4", "--lr", "1e-3")
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()  # one summary line, nothing else on stdout
    assert line.startswith("reward model: 2 steps on 6 pairs") and "held-out accuracy" in line
    path = line.rpartition("-> ")[2]
    assert (Path(path) / "model" / "model.safetensors").is_file() and not (Path(path) / "adapter").exists()
    assert "2/2" in done.stderr  # the progress bar reached the last step

    scored = reward_cli("score", "--project", store.name, "--prompt", "Question 1?", "--response", GOOD.format(1),
                        "--dtype", "fp32")
    assert scored.returncode == 0, scored.stderr
    assert math.isfinite(float(scored.stdout))
    assert "normalised" in scored.stderr and path.rpartition("/")[2] in scored.stderr

    missing = reward_cli("score", "--project", store.name, "--reward-model", "reward-nope", "--prompt", "q",
                         "--response", "a")
    assert missing.returncode == 2 and missing.stderr.startswith("error: checkpoint: 'reward-nope' is not")
