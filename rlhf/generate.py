"""Sample candidate answers: K per prompt, in batches, with the model's chat template; and streaming chat.

Batches are left-padded (the pad token is not EOS, see rlhf.models) so every row's answer starts at the same column,
and each batch holds whole prompts, so a cancelled run has stored complete prompts only. Everything a stored
candidate needs to be reproduced is recorded with its run: model spec, checkpoint id, sampling parameters and seed.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

import torch
from transformers import (
    GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList,
    TextIteratorStreamer,
)

from rlhf.config import RLHFError, SamplingConfig
from rlhf.models import LoadedModel
from rlhf.store import Store

Progress = Callable[[int, int], None]
"""Called as progress(prompts_done, prompts_total) after each batch."""


def starter_prompts() -> list[str]:
    """The prompt set shipped with the app (varied, written for this project; the opossum question included)."""
    text = resources.files("rlhf.assets").joinpath("starter_prompts.txt").read_text()
    return parse_prompts(text)


def parse_prompts(text: str) -> list[str]:
    """One prompt per line; blank lines and `#` comment lines are skipped. Refuses input with no prompt in it."""
    prompts = [line.strip() for line in (text or "").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise RLHFError("prompts: none given (the input is empty or only whitespace); write one prompt per line.")
    return prompts


def read_prompts_file(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise RLHFError(f"prompts: the file {str(path)!r} does not exist (relative paths start at {Path.cwd()}); "
                        "check the path, or pass - to read prompts from stdin.")
    try:
        return parse_prompts(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise RLHFError(f"prompts: {str(path)!r} is not UTF-8 text ({error.reason}); save it as plain text.") from error


def spread(prompts: list[str], limit: int) -> list[str]:
    """Up to `limit` of the prompts, evenly spread over them (not just the first ones). Pure."""
    if len(prompts) <= limit:
        return list(prompts)
    return [prompts[round(i * (len(prompts) - 1) / (limit - 1))] for i in range(limit)]


def evaluation_sampling(max_new_tokens: int, seed: int = 0) -> SamplingConfig:
    """How a trained policy is put to the test (before/after evaluation, DPO's checks): one answer per prompt at PPO's
    default temperature, no nucleus cut, a fixed seed so two policies answer with the same random draws."""
    return SamplingConfig(num_candidates=1, max_new_tokens=max_new_tokens, temperature=0.7, top_p=1.0, seed=seed)


def chat_messages(prompt: str, system_prompt: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt and system_prompt.strip() else []
    return messages + [{"role": "user", "content": prompt}]


def encode_chat(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a conversation rendered with the model's chat template, ready for the assistant's turn."""
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


MAX_PROMPT_CHARS = 16_000
"""Longest prompt taken, in characters, checked before tokenizing: no small chat model's context holds more (SmolLM2's
8192 tokens hold about 30k characters of English with the answer's room), and tokenizing a visitor's megabyte
would cost the server seconds for a prompt that is refused anyway."""
MAX_CONVERSATION_CHARS = 32_000
"""Longest chat conversation (every message, the system prompt included), in characters, checked before tokenizing."""


def check_prompt_length(prompt: str, number: int | None = None) -> None:
    """Refuse a prompt over `MAX_PROMPT_CHARS` without tokenizing it; the context check follows in `encode_prompts`."""
    if len(prompt) > MAX_PROMPT_CHARS:
        which = f"prompt {number}" if number is not None else "the prompt"
        raise RLHFError(f"prompts: {which} is {len(prompt)} characters, over the limit of {MAX_PROMPT_CHARS}; "
                        "shorten it.")


def encode_prompts(loaded: LoadedModel, prompts: list[str], max_new_tokens: int, system_prompt: str | None = None):
    """Chat-template ids per prompt; refuses empty prompts and prompts that leave no room for the answer."""
    encoded = []
    for number, prompt in enumerate(prompts, start=1):
        if not isinstance(prompt, str) or not prompt.strip():
            raise RLHFError(f"prompts: prompt {number} is empty or only whitespace; remove it or write the prompt.")
        check_prompt_length(prompt, number)
        ids = encode_chat(loaded.tokenizer, chat_messages(prompt.strip(), system_prompt))
        if len(ids) + max_new_tokens > loaded.max_context:
            raise RLHFError(
                f"prompts: prompt {number} ({prompt[:40]!r}...) is {len(ids)} tokens; with {max_new_tokens} new "
                f"tokens that exceeds the model's context of {loaded.max_context}. Shorten it or lower max_new_tokens."
            )
        encoded.append(ids)
    return encoded


class _StopWhenSet(StoppingCriteria):
    """Stops `model.generate` within one token once the event is set (cancel button, closed stream)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def nucleus_filter(logits: torch.Tensor, top_p: float, candidates: int = 256) -> torch.Tensor:
    """Top-p (nucleus) filtering: logits of tokens outside the nucleus become -inf. (B, V) -> (B, V).

    Same rule as transformers' TopPLogitsWarper: keep a token when the probability of the tokens ranked above it is
    below top_p. Sorting the whole vocabulary (49k for SmolLM2) every step costs more than the 135M model's forward
    at batch 8 on CPU, so we look at the `candidates` most likely tokens first and sort everything only for rows whose
    nucleus is not among them (rare: small chat models are confident). The result is exact either way.
    """
    probs = logits.float().softmax(dim=-1)  # (B, V)
    k = min(candidates, probs.shape[-1])
    top_probs, top_ids = probs.topk(k, dim=-1)  # (B, k), sorted descending
    if k < probs.shape[-1] and bool((top_probs.sum(dim=-1) < top_p).any()):
        top_probs, top_ids = probs.sort(dim=-1, descending=True)
    mass_above = top_probs.cumsum(dim=-1) - top_probs
    keep = mass_above < top_p
    keep[:, 0] = True  # the most likely token always stays
    filtered = torch.full_like(logits, float("-inf"))
    return filtered.scatter(-1, top_ids, torch.where(keep, logits.gather(-1, top_ids), float("-inf")))


class TemperatureNucleusWarper(LogitsProcessor):
    """Divide logits by the temperature, then keep the nucleus. One processor, so the order is ours to fix:
    transformers runs custom processors before its own warpers."""

    def __init__(self, temperature: float, top_p: float):
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores / self.temperature
        return nucleus_filter(scores, self.top_p) if self.top_p < 1.0 else scores


def _generation_kwargs(loaded: LoadedModel, sampling: SamplingConfig, max_new_tokens: int, stop=None) -> dict:
    """Arguments for `model.generate` that sample exactly with the recorded temperature and top_p.

    transformers fills every field left unset from the model's own generation_config; `load_model` replaces that
    with a neutral one, so no hidden repetition penalty or top-k applies.
    """
    config = GenerationConfig(
        do_sample=True,
        temperature=1.0,  # both applied by TemperatureNucleusWarper
        top_p=1.0,
        top_k=0,
        max_new_tokens=max_new_tokens,
        pad_token_id=loaded.tokenizer.pad_token_id,
        eos_token_id=loaded.tokenizer.eos_token_id,
    )
    kwargs = {
        "generation_config": config,
        "logits_processor": LogitsProcessorList([TemperatureNucleusWarper(sampling.temperature, sampling.top_p)]),
    }
    if stop is not None:
        kwargs["stopping_criteria"] = StoppingCriteriaList([_StopWhenSet(stop)])
    return kwargs


@dataclass
class Sample:
    text: str
    num_tokens: int
    finish_reason: str
    """`stop` when the model ended its answer with EOS, `length` when it hit max_new_tokens."""


def sample_batch(loaded: LoadedModel, batch_ids: list[list[int]], sampling: SamplingConfig, cancel=None) -> list[Sample]:
    """Sample one answer per row of a left-padded batch; answers are cut at the first EOS."""
    tokenizer = loaded.tokenizer
    padded = tokenizer.pad({"input_ids": batch_ids}, padding=True, return_tensors="pt").to(loaded.device)
    with torch.inference_mode():
        output = loaded.model.generate(**padded, **_generation_kwargs(loaded, sampling, sampling.max_new_tokens, cancel))
    responses = output[:, padded["input_ids"].shape[1] :]  # (B, T) new tokens only
    samples = []
    for row in responses.tolist():
        answer_ids, num_tokens, finish_reason = split_response(row, tokenizer.eos_token_id)
        samples.append(Sample(tokenizer.decode(answer_ids, skip_special_tokens=True).strip(), num_tokens, finish_reason))
    return samples



def sample_answers(loaded: LoadedModel, encoded: list[list[int]], sampling: SamplingConfig,
                   batch_size: int = 16) -> list[Sample]:
    """One answer per encoded prompt, in batches, seeded with `sampling.seed`: two models (or one model's weights at
    two points of a run) sampled this way answer with the same random draws."""
    torch.manual_seed(sampling.seed or 0)
    return [sample for start in range(0, len(encoded), batch_size)
            for sample in sample_batch(loaded, encoded[start : start + batch_size], sampling)]

def split_response(token_ids: list[int], eos_token_id: int) -> tuple[list[int], int, str]:
    """(answer ids before the first EOS, tokens sampled counting that EOS, finish reason).

    Everything after the first EOS is padding from rows that finished earlier in the batch.
    """
    if eos_token_id in token_ids:
        end = token_ids.index(eos_token_id)
        return token_ids[:end], end + 1, "stop"
    return token_ids, len(token_ids), "length"


# how likely a model finds sampled answers: the KL between a policy and its reference, per answer ---------------------
@torch.no_grad()
def sequence_logprob(loaded: LoadedModel, prompt_ids: list[int], answer_ids: list[int],
                     temperatures: tuple[float, ...] = (1.0,)) -> list[float]:
    """Sum of log p(answer token) under the model at each of `temperatures` (the answer's EOS included), from one
    forward pass."""
    ids = torch.tensor([prompt_ids + answer_ids], device=loaded.device)
    logits = loaded.model(input_ids=ids).logits.float()[0, len(prompt_ids) - 1 : -1]
    tokens = ids[0, len(prompt_ids):].unsqueeze(1)
    return [float((logits / t).log_softmax(-1).gather(1, tokens).sum()) for t in temperatures]


def answer_ids(loaded: LoadedModel, text: str, ended: bool) -> list[int]:
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids + [loaded.tokenizer.eos_token_id] if ended else ids


def answer_logprobs(loaded: LoadedModel, encoded: list[list[int]], samples: list[Sample],
                    temperatures: tuple[float, ...]) -> list[list[float] | None]:
    """Per sampled answer (its EOS included when it ended): its log-probability under `loaded` at each of
    `temperatures`; None for an answer with no tokens."""
    out: list[list[float] | None] = []
    for ids, sample in zip(encoded, samples, strict=True):
        continuation = answer_ids(loaded, sample.text, sample.finish_reason == "stop")
        out.append(sequence_logprob(loaded, ids, continuation, temperatures) if continuation else None)
    return out


def mean_kls(policy: list[list[float] | None], reference: list[list[float] | None], width: int) -> list[float]:
    """The KL per answer of the policy that sampled the answers against the reference, one figure for each of the
    `width` temperatures of `answer_logprobs`: the mean over non-empty answers of log p_policy - log p_reference
    (0 when there are none). Pure."""
    pairs = [(p, r) for p, r in zip(policy, reference, strict=True) if p is not None]
    return [sum(p[i] - r[i] for p, r in pairs) / len(pairs) if pairs else 0.0 for i in range(width)]


@dataclass
class GenerationResult:
    run_id: int
    completion_ids: list[int]
    prompts_done: int
    prompts_total: int
    cancelled: bool
    params: dict


def generate_candidates(
    store: Store,
    loaded: LoadedModel,
    prompts: list[str],
    sampling: SamplingConfig,
    source: str = "user",
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    min_candidates: int = 2,
) -> GenerationResult:
    """Sample `sampling.num_candidates` answers per prompt and store them, batch by batch (one answer per prompt is
    allowed with `min_candidates=1`: pairs are then made across runs, as the arena and audit pairs do).

    Everything is validated before the first write: bad input leaves the store untouched. A cancelled run keeps the
    prompts finished so far and is marked `cancelled`.
    """
    sampling.validate(min_candidates)
    if not prompts:
        raise RLHFError("prompts: none given; write one prompt per line.")
    encoded = encode_prompts(loaded, prompts, sampling.max_new_tokens)
    seed = sampling.seed if sampling.seed is not None else random.randrange(2**32)
    params = {**asdict(sampling), "seed": seed, "top_k": 0, "dtype": str(loaded.dtype).removeprefix("torch."),
              "source": source}  # what the run was for: candidates to label, an audit, ... (Store.candidate_generation_runs)
    k = sampling.num_candidates
    prompts_per_batch = max(1, sampling.batch_size // k)
    run_id = store.start_generation_run(loaded.spec, loaded.checkpoint_id, params)
    completion_ids: list[int] = []
    done = 0
    status = "failed"
    try:
        for batch_number, start in enumerate(range(0, len(prompts), prompts_per_batch)):
            if cancel is not None and cancel.is_set():
                break
            chunk = list(range(start, min(start + prompts_per_batch, len(prompts))))
            torch.manual_seed(seed + batch_number)  # per batch: a rerun with the same seed gives the same candidates
            samples = sample_batch(loaded, [encoded[i] for i in chunk for _ in range(k)], sampling, cancel)
            if cancel is not None and cancel.is_set():
                break  # this batch was cut short mid-sampling: store none of it
            rows = [
                (prompts[i].strip(), j, s.text, s.num_tokens, s.finish_reason)
                for (i, j), s in zip(((i, j) for i in chunk for j in range(k)), samples)
            ]
            completion_ids += store.add_completions(run_id, rows, source)
            done += len(chunk)
            if progress is not None:
                progress(done, len(prompts))
        status = "done" if done == len(prompts) else "cancelled"
    finally:
        store.finish_generation_run(run_id, status)
    return GenerationResult(run_id, completion_ids, done, len(prompts), status == "cancelled", params)


def check_conversation_length(messages: list[dict]) -> None:
    """Refuse a conversation over `MAX_CONVERSATION_CHARS` (the history comes from the caller) without tokenizing."""
    size = sum(len(str(m.get("content", ""))) for m in messages)
    if size > MAX_CONVERSATION_CHARS:
        raise RLHFError(f"chat: the conversation is {size} characters, over the limit of {MAX_CONVERSATION_CHARS}; "
                        "clear the chat (or shorten the message) to go on.")


def stream_chat(
    loaded: LoadedModel,
    messages: list[dict],
    sampling: SamplingConfig,
    stop: threading.Event | None = None,
) -> Iterator[str]:
    """Yield the assistant's answer as it grows. Closing the iterator (or setting `stop`) stops sampling."""
    sampling.validate(min_candidates=1)
    if not messages or not str(messages[-1].get("content", "")).strip():
        raise RLHFError("chat: the message is empty; type something to send.")
    check_conversation_length(messages)
    ids = encode_chat(loaded.tokenizer, messages)
    if len(ids) + 1 > loaded.max_context:
        raise RLHFError(
            f"chat: the conversation is {len(ids)} tokens, over the model's context of {loaded.max_context}; "
            "clear the chat to start over."
        )
    max_new_tokens = min(sampling.max_new_tokens, loaded.max_context - len(ids))
    stop = stop or threading.Event()
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
    input_ids = torch.tensor([ids], device=loaded.device)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)

    def run():
        with torch.inference_mode():
            loaded.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                streamer=streamer,
                **_generation_kwargs(loaded, sampling, max_new_tokens, stop),
            )

    worker = threading.Thread(target=run, daemon=True, name="rlhf-chat-sampler")
    worker.start()
    text = ""
    try:
        for piece in streamer:
            text += piece
            yield text
    finally:
        stop.set()  # the consumer went away (stop button, closed tab): end sampling now
        worker.join()

