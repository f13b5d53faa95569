"""Reward model: train one on a project's preferences (TRL's RewardTrainer), score answers, normalise the scores.

A reward model is the base model with a scalar head (`AutoModelForSequenceClassification`, num_labels=1) read at the
last real token of prompt + answer (or, with `pooling="mean"`, averaged over the answer's tokens), trained on decided
pairs with the Bradley-Terry loss `-log sigmoid(score(chosen) - score(rejected))`
(Ouyang et al. 2022, https://arxiv.org/abs/2203.02155).

After training, raw scores are normalised so that the reference policy's samples (the answers people labelled, which
the base policy wrote) score about N(0, 1), as openai/lm-human-preferences does before PPO (train_reward.py sets a
gain and bias on the head): a KL coefficient then means the same thing whatever scale the head happened to learn.

    train_reward_model(store, config, model_spec)     -> meta of the new checkpoint (kind "reward"), with its `path`
    RewardModel.load(path).score(prompts, responses)  -> normalised scores, (B,)
    pairwise_accuracy, normalise, split_by_pair,      small pure functions (tests/test_reward.py checks them by hand)
    conversation, conversation_ids, pad_right

Tokenisation: TRL 1.16 renders a conversational pair as `apply_chat_template(prompt + [answer], tokenize=True)` (no
generation prompt) and pads on the right. We tokenise the pairs ourselves with the same call (`conversation_ids`) and
hand TRL the ids, so training and `RewardModel.score` share one function, and over-long pairs are truncated rather than
silently dropped (TRL filters out any pair longer than `max_length`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from rlhf.checkpoints import META_FILE, POLICY_KINDS, CheckpointRecord, is_checkpoint, read_meta, staged_checkpoint
from rlhf.config import RewardTrainConfig, RLHFError
from rlhf.dataset import training_pairs
from rlhf.distributed import one_gpu_per_process
from rlhf.drift import labelled_profile, outside_support
from rlhf.models import set_pad_token, resolve_device, resolve_dtype, resolve_source, zero_gpu
from rlhf.monitor import Progress, TrainingMonitor
from rlhf.store import Store


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


def normalise(scores: Sequence[float] | torch.Tensor, mean, std) -> torch.Tensor:
    """(scores - mean) / std: with the reference samples' mean and std they score ~N(0, 1) (lm-human-preferences).
    With several heads, scores are (N, K) and mean and std are lists of K: each head is normalised on its own."""
    mean_t, std_t = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
    if not bool((std_t > 0).all()):
        raise ValueError(f"normalise: std must be positive, got {std}")
    return (torch.as_tensor(scores, dtype=torch.float32) - mean_t) / std_t


def score_stats(scores: torch.Tensor) -> dict:
    """Mean and (biased, like tf.nn.moments in lm-human-preferences) standard deviation of raw scores: numbers for one
    head's (N,) scores, lists (one per head) for (N, K)."""
    scores = scores.double()
    if scores.ndim == 1:
        return {"mean": scores.mean().item(), "std": scores.std(correction=0).item()}
    return {"mean": scores.mean(0).tolist(), "std": scores.std(0, correction=0).tolist()}


def bootstrap_weights(n_rows: int, heads: int, seed: int) -> torch.Tensor:
    """(N, K) how often each training row counts for each head: a bootstrap resample per head (N draws with
    replacement), so heads learn from different data and disagree where the data says little (Coste et al. 2023,
    "Reward Model Ensembles Help Mitigate Overoptimization"). One head counts every row once."""
    if heads == 1:
        return torch.ones(n_rows, 1)
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(n_rows, (heads, n_rows), generator=generator)  # (K, N)
    return torch.stack([torch.bincount(row, minlength=n_rows) for row in draws], dim=1).float()  # (N, K)


def weighted_pair_loss(chosen: torch.Tensor, rejected: torch.Tensor, weights: torch.Tensor,
                       preference: torch.Tensor | None = None) -> torch.Tensor:
    """Bradley-Terry loss of every head, each pair counted `weights` times: (B, K), (B, K), (B, K) -> scalar.

    `preference` (B,) is the probability that `chosen` is the better answer: 1 for a decided pair (the loss is
    -log sigmoid(d), d = chosen - rejected), 0.5 for a tie (-(log sigmoid(d) + log sigmoid(-d)) / 2, least at d = 0:
    a tie pulls the two scores together). None means every pair is decided."""
    margin = chosen - rejected  # (B, K)
    losses = -torch.nn.functional.logsigmoid(margin)  # (B, K)
    if preference is not None:
        p = preference.reshape(-1, 1).to(margin.dtype)  # (B, 1)
        losses = p * losses - (1 - p) * torch.nn.functional.logsigmoid(-margin)
    return (losses * weights).sum() / weights.sum().clamp(min=1)


def ensemble_reward(head_scores: torch.Tensor, uncertainty_penalty: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(reward, disagreement) from normalised head scores (B, K): the heads' mean minus `uncertainty_penalty` times
    their standard deviation (biased; 0 for one head). Answers the heads disagree about earn less, the way a careful
    annotator discounts a judgement they are unsure of."""
    mean = head_scores.mean(dim=1)
    std = head_scores.std(dim=1, correction=0) if head_scores.size(1) > 1 else torch.zeros_like(mean)
    return mean - uncertainty_penalty * std, std


def split_ties(tie_pair_ids: Sequence[int], held_out_pairs: set[int], decided_pairs: set[int], eval_fraction: float,
               seed: int) -> tuple[list[int], list[int]]:
    """Tie row indices (train, eval). A tie on a pair that also has a decided vote (two annotators disagreed) goes
    where that pair went, so the auditor never learns from a pair the reward model saw; the other ties are split by
    pair as the decided ones are (`split_by_pair`). Pure."""
    alone = [i for i, pair in enumerate(tie_pair_ids) if pair not in decided_pairs]
    alone_train, alone_eval = split_by_pair([tie_pair_ids[i] for i in alone], eval_fraction, seed)
    evaluation = {alone[j] for j in alone_eval} | {i for i, pair in enumerate(tie_pair_ids) if pair in held_out_pairs}
    return ([i for i in range(len(tie_pair_ids)) if i not in evaluation], sorted(evaluation))


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


def answer_start(tokenizer, messages: list[dict], max_length: int | None = None) -> int:
    """Where the answer begins in `conversation_ids(tokenizer, messages, max_length)`: the length of the prompt as a
    policy is given it (with the generation prompt), less what truncation dropped from the front."""
    full = conversation_ids(tokenizer, messages)
    prompt = list(tokenizer.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True,
                                                return_dict=True)["input_ids"])
    shared = next((i for i, (a, b) in enumerate(zip(full, prompt)) if a != b), min(len(full), len(prompt)))
    dropped = max(0, len(full) - max_length) if max_length else 0
    return max(0, shared - dropped)


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


def mean_over_answer(token_scores: torch.Tensor, attention_mask: torch.Tensor, answer_starts: torch.Tensor
                     ) -> torch.Tensor:
    """(B, K): the heads' per-token outputs (B, T, K) averaged over each answer's tokens, from its start
    (answer_starts, (B,)) to its last real token (attention_mask, (B, T), right padding). Pure.

    The prompt's tokens are left out: they are the same in both answers of a pair. The mean, not the sum, so that an
    answer gains nothing by being longer."""
    positions = torch.arange(token_scores.size(1), device=token_scores.device)  # (T,)
    answer = attention_mask.bool() & (positions[None, :] >= answer_starts.to(positions.device)[:, None])  # (B, T)
    weights = answer.to(token_scores.dtype).unsqueeze(-1)  # (B, T, 1)
    return (token_scores * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)  # (B, K)


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
    set_pad_token(tokenizer)
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


def load_sequence_classifier(source, pad_token_id: int, dtype: torch.dtype = torch.float32, heads: int = 1):
    """A causal LM's body with a fresh head of `heads` scalar outputs, in `dtype`, knowing which id is padding.

    `config.pad_token_id` is how the head finds the last real token (the rightmost id that is not pad); without it
    transformers refuses batches larger than one."""
    from transformers import AutoModelForSequenceClassification

    try:
        with _expected_head_swap():
            model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=heads, dtype=dtype)
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
    model = load_sequence_classifier(source, pad_token_id, heads=config.heads)  # fp32: the optimizer's master copy
    return get_peft_model(model, lora_config(config)) if config.lora else model


def model_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "last",
                 answer_starts: torch.Tensor | None = None) -> torch.Tensor:
    """The heads' outputs for a right-padded batch, (B, K): read at the last real token (`last`, the classifier's own
    reading), or averaged over the answer's tokens (`mean`, `mean_over_answer`; needs `answer_starts`)."""
    if pooling == "last":
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    # The classifier keeps only the last token's output; its head's output at every token is caught on the way.
    head_names = [name for name, _ in model.named_modules() if name == "score" or name.endswith(".score")]
    head = model.get_submodule(min(head_names, key=len))  # PEFT wraps the head; its wrapper gives the active output
    caught = {}
    handle = head.register_forward_hook(lambda module, args, output: caught.__setitem__("scores", output))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        handle.remove()
    return mean_over_answer(caught["scores"], attention_mask, answer_starts)  # (B, K)


@torch.inference_mode()
def raw_scores(model, sequences: list[list[int]], pad_id: int, batch_size: int = 16, pooling: str = "last",
               answer_starts: list[int] | None = None) -> torch.Tensor:
    """The heads' outputs for each sequence (`model_scores`), (N, K) float32 on CPU, in input order."""
    if not sequences:
        return torch.zeros(0, model.config.num_labels)
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(sequences), batch_size):
        input_ids, attention_mask = pad_right(sequences[start : start + batch_size], pad_id)
        starts = None if answer_starts is None else torch.tensor(answer_starts[start : start + batch_size])
        logits = model_scores(model, input_ids.to(device), attention_mask.to(device), pooling, starts)
        scores.append(logits.float().cpu())  # (B, K)
    return torch.cat(scores)


def _ensemble_trainer(pooling: str = "last", weights_column: str = "weights"):
    """TRL's RewardTrainer with two changes: each head's Bradley-Terry loss counts each pair as often as that head's
    bootstrap resample drew it, and the score is read as `pooling` says (`model_scores`). Built on first use:
    importing trl costs ~90 MB, which a PPO run scoring with a saved reward model should not pay."""
    from trl import RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    class WeightedCollator(DataCollatorForPreference):
        def torch_call(self, examples):
            batch = super().torch_call(examples)
            for column in (weights_column, "preference"):  # (B, K) and (B,)
                batch[column] = torch.tensor([example[column] for example in examples], dtype=torch.float)
            # one start per row of the batch, chosen answers first as TRL stacks them
            batch["answer_starts"] = torch.tensor([e[side + "_start"] for side in ("chosen", "rejected")
                                                   for e in examples])  # (2B,)
            return batch

    class EnsembleRewardTrainer(RewardTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights, preference = inputs.pop(weights_column), inputs.pop("preference")
            scores = model_scores(model, inputs["input_ids"], inputs["attention_mask"], pooling,
                                  inputs.pop("answer_starts"))  # (2B, K)
            chosen, rejected = torch.chunk(scores, chunks=2)  # (B, K) each: chosen first, as TRL collates
            loss = weighted_pair_loss(chosen.float(), rejected.float(), weights.to(chosen.device),
                                      preference.to(chosen.device))
            mode = "train" if model.training else "eval"
            decided = preference == 1  # accuracy and margin mean something for decided pairs only
            with torch.no_grad():
                if decided.any():
                    self._metrics[mode]["accuracy"].append((chosen > rejected)[decided].float().mean().item())
                    self._metrics[mode]["margin"].append((chosen - rejected)[decided].mean().item())
            return (loss, {"logits": scores}) if return_outputs else loss

    return EnsembleRewardTrainer, WeightedCollator


# training ----------------------------------------------------------------------------------------------------------
AUDIT_DIR = "audit"
"""Sub-folder of a reward checkpoint holding its auditor: a reward model trained only on the held-out pairs."""
MIN_AUDIT_PAIRS = 8
"""Fewer held-out pairs than this train no auditor (its verdicts would be noise)."""
AUDIT_BASELINES_FILE = "prompt_baselines.json"
"""In the auditor's folder: its mean score of each prompt's labelled answers, {prompt key: score} (`prompt_baselines`).
In the reward model's own folder: its heads' mean score and mean disagreement of each prompt's candidate answers,
{"score": {prompt key: score}, "disagreement": {prompt key: std}}: PPO's per-prompt baseline (`reward_baselines`)."""


def prompt_key(prompt: Prompt) -> str:
    """One key per prompt, given as its user text or as chat messages (one user message is its text). Pure."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0].get("role") == "user":
        return prompt[0]["content"]
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def prompt_baselines(prompts: list[Prompt], scores: list[float]) -> dict[str, float]:
    """The mean score of each prompt's answers. An answer's score minus its prompt's baseline says how much better it
    is than what the base policy wrote for that prompt: most of the spread of raw scores is between prompts (some
    questions get high scores whatever the answer), which would drown a policy's progress. Pure."""
    sums: dict[str, list[float]] = {}
    for prompt, score in zip(prompts, scores, strict=True):
        entry = sums.setdefault(prompt_key(prompt), [0.0, 0])
        entry[0] += score
        entry[1] += 1
    return {key: total / count for key, (total, count) in sums.items()}


def read_prompt_baselines(checkpoint_path: str | Path) -> dict[str, float]:
    """The auditor's prompt baselines of a reward checkpoint ({} for one trained before they were kept)."""
    path = Path(checkpoint_path) / AUDIT_DIR / AUDIT_BASELINES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def reward_baselines(checkpoint_path: str | Path, uncertainty_penalty: float) -> dict[str, float]:
    """The reward model's own baseline of each prompt: the mean reward PPO would give that prompt's candidate answers,
    heads' mean minus `uncertainty_penalty` times their disagreement (the mean of a difference is the difference of
    the means). {} for a checkpoint trained before they were kept."""
    path = Path(checkpoint_path) / AUDIT_BASELINES_FILE
    if not path.is_file():
        return {}
    kept = json.loads(path.read_text())
    return {key: score - uncertainty_penalty * kept["disagreement"].get(key, 0.0)
            for key, score in kept["score"].items()}


# the auditor's evidence: which of a run's weights PPO and DPO publish ---------------------------------------------
def audit_gains(scores: list[float], prompts: list[str], baselines: dict[str, float]) -> list[float]:
    """Each answer's auditor score minus its prompt's baseline (the auditor's mean score of that prompt's labelled
    answers; 0, their overall mean, for a prompt nobody labelled): how much better than the base policy's answers to
    the same question. Pure."""
    return [score - baselines.get(prompt_key(prompt), 0.0) for score, prompt in zip(scores, prompts, strict=True)]


def step_evidence(gains_by_step: list[list[float]], window: int = 3) -> tuple[float, float]:
    """How good the policy is by held-out evidence at the newest step: the mean auditor gain (`audit_gains`) of the
    answers of the last `window` steps, and its standard error (one step's 16 answers are too few to rank steps by).
    Pure."""
    gains = [gain for step in gains_by_step[-window:] for gain in step]
    mean = sum(gains) / len(gains)
    variance = sum((gain - mean) ** 2 for gain in gains) / max(1, len(gains) - 1)
    return mean, math.sqrt(variance / len(gains))


def within_noise_of_peak(peak: tuple[float, float] | None, evidence: float, error: float) -> tuple[bool, tuple]:
    """Whether a healthy step's weights become the ones to publish, and the peak (evidence, standard error) after it.

    The rule: publish the newest step whose evidence is not distinguishably worse than the best seen, that is within
    the combined standard error of the peak's (the one-standard-error rule). Taking the peak itself would let noise
    choose an early step and throw away the learning after it; taking the last step would ignore the evidence. Pure.
    """
    if peak is None or evidence > peak[0]:
        return True, (evidence, error)
    return evidence >= peak[0] - math.hypot(peak[1], error), peak


def train_reward_model(
    store: Store,
    config: RewardTrainConfig,
    model_spec: str,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> dict:
    """Train a reward model on the project's decided pairs and save it as a checkpoint; returns its meta with `path`.

    The pairs are split (whole pairs, seeded, `config.eval_fraction` held out). The reward model PPO optimises learns
    from the first part; an **auditor** (one head, same recipe) learns from the held-out part only, so it has never seen
    a vote the reward model saw: its verdict on a tuned policy is evidence the policy never optimised against
    (`rlhf.evaluate`). Each model's accuracy is measured on the other's pairs. Scores are normalised on the reference
    samples (the answers people labelled). Each step's metrics go to the run's log as they are logged
    (`rlhf.checkpoints.run_log_path`); `stop` ends training after the current step and still saves. A non-finite loss
    raises RLHFError and leaves nothing behind.
    """
    config.validate()
    # 1. data: decided pairs as chats, split by pair; with `tie_weight`, the ties after them, split the same way
    data = training_pairs(store, config.min_pairs)
    rows = data.dataset.to_list()
    train_rows, eval_rows = split_by_pair([r["pair_id"] for r in rows], config.eval_fraction, config.seed)
    ties = data.ties if config.tie_weight > 0 else []
    tie_train, tie_eval = split_ties([t["pair_id"] for t in ties], {rows[i]["pair_id"] for i in eval_rows},
                                     {r["pair_id"] for r in rows}, config.eval_fraction, config.seed)
    pairs = rows + ties  # decided rows keep their indices: accuracies are measured on them alone
    fit_train = train_rows + [len(rows) + i for i in tie_train]
    fit_eval = eval_rows + [len(rows) + i for i in tie_eval]

    # 2. model and tokenizer. A reward model starts from the base model, also when given a policy checkpoint (the
    # Train tab's "Start from" holds the round's policy): it judges that policy, so it should not inherit its drift.
    if is_checkpoint(model_spec) and read_meta(model_spec).get("kind") in POLICY_KINDS:
        model_spec = read_meta(model_spec)["base_model"]
    source = resolve_source(model_spec)
    tokenizer = load_tokenizer(source)

    def ids(prompt: list[dict], answer: str) -> list[int]:
        return conversation_ids(tokenizer, conversation(prompt, answer), config.max_length)

    def start(prompt: list[dict], answer: str) -> int:
        """Where the answer begins in `ids(prompt, answer)`; only the mean over the answer reads it."""
        if config.pooling != "mean":
            return 0
        return answer_start(tokenizer, conversation(prompt, answer), config.max_length)

    samples = _reference_samples(pairs)  # the answers people labelled, ties included when trained on
    sample_ids = [ids(prompt, text) for prompt, text in samples.values()]
    sample_starts = [start(prompt, text) for prompt, text in samples.values()]
    with staged_checkpoint(store, "reward", report_to=config.report_to, every_process=True) as staged:
        monitor = TrainingMonitor("reward", staged.log, progress, stop)
        # 3. train the reward model, then score every reference sample once: normalisation, then both accuracies
        main = _fit(source, tokenizer, pairs, fit_train, config, config.heads, ids, start, monitor)
        head_scores = _normalise_on_samples(main, sample_ids, sample_starts, tokenizer.pad_token_id, config)  # (N, K)
        ensemble_mean = head_scores.mean(dim=1)
        by_sample = dict(zip(samples, ensemble_mean.tolist()))
        eval_accuracy = _accuracy(rows, eval_rows, by_sample)
        train_accuracy = _accuracy(rows, train_rows, by_sample)
        # What the labelled answers look like to this model: PPO clips rewards to their range and its drift
        # detectors compare the policy's answers with them (rlhf.drift).
        answers = [text for _, text in samples.values()]
        labelled = labelled_profile(
            token_counts=[len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in answers],
            texts=answers, scores=ensemble_mean, disagreement=ensemble_reward(head_scores, 0.0)[1],
            prompts=[json.dumps(prompt) for prompt, _ in samples.values()],
        )
        # PPO's per-prompt baselines, over every candidate answer of the project (the policy's own samples), not
        # only the labelled ones: a prompt whose pairs were all ties still has a level to subtract.
        candidates = {key: sample for key, sample in _candidate_samples(store).items() if key not in samples}
        candidate_scores = normalise(raw_scores(main.model, [ids(p, t) for p, t in candidates.values()],
                                                tokenizer.pad_token_id, 2 * config.batch_size, config.pooling,
                                                [start(p, t) for p, t in candidates.values()]),
                                     main.normalisation["mean"], main.normalisation["std"])
        all_scores = torch.cat([head_scores, candidate_scores.reshape(-1, head_scores.size(1))])
        all_prompts = [prompt for prompt, _ in (*samples.values(), *candidates.values())]
        own_baselines = {"score": prompt_baselines(all_prompts, all_scores.mean(dim=1).tolist()),
                         "disagreement": prompt_baselines(all_prompts, ensemble_reward(all_scores, 0.0)[1].tolist())}
        sample_prompts = [prompt for prompt, _ in samples.values()]
        final = {"step": main.steps, "reward/eval_accuracy": eval_accuracy, "reward/train_accuracy": train_accuracy,
                 "reward/disagreement": labelled["disagreement_mean"]}

        # 4. the auditor: the same recipe on the held-out pairs alone (its own monitor: its steps are not the curve's)
        audit = None
        held_out_pairs = len({rows[i]["pair_id"] for i in eval_rows})
        if held_out_pairs >= MIN_AUDIT_PAIRS and not (stop is not None and stop.is_set()):
            auditor = _fit(source, tokenizer, pairs, fit_eval, config, 1, ids, start,
                           TrainingMonitor("audit", None, None, stop))
            audit_scores = _normalise_on_samples(auditor, sample_ids, sample_starts, tokenizer.pad_token_id, config)
            audit_by_sample = dict(zip(samples, audit_scores.mean(dim=1).tolist()))
            baselines = prompt_baselines(sample_prompts, list(audit_by_sample.values()))
            audit = {"normalisation": auditor.normalisation, "n_train": len(eval_rows), "n_ties": len(tie_eval),
                     "accuracy_on_reward_model_pairs": _accuracy(rows, train_rows, audit_by_sample),
                     "steps": auditor.steps}
            final["reward/audit_accuracy"] = audit["accuracy_on_reward_model_pairs"]

        # 5. save: the adapter (with the heads) or the full weights, the tokenizer beside them, the curves, the meta
        for fitted, folder in ((main, staged.folder), *(((auditor, staged.folder / AUDIT_DIR),) if audit else ())):
            weights_dir = folder / ("adapter" if config.lora else "model")
            fitted.model.save_pretrained(weights_dir)
            tokenizer.save_pretrained(weights_dir)
        # Files, not meta: one entry per prompt.
        (staged.folder / AUDIT_BASELINES_FILE).write_text(json.dumps(own_baselines, ensure_ascii=False))
        if audit:
            (staged.folder / AUDIT_DIR / AUDIT_BASELINES_FILE).write_text(json.dumps(baselines, ensure_ascii=False))
        if staged.log is not None:  # rank 0 of a data-parallel run, or the only process
            staged.log.append(final)  # the curve's last row: what the finished model measures
        return staged.publish(CheckpointRecord(
            id=staged.id,
            kind="reward",
            base_model=model_spec,
            config=asdict(config),
            metrics={
                "train_loss": main.training_loss,
                "final_loss": monitor.rows[-1].get("reward/loss") if monitor.rows else None,
                "eval_accuracy": eval_accuracy,
                "train_accuracy": train_accuracy,
                "n_train": len(train_rows),
                "n_eval": len(eval_rows),
                "n_ties": len(tie_train),
                "steps": main.steps,
                "seconds": main.seconds,
                "stopped_early": bool(stop is not None and stop.is_set()),
                "mode": main.mode,
            },
            dataset={"fingerprint": data.with_ties_fingerprint if ties else data.fingerprint,
                     "export_dir": str(data.export_dir), "rows": len(rows),
                     "eval_pair_ids": sorted({rows[i]["pair_id"] for i in eval_rows}), "ties": len(ties)},
            extras={"normalisation": main.normalisation, "heads": config.heads, "labelled_answers": labelled,
                    "audit": audit},
        ))


@dataclass
class _Fitted:
    model: torch.nn.Module
    normalisation: dict
    steps: int
    training_loss: float
    seconds: float | None
    mode: str


def _fit(source, tokenizer, rows: list[dict], indices: list[int], config: RewardTrainConfig, heads: int, ids, start,
         monitor: TrainingMonitor) -> _Fitted:
    """Train a reward model of `heads` heads on `rows[indices]` with TRL's RewardTrainer (our bootstrap loss); returns
    it unwrapped, in fp32; `_normalise_on_samples` then sets its normalisation. A tie row (label "tie") counts
    `config.tie_weight` times and trains its two answers' scores together."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import RewardConfig

    model = build_reward_model(source, dataclasses.replace(config, heads=heads), tokenizer.pad_token_id)
    is_tie = torch.tensor([rows[i]["label"] == "tie" for i in indices]).reshape(-1, 1)  # (N, 1)
    dataset = Dataset.from_dict({
        **{side + "_ids": [ids(rows[i]["prompt"], rows[i][side][-1]["content"]) for i in indices]
           for side in ("chosen", "rejected")},
        **{side + "_start": [start(rows[i]["prompt"], rows[i][side][-1]["content"]) for i in indices]
           for side in ("chosen", "rejected")},
        "weights": (bootstrap_weights(len(indices), heads, config.seed)
                    * torch.where(is_tie, config.tie_weight, 1.0)).tolist(),  # (N, K)
        "preference": torch.where(is_tie, 0.5, 1.0).flatten().tolist(),  # (N,)
    })
    device = resolve_device("auto")
    # Weights in fp32 for the optimizer; bf16 runs as autocast where it is native (GPUs, CPUs with AVX512-BF16/AMX),
    # fp32 elsewhere (TRL's configs default to bf16 everywhere). Gradient checkpointing (TRL's default) saves GPU
    # memory but only costs time on CPU, where memory is not the limit.
    compute_dtype = resolve_dtype("auto", device)
    with tempfile.TemporaryDirectory(prefix="rlhf-reward-") as scratch:
        args = one_gpu_per_process(RewardConfig(  # one GPU, as PPO; several: accelerate launch
            output_dir=scratch, save_strategy="no", eval_strategy="no", report_to=[], seed=config.seed,
            num_train_epochs=config.epochs, learning_rate=config.lr, per_device_train_batch_size=config.batch_size,
            max_length=None,  # already truncated by conversation_ids; TRL would drop long pairs instead
            use_cpu=device.type != "cuda", bf16=compute_dtype == torch.bfloat16,
            fp16=compute_dtype == torch.float16, activation_checkpointing=device.type == "cuda",
            logging_steps=1, disable_tqdm=True,
            logging_nan_inf_filter=False,  # transformers would hide a NaN loss behind the running mean
            remove_unused_columns=False,  # keep the bootstrap weights for the collator
        ))
        trainer_class, collator_class = _ensemble_trainer(config.pooling)
        # TRL 1.16 refuses a model whose config says num_labels != 1; our K outputs are K one-reward heads, each
        # trained by our own loss, so the check is passed with the config saying 1 and then set right again.
        model.config.num_labels = 1
        try:
            trainer = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                    callbacks=[monitor],
                                    data_collator=collator_class(pad_token_id=tokenizer.pad_token_id))
        finally:
            model.config.num_labels = heads
        trainer.remove_callback(PrinterCallback)  # disable_tqdm swaps the bar for a print of every log to stdout
        result = trainer.train()
    if monitor.bad_loss_step is not None or not math.isfinite(result.training_loss):
        last = monitor.rows[-1].get(f"{monitor.prefix}/loss") if monitor.rows else result.training_loss
        raise RLHFError(
            f"reward: the loss became {last} at step {monitor.bad_loss_step or trainer.state.global_step}; "
            f"nothing was saved. Lower the learning rate (now {config.lr}) and train again."
        )
    # Accelerate wrapped forward in autocast for training; unwrapped, the fp32 weights give the scores that
    # RewardModel.load(dtype="fp32") gives (bf16 scores differ by about 1%).
    fitted = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False).eval()
    mode = (f"{device.type}, {'bf16 autocast' if args.bf16 else 'fp16' if args.fp16 else 'fp32'}, "
            f"{'LoRA r' + str(config.lora_r) if config.lora else 'full'}, {heads} head{'s' if heads > 1 else ''}")
    return _Fitted(fitted, {}, trainer.state.global_step, result.training_loss, result.metrics.get("train_runtime"),
                   mode)


def _normalise_on_samples(fitted: "_Fitted", sample_ids: list[list[int]], sample_starts: list[int], pad_id: int,
                          config: RewardTrainConfig) -> torch.Tensor:
    """Score the reference samples, set `fitted.normalisation` so each head scores them ~N(0, 1), and return the
    normalised (N, K) scores."""
    raw = raw_scores(fitted.model, sample_ids, pad_id, 2 * config.batch_size, config.pooling, sample_starts)
    if not torch.isfinite(raw).all():
        raise RLHFError("reward: the trained model gives non-finite scores; nothing was saved. Lower the learning "
                        f"rate (now {config.lr}) and train again.")
    stats = score_stats(raw)
    if not min(stats["std"]) > 1e-6:
        raise RLHFError("reward: the trained model gives every answer the same score, so scores cannot be "
                        "normalised; nothing was saved. Label more varied pairs or train with other settings.")
    fitted.normalisation = stats
    return normalise(raw, stats["mean"], stats["std"])


def _accuracy(rows: list[dict], indices: list[int], by_sample: dict) -> float | None:
    """Pairwise accuracy of `by_sample`'s scores on `rows[indices]`; None when there are none."""
    if not indices:
        return None
    chosen = [by_sample[_sample_key(rows[i]["prompt"], rows[i]["chosen"])] for i in indices]
    rejected = [by_sample[_sample_key(rows[i]["prompt"], rows[i]["rejected"])] for i in indices]
    return pairwise_accuracy(chosen, rejected)


def _sample_key(prompt: list[dict], answer: list[dict]) -> tuple[str, str]:
    return json.dumps(prompt, sort_keys=True), answer[-1]["content"]


def _candidate_samples(store: Store) -> dict[tuple[str, str], tuple[list[dict], str]]:
    """Every distinct (prompt, answer) of the project's candidate generations (not the Arena's or audits'), keyed
    as `_reference_samples`."""
    ids = [c.id for run in store.candidate_generation_runs() for c in store.completions(run_id=run["id"])]
    samples = {}
    for prompt, text in store.completion_chats(ids).values():
        samples.setdefault(_sample_key(prompt, [{"role": "assistant", "content": text}]), (prompt, text))
    return samples


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
             dtype: str | torch.dtype | None = None, audit: bool = False) -> "RewardModel":
        """Load a reward checkpoint, or with `audit` its auditor (trained on the held-out pairs only); device and dtype
        default to `auto` (rlhf.models). A LoRA adapter is merged into the base (in fp32, before any cast), so scoring
        runs at base-model speed."""
        from peft import PeftModel

        path = Path(checkpoint_path)
        if not (path / META_FILE).is_file():
            raise RLHFError(f"reward: {str(path)!r} is not a checkpoint folder (no meta.json); name a reward "
                            "checkpoint by its id, `latest`, or its folder under the project's checkpoints/.")
        meta = read_meta(path)
        if meta.get("kind") != "reward":
            raise RLHFError(f"reward: {str(path)!r} is a {meta.get('kind')} checkpoint, not a reward model; name a "
                            "reward checkpoint (its id starts with `reward-`), or `latest`.")
        device = resolve_device(device or "auto") if not isinstance(device, torch.device) else device
        if not isinstance(dtype, torch.dtype):
            dtype = resolve_dtype(dtype or "auto", device)
        if audit:
            if not meta.get("audit"):
                raise RLHFError(f"reward: {meta['id']} has no auditor (too few held-out pairs when it was trained); "
                                "label more pairs and train a reward model again.")
            meta = {**meta, "normalisation": meta["audit"]["normalisation"], "heads": 1, "labelled_answers": None}
            path = path / AUDIT_DIR
        weights = path / "adapter" if (path / "adapter").is_dir() else path / "model"
        tokenizer = load_tokenizer(weights)
        heads = meta.get("heads", 1)
        if weights.name == "model":
            model = load_sequence_classifier(weights, tokenizer.pad_token_id, heads=heads)
        else:
            base = load_sequence_classifier(resolve_source(meta["base_model"]), tokenizer.pad_token_id, heads=heads)
            model = PeftModel.from_pretrained(base, weights).merge_and_unload()
        model.config.pad_token_id = tokenizer.pad_token_id
        model.to(device=device, dtype=dtype).eval()
        return cls(model=model, tokenizer=tokenizer, meta={**meta, "path": str(checkpoint_path)}, device=device,
                   dtype=dtype)

    @property
    def max_length(self) -> int | None:
        return self.meta["config"].get("max_length")

    @property
    def pooling(self) -> str:
        return self.meta["config"].get("pooling", "last")  # reward models trained before pooling was a setting

    def score_raw(self, prompts: list[Prompt], responses: list[str], batch_size: int = 16) -> torch.Tensor:
        """The heads' outputs for each (prompt, response), (B, K) float32 on CPU, read as in training (`pooling`)
        from the chat formatted and truncated exactly as in training."""
        if len(prompts) != len(responses):
            raise ValueError(f"score: {len(prompts)} prompts but {len(responses)} responses")
        chats = [conversation(p, r) for p, r in zip(prompts, responses)]
        sequences = [conversation_ids(self.tokenizer, chat, self.max_length) for chat in chats]
        starts = ([answer_start(self.tokenizer, chat, self.max_length) for chat in chats]
                  if self.pooling == "mean" else None)
        return raw_scores(self.model, sequences, self.tokenizer.pad_token_id, batch_size, self.pooling, starts)

    def score_heads(self, prompts: list[Prompt], responses: list[str], batch_size: int = 16) -> torch.Tensor:
        """Normalised scores of every head, (B, K): on the reference policy's answers each head scores ~N(0, 1)."""
        stats = self.meta["normalisation"]
        return normalise(self.score_raw(prompts, responses, batch_size), stats["mean"], stats["std"])

    def score(self, prompts: list[Prompt], responses: list[str], batch_size: int = 16) -> torch.Tensor:
        """The heads' mean normalised score, (B,): what the reward model thinks, before any caution."""
        return self.score_heads(prompts, responses, batch_size).mean(dim=1)

    def rewards(self, prompts: list[Prompt], responses: list[str], uncertainty_penalty: float = 1.0,
                cautious: bool = True, batch_size: int = 16) -> "Rewards":
        """What PPO optimises: the heads' mean minus `uncertainty_penalty` times their disagreement. `cautious` adds
        what the model knows about its own reach: scores are clipped to the range it gives the labelled answers, and
        an answer outside their support (rlhf.drift.outside_support: far off their length, repeating itself, the
        same answer to another prompt) scores as the worst labelled answer. An answer unlike anything annotators
        judged must not score as the best answer ever seen: that is where PPO finds the reward model's blind spots."""
        head_scores = self.score_heads(prompts, responses, batch_size)
        scores, disagreement = ensemble_reward(head_scores, uncertainty_penalty)
        labelled = self.meta.get("labelled_answers")
        clipped = outside = torch.zeros_like(scores, dtype=torch.bool)
        if cautious and labelled:
            low, high = labelled["score_min"], labelled["score_max"]
            clipped = (scores < low) | (scores > high)
            scores = scores.clamp(low, high)
            users = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
            counts = [len(self.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses]
            outside = outside_support(users, responses, counts, labelled)
            scores = torch.where(outside, torch.full_like(scores, low), scores)
        return Rewards(scores=scores, disagreement=disagreement if head_scores.size(1) > 1 else None,
                       clipped=clipped, outside_support=outside, mean=head_scores.mean(dim=1))


@zero_gpu(duration=120)  # on ZeroGPU: the whole scoring pass in one GPU call, in the worker process
def score_in_batches(checkpoint_path: str, prompts: list[Prompt], responses: list[str], batch_size: int = 16
                     ) -> Iterator[list[float]]:
    """Load a reward checkpoint and yield the normalised scores of `batch_size` answers at a time, as plain floats.

    A generator of plain values so that it runs where the GPU is: on ZeroGPU each batch's scores cross back from the
    worker process as they come (the caller stores them and reports progress), and closing it ends the call."""
    model = RewardModel.load(checkpoint_path)
    for start in range(0, len(prompts), batch_size):
        rows = slice(start, start + batch_size)
        yield model.score(prompts[rows], responses[rows], batch_size=batch_size).tolist()


@dataclass
class Rewards:
    """The reward for a batch of answers and what the reward knows about its own reliability. (B,) tensors."""

    scores: torch.Tensor
    """What PPO adds at each answer's end."""
    disagreement: torch.Tensor | None = None
    """Standard deviation of the reward heads (None for one head or a Python function)."""
    clipped: torch.Tensor | None = None
    """True where the score was clipped to the labelled answers' range."""
    outside_support: torch.Tensor | None = None
    """True where the answer is outside the labelled answers' support and scored as the worst of them."""
    mean: torch.Tensor | None = None
    """The heads' mean before any penalty or clipping."""
