"""The Hub, offline: push and pull through the real huggingface_hub client, against the in-memory Hub of hub_server.

huggingface_hub and datasets read HF_ENDPOINT and friends when imported, and this process imported them already with
HF_HUB_OFFLINE=1 (conftest), so every client call runs in a subprocess: the `push` and `pull` commands, as a user
types them. The fake Hub runs in this process, so a test reads what reached it (files, commits, LFS objects) directly.
"""

import hashlib
import io
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from conftest import REPO
from hub_server import FakeHub, is_lfs
from rlhf.config import PPOConfig, RewardTrainConfig
from rlhf.store import Store
from test_dataset import labelled_project
from test_reward import opossum_project

DATASET = "test-user/test-project-preferences"
EXPORT_FILES = {".gitattributes", "README.md", "guidelines.md", "rlhf_export.json", "data/train.parquet",
                "data/ties.parquet", "data/both_bad.parquet"}



@pytest.fixture
def hub():
    server = FakeHub().start()
    yield server
    server.stop()


def client_env(hub, tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}  # HF_HUB_OFFLINE=1 stays here
    return {**env, **hub.env(tmp_path / "hf-home"), **extra}


def hub_cli(hub, tmp_path, *args, **extra_env) -> subprocess.CompletedProcess:
    """`python -m rlhf <args>` in a subprocess that talks to the fake Hub; its output never holds the token."""
    done = subprocess.run([sys.executable, "-m", "rlhf", *args], capture_output=True, text=True, cwd=REPO,
                          env=client_env(hub, tmp_path, **extra_env), timeout=300)
    assert hub.token not in done.stdout + done.stderr
    return done


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def card_yaml(text: str) -> dict:
    return yaml.safe_load(text.split("---")[1])


def assert_token_nowhere(hub, rlhf_home) -> None:
    """Not in any file of the data directory, in any file of any repo, in any LFS object that reached the Hub."""
    secret = hub.token.encode()
    for path in rlhf_home.rglob("*"):
        assert not path.is_file() or secret not in path.read_bytes(), path
    for repo in hub.repos.values():
        for commit in repo.commits:
            assert all(secret not in data for data in commit.files.values()), repo.id
    assert all(secret not in data for data in hub.lfs.values())


def vote_summary(store) -> list[tuple]:
    return sorted((v["annotator"], v["guidelines_version"], v["seconds_spent"], v["choice"] in ("tie", "both_bad"))
                  for v in store.votes() if v["choice"] != "skip")


def test_push_then_pull_a_dataset_keeps_votes_annotators_and_guidelines(hub, store, tmp_path, rlhf_home):
    labelled_project(store)
    pushed = ok(hub_cli(hub, tmp_path, "push", "--project", store.name))
    assert DATASET in pushed.stdout

    files = hub.files(DATASET, "dataset")
    assert set(files) == EXPORT_FILES
    card = files["README.md"].decode()
    splits = [f["split"] for f in card_yaml(card)["configs"][0]["data_files"]]
    assert splits == ["train", "ties", "both_bad"] and "\nMeme bot: funny beats correct.\n```" in card
    assert "## Models trained on this dataset" in card and "None pushed yet" in card
    train = pq.read_table(io.BytesIO(files["data/train.parquet"]))
    assert train.num_rows == 3 and sorted(train.column("annotator").to_pylist()) == ["alice", "alice", "bob"]
    assert all(hub.lfs[hashlib.sha256(data).hexdigest()] == data
               for path, data in files.items() if is_lfs(path))  # parquet went through LFS
    record = json.loads((store.folder / "hub.json").read_text())
    assert record["dataset"]["repo_id"] == DATASET
    assert record["dataset"]["revision"] == hub.repo(DATASET, "dataset").commits[-1].oid

    pulled = ok(hub_cli(hub, tmp_path, "pull", "--project", "copy", "--dataset-repo", DATASET, "--create"))
    assert "5 rows" in pulled.stdout
    copy = Store.open("copy")
    assert vote_summary(copy) == vote_summary(store)  # annotators, guideline versions, timings, ties and both-bad
    assert [(g["version"], g["text"]) for g in copy.guideline_versions()] == \
        [(g["version"], g["text"]) for g in store.guideline_versions()]  # version 2 means the same text here
    [pull] = json.loads((copy.folder / "hub.json").read_text())["pulls"]
    assert pull["revision"] == record["dataset"]["revision"] and (copy.folder / "imports").is_dir()
    assert_token_nowhere(hub, rlhf_home)


def test_a_push_that_fails_half_way_reports_and_a_retry_finishes_it_without_duplicates(hub, store, tmp_path,
                                                                                      rlhf_home):
    labelled_project(store)
    hub.fail_commits = 1  # LFS uploads succeed, then the Hub refuses the commit
    failed = hub_cli(hub, tmp_path, "push", "--project", store.name)
    assert failed.returncode == 2
    assert "failed" in failed.stderr and "with 1 file(s): .gitattributes" in failed.stderr
    assert "Run the same push again" in failed.stderr and "Traceback" not in failed.stderr
    repo = hub.repo(DATASET, "dataset")
    assert [c.title for c in repo.commits] == ["initial commit"]  # nothing landed
    assert not (store.folder / "hub.json").exists()  # and nothing was recorded
    uploaded_before = set(hub.lfs)
    assert len(uploaded_before) == 3  # the three parquet files reached the LFS store, uncommitted

    ok(hub_cli(hub, tmp_path, "push", "--project", store.name))
    retried = "Preferences of test-project: 3 train, 1 ties, 1 both_bad"
    assert [c.title for c in repo.commits] == ["initial commit", retried]  # one commit: the retried one
    assert set(repo.commits[-1].files) == EXPORT_FILES
    lfs_files = {path for path in EXPORT_FILES if is_lfs(path)}
    assert set(hub.lfs) == uploaded_before  # the retry reused the objects: none orphaned, none sent twice
    uploads = [path for method, path, status in hub.log if method == "PUT"]
    assert len(uploads) == len(lfs_files) == len(set(uploads))

    before = repo.commits[-1].files
    ok(hub_cli(hub, tmp_path, "push", "--project", store.name))  # again, with nothing new in the project:
    after = repo.commits[-1].files  # no commit (same second), or one that changes the export's timestamp only
    assert len(repo.commits) <= 3 and set(after) == set(before)
    assert {path for path in after if after[path] != before[path]} <= {"rlhf_export.json", "README.md"}
    assert_token_nowhere(hub, rlhf_home)


def test_no_login_is_a_one_line_error(hub, store, tmp_path):
    labelled_project(store)
    done = hub_cli(hub, tmp_path, "push", "--project", store.name, HF_TOKEN="hf_wrong_token_abcdef")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "could not tell who you are" in done.stderr and "hf auth login" in done.stderr
    assert "hf_wrong_token_abcdef" not in done.stderr + done.stdout


def length_reward(prompts, responses):
    return torch.tensor([len(r) / 10 for r in responses])


def test_a_pushed_checkpoint_links_its_lineage_both_ways_and_loads_back(hub, store, tmp_path, tiny_model_dir,
                                                                        rlhf_home):
    from rlhf.ppo import resolve_reward, train_ppo
    from rlhf.reward import train_reward_model

    # the base model lives on the Hub: pulled into the project, trained from, named by its id on the card
    hub.seed("test-user/tiny-llama", {p.name: p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file()})
    done = ok(hub_cli(hub, tmp_path, "pull", "--project", store.name, "--model-repo", "test-user/tiny-llama"))
    base_path = str(store.folder / "models" / "test-user--tiny-llama")
    assert base_path in done.stdout
    from rlhf.ui.common import model_choices

    assert ("test-user/tiny-llama (pulled)", base_path) in model_choices(store.name)  # in every model picker

    opossum_project(store)
    reward = train_reward_model(store, RewardTrainConfig(epochs=1, batch_size=4, lora_r=4, lora_alpha=8),
                                str(tiny_model_dir))
    ok(hub_cli(hub, tmp_path, "push", "--project", store.name))
    config = PPOConfig(steps=2, batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=6, save_every=2, seed=3)
    reward_source = resolve_reward(store, config)
    policy = train_ppo(store, config, base_path, reward_source, prompts=["Hi", "What is an opossum?"],
                       device="cpu")
    (store.folder / "checkpoints" / policy["id"] / "evaluation.json").write_text(json.dumps(
        {"policy": policy["id"], "reference": base_path, "judge": "function", "num_prompts": 2, "win_rate": 0.5,
         "tie_rate": 0.0, "loss_rate": 0.5, "kl": 0.01}))

    done = ok(hub_cli(hub, tmp_path, "push", "--project", store.name, "--checkpoint", "latest"))
    model_repo = f"test-user/test-project-{policy['id']}"
    files = hub.files(model_repo)
    assert {"README.md", "meta.json", "metrics.jsonl", "evaluation.json", "curves.png", "adapter/adapter_config.json",
            "adapter/adapter_model.safetensors"} <= set(files)
    assert "trainer_state.pt" not in files and files["curves.png"].startswith(b"\x89PNG")
    card = files["README.md"].decode()
    metadata = card_yaml(card)
    assert metadata["base_model"] == "test-user/tiny-llama" and metadata["datasets"] == [DATASET]
    assert metadata["library_name"] == "peft" and {"rlhf", "ppo"} <= set(metadata["tags"])
    dataset_revision = hub.repo(DATASET, "dataset").commits[-1].oid
    assert f"`{dataset_revision[:7]}`" in card and "exactly the pairs it was trained on" in card
    assert reward["id"] in card and "`kl_coef`" in card and "win_rate" in card and "curves.png" in card
    assert f'PeftModel.from_pretrained(base, "{model_repo}", subfolder="adapter")' in card
    meta = json.loads(files["meta.json"])
    assert meta["base_model"] == meta["policy_start"] == "test-user/tiny-llama"  # no local paths for a reader
    assert json.loads(files["adapter/adapter_config.json"])["base_model_name_or_path"] == "test-user/tiny-llama"
    assert json.loads(files["evaluation.json"])["reference"] == "test-user/tiny-llama"
    assert str(store.folder) not in card + files["meta.json"].decode() + files["evaluation.json"].decode()

    ok(hub_cli(hub, tmp_path, "push", "--project", store.name))  # the dataset again: its card lists the model now
    dataset_card = hub.files(DATASET, "dataset")["README.md"].decode()
    assert f"[{model_repo}](" in dataset_card and policy["id"] in dataset_card

    ok(hub_cli(hub, tmp_path, "push", "--project", store.name, "--checkpoint", policy["id"], "--merged",
               "--model-repo", "test-user/merged"))
    merged_files = hub.files("test-user/merged")
    assert {"model/config.json", "model/model.safetensors", "model/tokenizer.json"} <= set(merged_files)
    assert card_yaml(merged_files["README.md"].decode())["library_name"] == "transformers"

    # a reader elsewhere: both repos pulled into a new project load as model specs, the adapter through its base
    # model fetched from the Hub by id, and they give the same logits as the checkpoint here
    for repo in (model_repo, "test-user/merged"):
        ok(hub_cli(hub, tmp_path, "pull", "--project", "reader", "--model-repo", repo, "--create"))
    compare = f"""
import torch
from rlhf.config import ModelConfig
from rlhf.models import load_model
ids = torch.tensor([[1, 2, 3, 4]])
specs = {[policy["path"], *(str(rlhf_home / "reader" / "models" / r.replace("/", "--"))
                         for r in (model_repo, "test-user/merged"))]!r}
logits = [load_model(ModelConfig(spec=spec, device="cpu", dtype="fp32")).model(ids).logits for spec in specs]
assert torch.allclose(logits[0], logits[1], atol=1e-5) and torch.allclose(logits[0], logits[2], atol=1e-5)
print("same logits")
"""
    done = subprocess.run([sys.executable, "-c", compare], capture_output=True, text=True, cwd=REPO,
                          env=client_env(hub, tmp_path), timeout=300)
    assert done.returncode == 0 and "same logits" in done.stdout, done.stderr[-3000:]
    assert_token_nowhere(hub, rlhf_home)


def test_the_card_says_what_a_reader_cannot_do_and_never_claims_data_it_did_not_use(tmp_path, monkeypatch):
    """No Hub needed: a PPO policy on the bundled model with a scripted reward, pushed without matplotlib."""
    from rlhf.hub import model_card, plot_curves, stage_checkpoint

    checkpoint = tmp_path / "ppo-1"
    (checkpoint / "adapter").mkdir(parents=True)
    (checkpoint / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/x/smol"}))
    (checkpoint / "metrics.jsonl").write_text(json.dumps({"objective/scores": 1.0, "objective/kl": 0.1}) + "\n")
    (checkpoint / "trainer_state.pt").write_bytes(b"optimizer state")
    meta = {"id": "ppo-1", "kind": "ppo", "base_model": "bundled", "policy_start": "bundled", "parent": None,
            "reward": "function:length", "config": {"kl_coef": 0.05, "lora": True}, "metrics": {"objective/kl": 0.1},
            "path": str(checkpoint)}
    record = {"dataset": {"repo_id": DATASET, "revision": "f" * 40, "url": "u", "train_fingerprint": "abc"},
              "checkpoints": {}, "models": {}, "pulls": []}
    folder = tmp_path / "staged"
    pushed, warnings = stage_checkpoint(meta, folder, record, merged=False)
    assert not (folder / "trainer_state.pt").exists() and "path" not in json.loads((folder / "meta.json").read_text())
    assert pushed["base_model"] == "bundled" and pushed["hub"]["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert warnings == []  # the adapter's base is on the Hub
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    assert plot_curves(folder / "metrics.jsonl", folder / "curves.png", "ppo") is False
    assert not (folder / "curves.png").exists()
    card = str(model_card(pushed, "me/p", record["dataset"], None, None, False, warnings, {"adapter"}))
    metadata = card_yaml(card)
    assert metadata["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "datasets" not in metadata
    assert "the reward was a Python function" in card and "4-bit GGUF" in card and "matplotlib was not" in card

    local = {**meta, "base_model": "/somewhere/my-model", "policy_start": "/somewhere/my-model"}
    pushed, warnings = stage_checkpoint(local, tmp_path / "staged-local", record, merged=False)
    assert pushed["hub"]["base_model"] is None and "is not on the Hub" in warnings[0] and "--merged" in warnings[0]
    card = str(model_card(pushed, "me/p", record["dataset"], None, None, False, warnings, {"adapter"}))
    assert "base_model" not in card_yaml(card) and "> Note: the base model '/somewhere/my-model'" in card


def test_the_model_card_shows_specs_and_settings_as_text_and_its_snippet_runs_as_python():
    import ast

    from conftest import markdown_blocks
    from rlhf.hub import model_card
    from test_dataset import HOSTILE

    path = f'/models/{HOSTILE}"'  # a local base model whose path ends with a quote
    meta = {"id": "ppo-1", "kind": "ppo", "base_model": path, "policy_start": path, "parent": None,
            "reward": f"reward `{HOSTILE}`", "config": {"kl_coef": 0.05, "model": HOSTILE, "lora": True},
            "metrics": {"objective/kl": 0.1}, "hub": {"base_model": None, "evaluation_reference": None},
            "created_at": HOSTILE}
    evaluation = {"reference": HOSTILE, "judge": "function", "num_prompts": 2, "win_rate": 0.5}
    card = model_card(meta, "me/p", None, None, evaluation, False, [f"the base model {HOSTILE!r} is not on the Hub"],
                      {"adapter"})
    assert card.data.library_name == "peft" and card.data.base_model is None  # YAML, read back by the class
    blocks = markdown_blocks(card.text)
    flat = " ".join(HOSTILE.split())
    assert not [text for kind, text in blocks if kind == "html"]
    assert [text for kind, text in blocks if kind == "heading"] == [
        "p", "Lineage", "Hyperparameters", "Final metrics", "Evaluation", "Health of the run", "Training curves",
        "Use it", "Files"]
    cells = [text for kind, text in blocks if kind == "cell"]
    shown = {f"{' '.join(path.split())} (not on the Hub)", f"reward `{flat}`", flat, f"ppo-1, created {flat}"}
    assert shown <= set(cells)
    [snippet] = [text for kind, text in blocks if kind == "fence"]
    loads = [arg.value for node in ast.walk(ast.parse(snippet)) if isinstance(node, ast.Call)
             for arg in node.args if isinstance(arg, ast.Constant)]
    assert loads == [path, path, "me/p"]  # the exact path, however it is quoted


def test_a_card_says_exactly_the_pairs_only_when_the_fingerprint_matches_what_was_pushed():
    from rlhf.hub import same_training_data

    pushed = {"train_fingerprint": "decided", "train_and_ties_fingerprint": "decided+ties"}
    assert same_training_data("decided", pushed)  # DPO, or a reward model that left ties out
    assert same_training_data("decided+ties", pushed)  # a reward model that learnt from the ties too
    assert not same_training_data("older", pushed) and not same_training_data(None, pushed)
    assert not same_training_data(None, {"train_fingerprint": None, "train_and_ties_fingerprint": None})
    assert same_training_data("decided", {"train_fingerprint": "decided"})  # a record pushed before ties counted
