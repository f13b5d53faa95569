import json

import pytest
import yaml
from datasets import Dataset, load_dataset

from rlhf.config import RLHFError
from rlhf.dataset import export_preferences, import_preferences, parse_hh_transcript
from rlhf.prefer import next_pair, vote
from rlhf.store import Store
from test_prefer import FixedDraw, add_candidates


def load_export(folder):
    """load_dataset with a fresh cache: datasets caches local folders by name, not content."""
    return load_dataset(str(folder), cache_dir=str(folder.parent / "hf-datasets-cache"))


def labelled_project(store):
    """Four pairs: two decided (one of them by two people), one tie, one both-bad, one skip."""
    add_candidates(store, prompts=("p1", "p2", "p3", "p4", "p5"))
    store.save_guidelines("Meme bot: funny beats correct.", author="owner")
    for who, choice in [("alice", "b"), ("alice", "a"), ("alice", "tie"), ("alice", "both_bad"), ("alice", "skip")]:
        vote(store, next_pair(store, who, rng=FixedDraw(0.9)).presentation_id, choice, who)
    vote(store, next_pair(store, "bob", overlap=1.0, rng=FixedDraw(0.9)).presentation_id, "a", "bob")
    return store


def test_export_splits_rows_and_card(store, tmp_path):
    labelled_project(store)
    result = export_preferences(store, tmp_path / "export")
    assert result.rows == {"train": 3, "ties": 1, "both_bad": 1}
    dataset = load_export(tmp_path / "export")
    assert {split: len(dataset[split]) for split in dataset} == {"train": 3, "ties": 1, "both_bad": 1}
    first = dataset["train"][0]
    assert first["prompt"] == [{"role": "user", "content": "p1"}]
    assert first["chosen"] == [{"role": "assistant", "content": "p1 answer 1"}]  # alice said b (not swapped)
    assert first["rejected"] == [{"role": "assistant", "content": "p1 answer 0"}]
    assert (first["annotator"], first["guidelines_version"], first["label"]) == ("alice", 2, "b")
    assert sorted(dataset["train"]["annotator"]) == ["alice", "alice", "bob"]  # overlap kept, one row per vote

    card = (tmp_path / "export" / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert [f["split"] for f in metadata["configs"][0]["data_files"]] == ["train", "ties", "both_bad"]
    assert "```markdown\nMeme bot: funny beats correct.\n```" in card  # the guidelines text, verbatim
    assert "| 2 |" in card and "| owner |" in card  # version history
    assert "alice" in card and "bob" in card and "Krippendorff" in card and "left answer" in card
    assert "temperature" in card and "base-model" in card  # generation parameters
    summary = json.loads((tmp_path / "export" / "rlhf_export.json").read_text())
    assert summary["stats"]["votes"] == 5 and len(summary["guidelines"]) == 2


def test_export_refuses_an_empty_project_and_a_foreign_folder(store, tmp_path):
    with pytest.raises(RLHFError, match="no votes yet"):
        export_preferences(store, tmp_path / "out")
    labelled_project(store)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep me")
    with pytest.raises(RLHFError, match="not an earlier export"):
        export_preferences(store, tmp_path / "mine")
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep me"


def test_export_trains_with_trl_reward_trainer(store, tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    labelled_project(store)
    export_preferences(store, tmp_path / "export")
    train = load_export(tmp_path / "export")["train"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = RewardConfig(output_dir=str(tmp_path / "rm"), use_cpu=True, bf16=False, max_steps=1,
                        per_device_train_batch_size=2, learning_rate=1e-2, report_to=[], save_strategy="no",
                        gradient_checkpointing=False, logging_steps=1)
    trainer = RewardTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    trainer.train()
    changed = [name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert "score.weight" in changed and len(changed) > 1
    assert trainer.state.log_history[0]["loss"] > 0


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


FORMATS = {
    "conversational": {"prompt": [{"role": "user", "content": "What is an opossum?"}],
                       "chosen": [{"role": "assistant", "content": "A marsupial."}],
                       "rejected": [{"role": "assistant", "content": "A meme."}]},
    "plain text": {"prompt": "What is an opossum?", "chosen": "A marsupial.", "rejected": "A meme."},
    "implicit prompt": {"chosen": [{"role": "user", "content": "What is an opossum?"},
                                   {"role": "assistant", "content": "A marsupial."}],
                        "rejected": [{"role": "user", "content": "What is an opossum?"},
                                     {"role": "assistant", "content": "A meme."}]},
    "hh-rlhf": {"chosen": "\n\nHuman: What is an opossum?\n\nAssistant: A marsupial.",
                "rejected": "\n\nHuman: What is an opossum?\n\nAssistant: A meme."},
}


@pytest.mark.parametrize("kind", FORMATS)
def test_import_each_format(store, tmp_path, kind):
    source = write_jsonl(tmp_path / "prefs.jsonl", [FORMATS[kind]])
    result = import_preferences(store, str(source))
    assert (result.rows, result.votes_added, result.pairs) == (1, 1, 1)
    [stored] = store.votes()
    pair = store.pair(stored["pair_id"])
    assert pair["prompt"] == "What is an opossum?"
    assert pair[f"text_{stored['choice']}"] == "A marsupial."
    assert stored["annotator"] == "import:prefs.jsonl" and stored["swapped"] is None
    assert import_preferences(store, str(source)).votes_added == 0  # importing again adds nothing


def test_import_parquet_multi_turn_and_gold(store, tmp_path):
    rows = [{"prompt": [{"role": "system", "content": "You are a biology tutor."},
                        {"role": "user", "content": "What is an opossum?"}],
             "chosen": [{"role": "assistant", "content": "A marsupial."}],
             "rejected": [{"role": "assistant", "content": "A meme."}]}]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "gold.parquet"))
    result = import_preferences(store, str(tmp_path / "gold.parquet"), gold=True)
    assert result.votes_added == 0 and store.votes() == []
    [pair_row] = store.open_pairs("alice")
    pair = store.pair(pair_row["id"])
    assert pair[f"text_{pair['gold_choice']}"] == "A marsupial."
    assert json.loads(pair["messages_json"])[0] == {"role": "system", "content": "You are a biology tutor."}
    shown = next_pair(store, "alice", gold_rate=1.0)
    assert shown.kind == "gold"


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ({"prompt": "q", "chosen": "yes"}, "row 1: field 'rejected' is missing"),
        ({"prompt": "q", "chosen": "", "rejected": "no"}, "row 1: field 'chosen' is empty"),
        ({"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"}, "field 'prompt' holds a message"),
        ({"chosen": "just text", "rejected": "other text"}, "field 'chosen' is plain text without a `prompt`"),
        ({"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
          "rejected": [{"role": "user", "content": "other q"}, {"role": "assistant", "content": "b"}]},
         "do not share the conversation"),
    ],
)
def test_a_malformed_row_names_row_and_field_and_imports_nothing(store, tmp_path, bad_row, message):
    good = FORMATS["plain text"]
    source = write_jsonl(tmp_path / "mixed.jsonl", [good, bad_row, good])
    before = store.counts()
    with pytest.raises(RLHFError, match=message):
        import_preferences(store, str(source))
    assert store.counts() == before


def test_import_unreadable_sources(store, tmp_path):
    with pytest.raises(RLHFError, match="could not read"):
        import_preferences(store, str(tmp_path / "missing"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RLHFError, match="not a .parquet"):
        import_preferences(store, str(tmp_path / "notes.txt"))
    with pytest.raises(RLHFError, match="could not read 'someone/some-dataset'"):
        import_preferences(store, "someone/some-dataset")  # HF_HUB_OFFLINE=1 in tests


def test_export_then_import_keeps_votes_annotators_and_splits(store, tmp_path):
    labelled_project(store)
    export_preferences(store, tmp_path / "export")
    copy = Store.open("copy", create=True)
    result = import_preferences(copy, str(tmp_path / "export"))
    assert result.votes_added == 5
    original = sorted((v["annotator"], v["guidelines_version"], v["seconds_spent"]) for v in store.votes()
                      if v["choice"] != "skip")
    imported = sorted((v["annotator"], v["guidelines_version"], v["seconds_spent"]) for v in copy.votes())
    assert imported == original
    assert sorted(v["choice"] in ("tie", "both_bad") for v in copy.votes()) == [False, False, False, True, True]


def test_parse_hh_transcript_multi_turn():
    messages, answer = parse_hh_transcript("\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Opossum?\n\nAssistant: Yes.")
    assert messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                        {"role": "user", "content": "Opossum?"}]
    assert answer == "Yes."


HOSTILE = "x\n```\n# injected <img src=x onerror=alert(1)> *bold* [link](http://evil) | cell"
"""An annotator name (or author, or model spec) that would close a code block, start a heading, run HTML, add
emphasis or a link, or end a table cell, if a card pasted it as Markdown."""


def test_the_card_shows_what_people_typed_as_text(store, tmp_path):
    from huggingface_hub import DatasetCard

    from conftest import markdown_blocks
    from rlhf.dataset import dataset_card

    guidelines = "# Rules\n\n```\n# injected\n````\n<script>alert(2)</script>\n- be kind"
    store.save_guidelines(guidelines, author=HOSTILE)
    run = store.start_generation_run(f"model `{HOSTILE}`", None, {"temperature": 0.7})
    store.add_completions(run, [("q", 0, "one", 1, "stop"), ("q", 1, "two", 1, "stop")], source="test")
    pair = store.open_pairs("nobody")[0]["id"]
    store.add_vote(pair, HOSTILE, "a", source="test")
    store.add_vote(pair, "bob", "b", source="test")
    export_preferences(store, tmp_path / "export")
    card = DatasetCard.load(tmp_path / "export" / "README.md")
    assert [f["split"] for f in card.data.configs[0]["data_files"]] == ["train"]  # the YAML, read back by the class

    blocks = markdown_blocks(card.text)
    flat = " ".join(HOSTILE.split())
    assert not [text for kind, text in blocks if kind == "html"]
    assert [text for kind, text in blocks if kind == "heading" and "injected" in text] == []
    fences = [text for kind, text in blocks if kind == "fence"]
    assert len(fences) == 2 and fences[1] == guidelines + "\n"  # the loading snippet, then the guidelines verbatim
    cells = [text for kind, text in blocks if kind == "cell"]
    assert cells.count(flat) == 2  # the author in the guideline history, the annotator in the quality table
    assert f"model `{flat}`" in cells  # the model spec, as code, in the generation table

    summary = json.loads((tmp_path / "export" / "rlhf_export.json").read_text())
    summary["excluded_annotators"] = [
        {"annotator": name, "excluded_by": HOSTILE, "excluded_at": "2026-12-01T00:00:00", "reason": HOSTILE}
        for name in (HOSTILE, "judge:short")]
    excluded = dataset_card(summary)
    blocks = markdown_blocks(excluded.text)
    assert [text for kind, text in blocks if kind == "heading" and "injected" in text] == []
    assert any(f"Excluded annotators: the votes of {flat}, judge:short are not in this dataset" in text
               for kind, text in blocks if kind == "paragraph")
    assert [text for kind, text in blocks if kind == "heading" and "Excluded" in text] == ["Excluded annotators"]
    assert "Excluded" not in card.text  # shown only when there are some
