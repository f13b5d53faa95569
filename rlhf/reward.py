"""Reward model: train one on a project's preferences (TRL's RewardTrainer), score answers, normalise the scores.

A reward model is the base model with a scalar head (`AutoModelForSequenceClassification`, num_labels=1) read at the
last real token of prompt + answer, trained on decided pairs with the Bradley-Terry loss
`-log sigmoid(score(chosen) - score(rejected))` (Ouyang et al. 2022, https://arxiv.org/abs/2203.02155).

After training, raw scores are normalised so that the reference policy's samples (the answers people labelled, which
the base policy wrote) score about N(0, 1), as openai/lm-human-preferences does before PPO (train_reward.py sets a
gain and bias on the head): a KL coefficient then means the same thing whatever scale the head happened to learn.

    train_reward_model(store, config, model_spec)     -> meta of the new checkpoint (kind "reward"), with its `path`
    RewardModel.load(path).score(prompts, responses)  -> normalised scores, (B,)
    pairwise_accuracy, normalise, split_by_pair,      small pure functions (tests/test_reward.py checks them by hand)
    conversation, conversation_ids, pad_right
    add_train_reward_parser / cmd_train_reward, add_score_parser / cmd_score: the CLI pieces

Tokenisation: TRL 1.16 renders a conversational pair as `apply_chat_template(prompt + [answer], tokenize=True)` (no
generation prompt) and pads on the right. We tokenise the pairs ourselves with the same call (`conversation_ids`) and
hand TRL the ids, so training and `RewardModel.score` share one function, and over-long pairs are truncated rather than
silently dropped (TRL filters out any pair longer than `max_length`).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from rlhf.checkpoints import (POLICY_KINDS, find_checkpoint, is_checkpoint, new_checkpoint_id, publish, read_meta,
                              staging_dir)
from rlhf.config import ModelConfig, RewardTrainConfig, RLHFError, add_arguments, from_arguments
from rlhf.dataset import training_pairs
from rlhf.models import _set_pad_token, resolve_device, resolve_dtype, resolve_source
from rlhf.monitor import Progress, TrainingMonitor, stop_on_ctrl_c
from rlhf.store import Store


METRICS_FILE = "metrics.jsonl"
Prompt = str | list[dict]
"""A user message, or the chat messages before the answer (a system prompt, earlier turns)."""


# pure functions ----------------------------------------------------------------------------------------------------
def pairwise_accuracy(chosen_scores: Sequence[float] | torch.Tensor, rejected_scores: Sequence[float] | torch.Tensor
                      ) -> float:
    """Share of pairs where score(chosen) > score(rejected); a tie counts as wrong (the model could not tell)."""
    chosen = torch.as_tensor(chosen_scores, dtype=torch.float64)
    rejected = torch.as_tensor(rejected_scores, dtype=torch.float64)
    if chosen.shape != rejected.shape or chosen.ndim != 1:
        raise ValueError(f"pairwise_accuracy: need two 1-D score lists of one length, got {tuple(chosen.shape)} and "
                         f"{tuple(rejected.shape)}")
    if len(chosen) == 0:
        raise ValueError("pairwise_accuracy: no pairs to compare")
    return (chosen > rejected).double().mean().item()


def normalise(scores: Sequence[float] | torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """(scores - mean) / std: with the reference samples' mean and std they score ~N(0, 1) (lm-human-preferences)."""
    if not std > 0:
        raise ValueError(f"normalise: std must be positive, got {std}")
    return (torch.as_tensor(scores, dtype=torch.float32) - mean) / std


def score_stats(scores: torch.Tensor) -> dict:
    """Mean and (biased, like tf.nn.moments in lm-human-preferences) standard deviation of raw scores."""
    scores = scores.double()
    return {"mean": scores.mean().item(), "std": scores.std(correction=0).item()}


def split_by_pair(pair_ids: Sequence[int], eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices (train, eval). With overlap one pair has a row per annotator: all its rows land on one side, or
    held-out accuracy would be measured on pairs the model trained on. At least one pair stays on each side when
    eval_fraction > 0 and there are two pairs or more; 0 holds nothing out."""
    groups = sorted(set(pair_ids))
    random.Random(seed).shuffle(groups)
    n_eval = 0
    if eval_fraction > 0 and len(groups) >= 2:
        n_eval = min(max(1, round(len(groups) * eval_fraction)), len(groups) - 1)
    held_out = set(groups[:n_eval])
    train = [i for i, pair in enumerate(pair_ids) if pair not in held_out]
    evaluation = [i for i, pair in enumerate(pair_ids) if pair in held_out]
    return train, evaluation


def conversation(prompt: Prompt, response: str) -> list[dict]:
    """The chat a reward model reads: the prompt's messages, then the answer as the assistant's turn."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return [*messages, {"role": "assistant", "content": response}]


def conversation_ids(tokenizer, messages: list[dict], max_length: int | None = None) -> list[int]:
    """Token ids of a whole chat, exactly as TRL 1.16's RewardTrainer tokenises conversational pairs.

    Longer chats keep their last `max_length` tokens: the reward is read at the last token, and the end of the
    answer is what tells chosen from rejected; the start of the prompt (a default system prompt, often) goes first.
    """
    ids = list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    return ids[-max_length:] if max_length else ids


def pad_right(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (B, T), right-padded as TRL's DataCollatorForPreference pads.

    Right padding keeps every real token's position (and so its hidden state) as it was unpadded; the head then
    reads the rightmost token that is not `pad_id`, which is why pad must differ from any token a chat ends with."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)  # (B, T)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


# the model ---------------------------------------------------------------------------------------------------------
def lora_config(config: RewardTrainConfig):
    """LoRA on every linear layer; task SEQ_CLS makes PEFT train and save the new `score` head in full as well
    (modules_to_save), without which the adapter would apply to a randomly initialised head on every load."""
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="SEQ_CLS")


def load_tokenizer(source):
    """The tokenizer with a pad token distinct from EOS (rlhf.models.PREFERRED_PAD_TOKEN explains why)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    _set_pad_token(tokenizer)
    return tokenizer


@contextlib.contextmanager
def _expected_head_swap():
    """Load a causal LM as a sequence classifier without warnings about what is expected: `score` is new and
    `lm_head` unused. (TRL's `suppress_seqcls_warning` does the same; importing trl for it costs ~90 MB in a PPO run.)
    """
    from transformers.modeling_layers import GenericForSequenceClassification as Classifier

    names = ("_keys_to_ignore_on_load_missing", "_keys_to_ignore_on_load_unexpected")
    saved = [getattr(Classifier, name, None) for name in names]
    for name, old, key in zip(names, saved, (r"^score\.weight$", r"^lm_head\.")):
        setattr(Classifier, name, [*(old or []), key])
    try:
        yield
    finally:
        for name, old in zip(names, saved):
            setattr(Classifier, name, old)


def load_sequence_classifier(source, pad_token_id: int, dtype: torch.dtype = torch.float32):
    """A causal LM's body with a fresh scalar head, in `dtype`, knowing which id is padding.

    `config.pad_token_id` is how the head finds the last real token (the rightmost id that is not pad); without it
    transformers refuses batches larger than one."""
    from transformers import AutoModelForSequenceClassification

    try:
        with _expected_head_swap():
            model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=dtype)
    except (OSError, ValueError) as error:
        raise RLHFError(f"reward: could not load {str(source)!r} as a reward model: {str(error).splitlines()[0]}"
                        ) from error
    model.config.pad_token_id = pad_token_id
    return model


def build_reward_model(source, config: RewardTrainConfig, pad_token_id: int):
    """The model to train, seeded: the head's and LoRA's random initial weights follow from `config.seed`."""
    from peft import get_peft_model
    from transformers import set_seed

    set_seed(config.seed)
    model = load_sequence_classifier(source, pad_token_id)  # fp32 weights: the optimizer's master copy
    return get_peft_model(model, lora_config(config)) if config.lora else model


@torch.inference_mode()
def raw_scores(model, sequences: list[list[int]], pad_id: int, batch_size: int = 16) -> torch.Tensor:
    """The head's output at the last real token of each sequence, (N,) float32 on CPU, in input order."""
    if not sequences:
        return torch.zeros(0)
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(sequences), batch_size):
        input_ids, attention_mask = pad_right(sequences[start : start + batch_size], pad_id)
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                       use_cache=False).logits  # (B, 1)
        scores.append(logits.squeeze(-1).float().cpu())
    return torch.cat(scores)


# training ----------------------------------------------------------------------------------------------------------
def train_reward_model(
    store: Store,
    config: RewardTrainConfig,
    model_spec: str,
    progress: Progress | None = None,
    log_path: str | Path | None = None,
    stop: threading.Event | None = None,
) -> dict:
    """Train a reward model on the project's decided pairs and save it as a checkpoint; returns its meta with `path`.

    Holds out `config.eval_fraction` of the pairs (whole pairs, seeded) to measure accuracy, then normalises scores on
    the reference samples. `log_path` receives each step's metrics as they are logged. Setting `stop` ends training
    after the current step and still saves. A non-finite loss raises RLHFError and leaves no checkpoint behind.
    """
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import RewardConfig, RewardTrainer

    config.validate()
    # 1. data: decided pairs as chats, split by pair
    data = training_pairs(store, config.min_pairs)
    rows = data.dataset.to_list()
    train_rows, eval_rows = split_by_pair([r["pair_id"] for r in rows], config.eval_fraction, config.seed)

    # 2. model and tokenizer. A reward model starts from the base model, also when given a policy checkpoint (the
    # Train tab's "Start from" holds the round's policy): it judges that policy, so it should not inherit its drift.
    if is_checkpoint(model_spec) and read_meta(model_spec).get("kind") in POLICY_KINDS:
        model_spec = read_meta(model_spec)["base_model"]
    source = resolve_source(model_spec)
    tokenizer = load_tokenizer(source)
    model = build_reward_model(source, config, tokenizer.pad_token_id)

    def ids(prompt: list[dict], answer: str) -> list[int]:
        return conversation_ids(tokenizer, conversation(prompt, answer), config.max_length)

    train_dataset = Dataset.from_dict({
        side + "_ids": [ids(rows[i]["prompt"], rows[i][side][-1]["content"]) for i in train_rows]
        for side in ("chosen", "rejected")
    })

    device = resolve_device("auto")
    # Weights in fp32 for the optimizer; bf16 runs as autocast where it is native (GPUs, CPUs with AVX512-BF16/AMX),
    # fp32 elsewhere (TRL's configs default to bf16 everywhere). Gradient checkpointing (TRL's default) saves GPU
    # memory but only costs time on CPU, where memory is not the limit.
    compute_dtype = resolve_dtype("auto", device)
    checkpoint_id = new_checkpoint_id("reward")
    staged = staging_dir(store, checkpoint_id)
    monitor = TrainingMonitor("reward", Path(log_path) if log_path else None, progress, stop)
    try:
        with tempfile.TemporaryDirectory(prefix="rlhf-reward-") as scratch:
            args = RewardConfig(
                output_dir=scratch, save_strategy="no", eval_strategy="no", report_to=[], seed=config.seed,
                num_train_epochs=config.epochs, learning_rate=config.lr, per_device_train_batch_size=config.batch_size,
                max_length=None,  # already truncated by conversation_ids; TRL would drop long pairs instead
                use_cpu=device.type != "cuda", bf16=compute_dtype == torch.bfloat16,
                fp16=compute_dtype == torch.float16, activation_checkpointing=device.type == "cuda",
                logging_steps=1, disable_tqdm=True,
                logging_nan_inf_filter=False,  # transformers would hide a NaN loss behind the running mean
            )
            # 3. train (TRL takes the ids as they are: columns chosen_ids/rejected_ids mean "already tokenised")
            trainer = RewardTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer,
                                    callbacks=[monitor])
            trainer.remove_callback(PrinterCallback)  # disable_tqdm swaps the bar for a print of every log to stdout
            result = trainer.train()
        if monitor.bad_loss_step is not None or not math.isfinite(result.training_loss):
            last = monitor.rows[-1].get("reward/loss") if monitor.rows else result.training_loss
            raise RLHFError(
                f"reward: the loss became {last} at step {monitor.bad_loss_step or trainer.state.global_step}; "
                f"nothing was saved. Lower the learning rate (now {config.lr}) and train again."
            )

        # 4. score every reference sample once: normalisation, then training and held-out accuracy from the same scores
        # Accelerate wrapped forward in autocast for training; unwrapped, the fp32 weights give the scores that
        # RewardModel.load(dtype="fp32") gives (bf16 scores differ by about 1%).
        reward_model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False).eval()
        samples = _reference_samples(rows)
        sample_scores = raw_scores(reward_model, [ids(prompt, text) for prompt, text in samples.values()],
                                   tokenizer.pad_token_id, batch_size=2 * config.batch_size)
        if not torch.isfinite(sample_scores).all():
            raise RLHFError("reward: the trained model gives non-finite scores; nothing was saved. Lower the learning "
                            f"rate (now {config.lr}) and train again.")
        by_sample = dict(zip(samples, sample_scores.tolist()))
        normalisation = score_stats(sample_scores)
        if not normalisation["std"] > 1e-6:
            raise RLHFError("reward: the trained model gives every answer the same score, so scores cannot be "
                            "normalised; nothing was saved. Label more varied pairs or train with other settings.")

        def accuracy(indices: list[int]) -> float | None:
            if not indices:
                return None
            chosen = [by_sample[_sample_key(rows[i]["prompt"], rows[i]["chosen"])] for i in indices]
            rejected = [by_sample[_sample_key(rows[i]["prompt"], rows[i]["rejected"])] for i in indices]
            return pairwise_accuracy(chosen, rejected)

        eval_accuracy, train_accuracy = accuracy(eval_rows), accuracy(train_rows)
        final = {"step": trainer.state.global_step, "reward/eval_accuracy": eval_accuracy,
                 "reward/train_accuracy": train_accuracy, "reward/scores_mean": normalisation["mean"],
                 "reward/scores_std": normalisation["std"]}

        # 5. save: the adapter (with the head) or the full weights, the tokenizer beside them, the curves, the meta
        weights_dir = staged / ("adapter" if config.lora else "model")
        reward_model.save_pretrained(weights_dir)
        tokenizer.save_pretrained(weights_dir)
        (staged / METRICS_FILE).write_text("".join(json.dumps(row) + "\n" for row in [*monitor.rows, final]))
        if log_path is not None:
            with Path(log_path).open("a") as handle:
                handle.write(json.dumps(final) + "\n")
        meta = {
            "id": checkpoint_id,
            "kind": "reward",
            "base_model": model_spec,
            "config": asdict(config),
            "metrics": {
                "train_loss": result.training_loss,
                "final_loss": monitor.rows[-1].get("reward/loss") if monitor.rows else None,
                "eval_accuracy": eval_accuracy,
                "train_accuracy": train_accuracy,
                "n_train": len(train_rows),
                "n_eval": len(eval_rows),
                "steps": trainer.state.global_step,
                "seconds": result.metrics.get("train_runtime"),
                "stopped_early": bool(stop is not None and stop.is_set()),
                "mode": f"{device.type}, {'bf16 autocast' if args.bf16 else 'fp16' if args.fp16 else 'fp32'}, "
                        f"{'LoRA r' + str(config.lora_r) if config.lora else 'full'}",
            },
            "normalisation": normalisation,
            "dataset": {"fingerprint": data.fingerprint, "export_dir": str(data.export_dir), "rows": len(rows),
                        "eval_pair_ids": sorted({rows[i]["pair_id"] for i in eval_rows})},
        }
        path = publish(staged, meta)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)  # no half-written checkpoint, even on Ctrl-C
        raise
    return {**meta, "path": str(path)}


def _sample_key(prompt: list[dict], answer: list[dict]) -> tuple[str, str]:
    return json.dumps(prompt, sort_keys=True), answer[-1]["content"]


def _reference_samples(rows: list[dict]) -> dict[tuple[str, str], tuple[list[dict], str]]:
    """Every distinct (prompt, answer) of the pairs, chosen and rejected alike: the base policy's samples, which the
    normalisation centres on (a pair labelled twice, or an answer in two pairs, counts once)."""
    samples = {}
    for row in rows:
        for side in ("chosen", "rejected"):
            samples.setdefault(_sample_key(row["prompt"], row[side]), (row["prompt"], row[side][-1]["content"]))
    return samples


# scoring -----------------------------------------------------------------------------------------------------------
@dataclass
class RewardModel:
    """A trained reward model ready to score answers; `score` gives normalised scores, `score_raw` the head's."""

    model: torch.nn.Module
    tokenizer: object
    meta: dict
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def load(cls, checkpoint_path: str | Path, device: str | torch.device | None = None,
             dtype: str | torch.dtype | None = None) -> "RewardModel":
        """Load a reward checkpoint; device and dtype default to `auto` (rlhf.models). A LoRA adapter is merged into
        the base (in fp32, before any cast), so scoring runs at base-model speed."""
        from peft import PeftModel

        path = Path(checkpoint_path)
        if not (path / "meta.json").is_file():
            raise RLHFError(f"reward: {str(path)!r} is not a checkpoint folder (no meta.json); name a reward "
                            "checkpoint by its id, `latest`, or its folder under the project's checkpoints/.")
        meta = read_meta(path)
        if meta.get("kind") != "reward":
            raise RLHFError(f"reward: {str(path)!r} is a {meta.get('kind')} checkpoint, not a reward model; name a "
                            "reward checkpoint (its id starts with `reward-`), or `latest`.")
        device = resolve_device(device or "auto") if not isinstance(device, torch.device) else device
        if not isinstance(dtype, torch.dtype):
            dtype = resolve_dtype(dtype or "auto", device)
        weights = path / "adapter" if (path / "adapter").is_dir() else path / "model"
        tokenizer = load_tokenizer(weights)
        if weights.name == "model":
            model = load_sequence_classifier(weights, tokenizer.pad_token_id)
        else:
            base = load_sequence_classifier(resolve_source(meta["base_model"]), tokenizer.pad_token_id)
            model = PeftModel.from_pretrained(base, weights).merge_and_unload()
        model.config.pad_token_id = tokenizer.pad_token_id
        model.to(device=device, dtype=dtype).eval()
        return cls(model=model, tokenizer=tokenizer, meta={**meta, "path": str(path)}, device=device, dtype=dtype)

    @property
    def max_length(self) -> int | None:
        return self.meta["config"].get("max_length")

    def score_raw(self, prompts: list[Prompt], responses: list[str], batch_size: int = 16) -> torch.Tensor:
        """The head's output for each (prompt, response), (B,) float32 on CPU, read at the last real token of the chat
        formatted and truncated exactly as in training."""
        if len(prompts) != len(responses):
            raise ValueError(f"score: {len(prompts)} prompts but {len(responses)} responses")
        sequences = [conversation_ids(self.tokenizer, conversation(p, r), self.max_length)
                     for p, r in zip(prompts, responses)]
        return raw_scores(self.model, sequences, self.tokenizer.pad_token_id, batch_size)

    def score(self, prompts: list[Prompt], responses: list[str], batch_size: int = 16) -> torch.Tensor:
        """Normalised scores, (B,): the reference policy's answers score about N(0, 1)."""
        stats = self.meta["normalisation"]
        return normalise(self.score_raw(prompts, responses, batch_size), stats["mean"], stats["std"])


# CLI ---------------------------------------------------------------------------------------------------------------
def add_train_reward_parser(commands) -> None:
    """The `train-reward` subcommand, for `python -m rlhf`."""
    p = commands.add_parser("train-reward", help="train a reward model on the project's preference pairs (TRL)")
    p.add_argument("--project", required=True, help="project name (a folder under the data directory)")
    p.add_argument("--model", dest="spec", default=None,
                   help="base model spec: `bundled`, a local directory or a Hub id "
                        "(default: $RLHF_MODEL, else bundled)")
    add_arguments(p, RewardTrainConfig)
    p.add_argument("--full", dest="lora", action="store_false", default=None,
                   help="train every weight instead of a LoRA adapter (same as --no-lora)")
    p.set_defaults(func=cmd_train_reward)


def cmd_train_reward(args) -> None:
    config = from_arguments(RewardTrainConfig, args).validate()
    store = Store.open(args.project)  # the project must exist before any slow model loading

    def progress(step: int, total: int, metrics: dict) -> None:
        print(f"\rstep {step}/{total} loss {metrics['reward/loss']:.4f}", end="", file=sys.stderr, flush=True)

    meta = train_reward_model(store, config, args.spec or ModelConfig().spec, progress=progress,
                              stop=stop_on_ctrl_c())
    print(file=sys.stderr)
    m = meta["metrics"]
    held_out = (f"held-out accuracy {m['eval_accuracy']:.2f} on {m['n_eval']} pairs" if m["n_eval"]
                else f"no pairs held out, training accuracy {m['train_accuracy']:.2f}")
    steps = f"{m['steps']} step{'s' if m['steps'] != 1 else ''}"
    print(f"reward model: {steps} on {m['n_train']} pairs, loss {m['final_loss']:.4f}, {held_out} "
          f"-> {meta['path']}")


def add_score_parser(commands) -> None:
    """The `score` subcommand, for `python -m rlhf`."""
    p = commands.add_parser("score",
                            help="score one answer with a reward model (normalised: reference answers ~N(0,1))")
    p.add_argument("--project", required=True, help="project name (a folder under the data directory)")
    p.add_argument("--reward-model", default="latest", metavar="CKPT",
                   help="reward checkpoint: id, folder, or `latest` (default: latest)")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--response", required=True, help="the answer to score")
    add_arguments(p, ModelConfig, only=["device", "dtype"])
    p.set_defaults(func=cmd_score)


def cmd_score(args) -> None:
    store = Store.open(args.project)
    found = find_checkpoint(store, args.reward_model, kinds=("reward",))
    reward_model = RewardModel.load(found["path"], device=args.device or "auto", dtype=args.dtype or "auto")
    raw = reward_model.score_raw([args.prompt], [args.response])
    stats = reward_model.meta["normalisation"]
    print(f"{normalise(raw, stats['mean'], stats['std']).item():.4f}")
    print(f"(normalised; raw {raw.item():.4f}, reward model {found['id']})", file=sys.stderr)
