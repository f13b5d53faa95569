"""DPO on the tiny model, for real: checkpoint layout and meta, the adapter against its base, continuing from a
checkpoint, stopping early, a NaN loss, too few pairs, and the `dpo` subcommand.

Each training run is one or two optimizer steps on eight pairs, fp32 or bf16 autocast as the CPU allows.
"""

import json
import threading
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhf.checkpoints import checkpoints_dir, list_checkpoints, run_log_path
from rlhf.config import DPOTrainConfig, ModelConfig, RLHFError, SamplingConfig
from rlhf.__main__ import build_parser
from rlhf.dpo import SCALE_TRIES, next_scale, published_words, scaled_change, train_dpo
from rlhf.generate import encode_chat, sample_batch
from rlhf.judges import annotate
from rlhf.models import load_model
from rlhf.store import Store
from test_prefer import add_candidates

# A high learning rate so two steps move the adapter visibly; eight pairs in two batches of four.
FAST = dict(epochs=1.0, lr=1e-2, batch_size=4)


def labelled_pairs(store, prompts: int = 8):
    """`prompts` pairs, each decided by a judge that prefers the first candidate ("... answer 0")."""
    add_candidates(store, prompts=[f"Question {i}: what is an opossum?" for i in range(prompts)])
    annotate(store, lambda prompt, a, b: "a" if a.endswith("answer 0") else "b", "judge:first", seed=0)
    return store


def logits(model, tokenizer) -> torch.Tensor:
    ids = torch.tensor([encode_chat(tokenizer, [{"role": "user", "content": "What is an opossum?"}])])
    with torch.no_grad():
        return model(input_ids=ids).logits


def fp32(spec):
    return load_model(ModelConfig(spec=str(spec), device="cpu", dtype="fp32"))


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """One LoRA DPO run shared by the tests below, in a project of its own."""
    store = labelled_pairs(Store.open("dpo-shared", create=True, root=tmp_path_factory.mktemp("dpo-home")))
    steps = []
    meta = train_dpo(store, DPOTrainConfig(**FAST), str(tiny_model_dir),
                     progress=lambda step, total, metrics: steps.append((step, total, metrics.get("dpo/loss"))))
    return store, meta, steps


def test_train_dpo_writes_a_checkpoint_with_meta_and_curves(trained, tiny_model_dir):
    store, meta, steps = trained
    path = Path(meta["path"])
    assert [m["id"] for m in list_checkpoints(store)] == [meta["id"]] == [path.name]
    assert not list(checkpoints_dir(store).glob(".*"))  # no staging folder left behind
    on_disk = json.loads((path / "meta.json").read_text())
    assert {k: on_disk[k] for k in ("kind", "algorithm", "base_model", "parent")} == {
        "kind": "dpo", "algorithm": "dpo", "base_model": str(tiny_model_dir), "parent": None}
    assert on_disk["config"] == asdict(DPOTrainConfig(**FAST))
    assert on_disk["dataset"]["rows"] == 8 and len(on_disk["dataset"]["fingerprint"]) == 16
    assert Path(on_disk["dataset"]["export_dir"], "data", "train.parquet").is_file()
    metrics = on_disk["metrics"]
    assert (metrics["n_pairs"], metrics["steps"], metrics["stopped_early"]) == (8, 2, False)
    assert 0 < metrics["dpo/loss"] < 1 and 0 <= metrics["dpo/rewards/accuracies"] <= 1 and metrics["seconds"] > 0
    assert (on_disk["device"], on_disk["precision"]) in {("cpu", "bf16"), ("cpu", "fp32"), ("cuda", "bf16")}
    assert [(s, t) for s, t, _ in steps if _ is not None] == [(1, 2), (2, 2)]

    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    curves = [row for row in rows if "dpo/loss" in row]
    assert [row["step"] for row in curves] == [1, 2]
    # The KL budget's checks: one before the first step, one after the last (check_every 20 is past the end).
    checks = [row for row in rows if "check/kl" in row]
    assert [row["step"] for row in checks] == [0, 2] and [s for s, _, loss in steps if loss is None] == [0, 2]
    assert checks[0]["check/kl"] == 0.0 and checks[0]["check/kl_temperature_1"] == 0.0  # LoRA B = 0: the reference
    assert checks[1]["check/kl"] != 0.0 and checks[1]["check/length"] > 0
    assert on_disk["selected_step"] == 2 and on_disk["kl_budget_stop"] is None  # well within a budget of 8
    assert [c["step"] for c in on_disk["checks"]] == [0, 2] and on_disk["selected_by"].startswith("newest check")
    assert (path / "metrics.jsonl").read_text() == run_log_path(store, meta["id"]).read_text()  # the run's own log
    assert {"dpo/loss", "dpo/rewards/margins", "dpo/rewards/accuracies", "dpo/rewards/chosen"} <= set(curves[0])
    # Before the first update the policy is its reference (the base with the adapter disabled): no reward yet.
    assert curves[0]["dpo/rewards/chosen"] == curves[0]["dpo/rewards/margins"] == 0.0
    assert curves[0]["dpo/loss"] == pytest.approx(0.6931, abs=1e-4)  # log 2
    assert curves[1]["dpo/rewards/margins"] > 0  # one step towards the chosen answers
    assert metrics["dpo/loss"] == curves[-1]["dpo/loss"]


def test_only_the_adapter_trained_and_disabling_it_gives_the_base(trained, tiny_model_dir):
    from peft import PeftModel

    _, meta, _ = trained
    adapter = Path(meta["path"]) / "adapter"
    weights = load_file(adapter / "adapter_model.safetensors")
    assert weights and all("lora_" in name for name in weights)  # the base weights are not saved: they never changed
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and all(w.abs().sum() > 0 for w in lora_b)  # every B started at zero and moved

    base = fp32(tiny_model_dir)
    base_logits = logits(base.model, base.tokenizer)
    tuned = fp32(meta["path"])  # base + adapter, merged
    assert tuned.checkpoint_id == meta["id"]
    assert not torch.allclose(logits(tuned.model, tuned.tokenizer), base_logits, atol=1e-4)

    wrapped = PeftModel.from_pretrained(fp32(tiny_model_dir).model, adapter).eval()
    assert torch.allclose(logits(wrapped, base.tokenizer), logits(tuned.model, tuned.tokenizer), atol=1e-5)
    with wrapped.disable_adapter():
        assert torch.equal(logits(wrapped, base.tokenizer), base_logits)


def test_the_checkpoint_loads_as_a_model_spec_and_samples(trained):
    _, meta, _ = trained
    loaded = load_model(ModelConfig(spec=meta["path"], device="cpu"))
    ids = encode_chat(loaded.tokenizer, [{"role": "user", "content": "What is an opossum?"}])
    samples = sample_batch(loaded, [ids, ids], SamplingConfig(max_new_tokens=8, seed=0))
    assert len(samples) == 2 and all(s.num_tokens >= 1 for s in samples)


def test_stop_ends_early_and_still_saves_continuing_from_a_checkpoint(trained, tiny_model_dir):
    store, parent, _ = trained
    stop = threading.Event()
    stop.set()  # training checks after each step: exactly one step runs
    meta = train_dpo(store, DPOTrainConfig(**FAST), parent["path"], stop=stop)
    assert (meta["metrics"]["steps"], meta["metrics"]["stopped_early"]) == (1, True)
    assert (meta["parent"], meta["base_model"]) == (parent["id"], str(tiny_model_dir))
    # An adapter trained on the parent's merged weights is saved merged: the checkpoint loads on its own.
    assert (Path(meta["path"]) / "model").is_dir() and not (Path(meta["path"]) / "adapter").exists()
    child, before = fp32(meta["path"]), fp32(parent["path"])
    assert not torch.allclose(logits(child.model, child.tokenizer), logits(before.model, before.tokenizer), atol=1e-4)


def test_a_check_over_the_kl_budget_ends_the_run_and_its_change_is_scaled_back_into_the_budget(store, tiny_model_dir):
    labelled_pairs(store)
    budget = 1e-6  # any move is over it
    config = DPOTrainConfig(**{**FAST, "epochs": 2.0}, target_kl=budget, check_every=1)  # 4 steps
    meta = train_dpo(store, config, str(tiny_model_dir))
    # the check after step 1 stopped it; then up to SCALE_TRIES checks of step 1's change scaled back
    assert (meta["metrics"]["steps"], meta["metrics"]["stopped_early"]) == (1, True)
    checks = meta["checks"]
    assert [(c["step"], c.get("check/scale"), c["kept"]) for c in checks[:2]] == [(0, None, True), (1, None, False)]
    tries = checks[2:]
    assert 1 <= len(tries) <= SCALE_TRIES and all(c["step"] == 1 and 0 < c["check/scale"] < 1 for c in tries)
    assert meta["kl_budget_stop"]["step"] == 1 and meta["kl_budget_stop"]["kl"] > budget
    kept = [c for c in checks if c["kept"]][-1]
    assert kept["check/kl"] <= budget and not kept["drift/flags"]
    assert (meta["selected_step"], meta["selected_scale"]) == (kept["step"], kept.get("check/scale", 1.0))
    assert meta["kl_budget_stop"]["published_step"] == meta["selected_step"]
    assert "its change scaled to" in published_words(meta) or meta["selected_step"] == 0

    # The published adapter is exactly step 1's with its B matrices scaled: the same run stopped after step 1
    # without a budget (the checks' sampling leaves the trainer's random draws as they were) gives the same A.
    stop = threading.Event()
    stop.set()
    unscaled = train_dpo(store, DPOTrainConfig(**{**FAST, "epochs": 2.0}, target_kl=None), str(tiny_model_dir),
                         stop=stop)
    published = load_file(Path(meta["path"]) / "adapter" / "adapter_model.safetensors")
    step_1 = load_file(Path(unscaled["path"]) / "adapter" / "adapter_model.safetensors")
    scale = meta["selected_scale"] if meta["selected_step"] == 1 else 0.0
    assert published.keys() == step_1.keys() and any("lora_B" in name for name in published)
    for name, weights in published.items():
        expected = step_1[name] * scale if "lora_B" in name else step_1[name]
        assert torch.allclose(weights, expected, atol=1e-7), name


def test_scaling_a_change_back_and_choosing_the_next_scale_by_hand():
    weights = {"layer.lora_A.weight": torch.tensor([2.0, 4.0]), "layer.lora_B.weight": torch.tensor([1.0, -3.0]),
               "norm.weight": torch.tensor([5.0])}
    origin = {"layer.lora_B.weight": torch.zeros(2), "norm.weight": torch.tensor([1.0])}
    scaled = scaled_change(weights, origin, 0.25)
    assert scaled["layer.lora_A.weight"].tolist() == [2.0, 4.0]  # no origin: as it is
    assert scaled["layer.lora_B.weight"].tolist() == [0.25, -0.75] and scaled["norm.weight"].tolist() == [2.0]
    assert scaled_change(weights, origin, 0.0)["layer.lora_B.weight"].tolist() == [0.0, 0.0]
    # KL 16 at scale 1, budget 8: aim at sqrt(0.9 * 8) = 2.683 on the line sqrt(KL) from 0 (scale 0) to 4 (scale 1)
    assert next_scale([(0.0, 0.0), (1.0, 16.0)], 8.0) == pytest.approx(0.671, abs=1e-3)
    # 0.671 gave KL 9, still over: the line now runs from 0 to 3 over scales 0 to 0.671
    assert next_scale([(0.0, 0.0), (1.0, 16.0), (0.6708, 9.0)], 8.0) == pytest.approx(0.6708 * 2.683 / 3, abs=1e-3)
    # 0.6 gave 6, within: between (0.6, sqrt 6) and (0.671, 3)
    share = (2.683 - 6 ** 0.5) / (3 - 6 ** 0.5)
    assert next_scale([(0.0, 0.0), (1.0, 16.0), (0.6708, 9.0), (0.6, 6.0)], 8.0) == pytest.approx(
        0.6 + share * 0.0708, abs=1e-3)


def test_without_a_budget_there_are_no_checks_and_the_last_step_is_published(store, tiny_model_dir):
    labelled_pairs(store)
    meta = train_dpo(store, DPOTrainConfig(**FAST, target_kl=None), str(tiny_model_dir))
    rows = [json.loads(line) for line in (Path(meta["path"]) / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2] and not any("check/kl" in row for row in rows)
    assert (meta["selected_step"], meta["selected_by"]) == (2, "last step (no KL budget)")


def test_a_nan_loss_raises_and_writes_no_checkpoint(store, tiny_model_dir, monkeypatch):
    from trl import DPOTrainer

    labelled_pairs(store)
    compute_loss = DPOTrainer.compute_loss
    monkeypatch.setattr(DPOTrainer, "compute_loss", lambda self, *a, **k: compute_loss(self, *a, **k) * float("nan"))
    with pytest.raises(RLHFError, match=r"loss became nan at step 1; nothing was saved"):
        train_dpo(store, DPOTrainConfig(**FAST), str(tiny_model_dir))
    assert list(checkpoints_dir(store).iterdir()) == []
    assert list((store.folder / "runs").iterdir()) == []  # nor a log of a run that left no checkpoint


def test_too_few_pairs_says_how_many_are_needed(store, tiny_model_dir):
    labelled_pairs(store, prompts=3)
    with pytest.raises(RLHFError, match="has 3 decided preference pairs; at least 8 are needed. Label 5 more"):
        train_dpo(store, DPOTrainConfig(), str(tiny_model_dir))
    assert not checkpoints_dir(store).exists()


def test_cli_full_fine_tune(store, tiny_model_dir, capsys):
    labelled_pairs(store)
    args = build_parser().parse_args(["dpo", "--project", store.name, "--model", str(tiny_model_dir), "--no-lora",
                              "--epochs", "1", "--batch-size", "8", "--lr", "1e-3", "--beta", "0.2"])
    args.func(args)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    [meta] = list_checkpoints(store)
    assert line.startswith("dpo: 1 step on 8 pairs, loss 0.6931") and line.endswith(meta["path"])
    assert (meta["config"]["lora"], meta["config"]["beta"], meta["metrics"]["steps"]) == (False, 0.2, 1)
    assert (Path(meta["path"]) / "model" / "config.json").is_file()
    tuned, base = fp32(meta["path"]), fp32(tiny_model_dir)
    assert not torch.equal(logits(tuned.model, tuned.tokenizer), logits(base.model, base.tokenizer))
