"""PPO for RLHF, small enough to read in one sitting.

Follows "The N Implementation Details of RLHF with PPO" (Huang et al.) and openai/lm-human-preferences:
- One copy of the base weights: the policy is a LoRA adapter on it, the reference is the same model with the
  adapter disabled (frozen by construction), and a zero-initialised value head reads the policy's last hidden state.
- Per-token KL penalty -kl_coef * (logprob - ref_logprob); the reward model's score is added at the answer's last
  real token (its EOS). Answers are truncated after their first EOS; answers that never end lose
  `missing_eos_penalty`.
- Logits are divided by the sampling temperature in rollouts and in training, for policy and reference alike.
- Left-padded queries with attention mask and position ids; everything after EOS is masked out.
- GAE (gamma 1, lambda 0.95), returns = advantages + values before advantages are whitened; clipped policy and
  value losses; several epochs over freshly shuffled minibatches; fixed or adaptive KL controller; Adam eps 1e-5;
  linear LR decay; dropout off.

Layout: pure math helpers first (each tested against a hand-computed or naive reference), then `PPORun`, whose
`step()` is the training loop body with numbered steps, then `train_ppo` which runs steps and writes checkpoints.

Value index convention: `values[:, t]` is the value of the state just before response token t is sampled, read at
the same position as the logits that predict token t (see `forward`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from rlhf.config import ModelConfig, PPOConfig, RLHFError
from rlhf.distributed import (average_gradients, average_metrics, barrier, broadcast_object, distributed,
                              gather_objects, process_device)
from rlhf.drift import drift_report
from rlhf.models import LoadedModel, dtype_name, load_model, resolve_device, resolve_dtype
from rlhf.reward import (RewardModel, Rewards, audit_gains, prompt_key, read_prompt_baselines, reward_baselines,
                         step_evidence, within_noise_of_peak)

INVALID_LOGPROB = 1.0  # any finite value: masked positions never count
DEFAULT_MAX_NEW_TOKENS = 64
"""PPO's answer limit when the project has no candidates to take it from."""


# ---------------------------------------------------------------------------------------------------------------------
# Pure math
# ---------------------------------------------------------------------------------------------------------------------
def masked_mean(values: torch.Tensor, mask: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Mean over the positions where mask is True."""
    mask = mask.to(values.dtype)
    if axis is None:
        total = mask.sum()
        if total == 0:
            raise ValueError("masked_mean: the mask selects nothing")
        return (values * mask).sum() / total
    return (values * mask).sum(axis) / mask.sum(axis).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Biased variance over the masked positions (lm-human-preferences uses the biased estimate)."""
    mean = masked_mean(values, mask)
    return masked_mean((values - mean) ** 2, mask)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) * rsqrt(var + 1e-8) over the masked positions; without shift_mean the mean is kept."""
    if int(mask.sum()) < 2:
        raise ValueError("masked_whiten: fewer than 2 values to whiten; use a larger batch")
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def first_true_indices(bools: torch.Tensor, dtype=torch.long) -> torch.Tensor:
    """Index of the first True in each row; the row length when there is none. (B, T) -> (B,)"""
    row_len = bools.size(-1)
    positions = torch.arange(row_len, dtype=dtype, device=bools.device)
    return torch.where(bools, positions, torch.full_like(positions, row_len)).min(dim=-1).values


def truncate_response(responses: torch.Tensor, eos_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Replace every token after the first EOS with pad (the EOS itself stays). (B, T) -> (B, T)"""
    eos_at = first_true_indices(responses == eos_token_id).unsqueeze(1)  # (B, 1)
    positions = torch.arange(responses.size(1), device=responses.device).unsqueeze(0)
    return responses.masked_fill(positions > eos_at, pad_token_id)


def response_mask_and_last_index(responses: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of real tokens (up to and including the first EOS) and the index of the last one. (B, T) -> (B, T), (B,)"""
    eos_at = first_true_indices(responses == eos_token_id)  # T when the answer never ended
    last_index = eos_at.clamp(max=responses.size(1) - 1)
    positions = torch.arange(responses.size(1), device=responses.device).unsqueeze(0)
    return positions <= last_index.unsqueeze(1), last_index


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under logits. (B, T, V), (B, T) -> (B, T)

    logit[token] - logsumexp(logits): the same as gathering from log_softmax without materialising a second
    (B, T, V) tensor (150 MB at batch 16 x 48 tokens x SmolLM2's 49k vocabulary).
    """
    return torch.gather(logits, 2, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's distribution, one row at a time to bound memory. (B, T, V) -> (B, T)"""
    rows = []
    for row in logits:
        rows.append(torch.logsumexp(row, dim=-1) - (row.softmax(-1) * row).sum(-1))
    return torch.stack(rows)


def compute_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    last_index: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef * (logprob - ref_logprob) everywhere, plus the score at the last real token.

    Returns (rewards, non_score_reward, kl), all (B, T) and zero after the answer's end.
    """
    kl = (logprobs - ref_logprobs) * mask  # the k1 estimator, per token (Schulman, "Approximating KL divergence")
    non_score_reward = -kl_coef * kl
    rewards = non_score_reward.clone()
    rewards[torch.arange(rewards.size(0)), last_index] += scores
    return rewards, non_score_reward, kl


def leave_one_out_baselines(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each answer's baseline: the mean score of the other answers to its prompt (RLOO's). `scores` (B,) holds groups
    of `group_size` consecutive answers to one prompt. -> (B,)"""
    groups = scores.view(-1, group_size)
    return ((groups.sum(1, keepdim=True) - groups) / (group_size - 1)).reshape(-1)


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the response tokens. (B, T) -> advantages, returns (B, T).

    Positions after the end have reward 0 and value 0, so nothing leaks back across the EOS.
    returns = advantages + values (computed before advantages are whitened).
    """
    rewards, values = rewards * mask, values * mask
    advantages_reversed = []
    last_gae = torch.zeros_like(rewards[:, 0])
    length = rewards.size(1)
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t < length - 1 else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        advantages_reversed.append(last_gae)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    return advantages * mask, (advantages + values) * mask


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate objective (PPO): returns (loss, clip fraction, approx KL), each a scalar."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approxkl = 0.5 * masked_mean(log_ratio**2, mask)
    return loss, clipfrac, approxkl


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange_value: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: 0.5 * max((v - R)^2, (clip(v) - R)^2); returns (loss, clip fraction)."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_loss, clipped_loss), mask)
    clipfrac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
    return loss, clipfrac


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns): 1 = a perfect critic, 0 = no better than a constant."""
    var_returns = masked_var(returns, mask)
    return float(1 - masked_var(returns - values, mask) / var_returns) if var_returns > 0 else float("nan")


class FixedKLController:
    """kl_coef stays as set."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Moves kl_coef toward keeping the KL near a target (Ziegler et al. 2019, lm-human-preferences), never below
    its initial value: a run that has not spent its KL budget yet needs no less penalty than it started with, and a
    coefficient lowered early makes the controller late when the KL does rise (it overshot 2x in short runs)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value, self.floor, self.target, self.horizon = init_kl_coef, init_kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = max(-0.2, min(0.2, current_kl / self.target - 1))
        self.value = max(self.floor, self.value * (1 + proportional_error * n_steps / self.horizon))


def kl_guard_tripped(kls: list[float], limit: float, steps: int) -> bool:
    """True when each of the last `steps` KLs (nats per answer) is above `limit`: not a spike but a policy that left."""
    return len(kls) >= steps and all(kl > limit for kl in kls[-steps:])


def reward_trend(gains_by_step: list[list[float]]) -> dict | None:
    """Did PPO raise the reward it optimised? The mean score gain (each answer's score less its prompt's baseline,
    before the KL penalty) of the first quarter of the run's steps against the last quarter's, with the standard
    error of the difference: "rose" or "fell" when they differ by more than two standard errors, else "flat". A run
    whose own reward stays flat spent its KL on noise: the reward model gave it no direction it could follow, which
    more steps do not fix (more votes, or a reward model that ranks held-out pairs better, can). None under 4 steps.
    Pure."""
    if len(gains_by_step) < 4:
        return None
    quarter = len(gains_by_step) // 4
    # the mean of a window of steps' answers and its standard error, as the auditor's evidence is computed
    first, first_error = step_evidence(gains_by_step[:quarter], window=quarter)
    last, last_error = step_evidence(gains_by_step[-quarter:], window=quarter)
    change, error = last - first, math.hypot(first_error, last_error)
    label = "rose" if change > 2 * error else "fell" if change < -2 * error else "flat"
    return {"label": label, "first": first, "last": last, "change": change, "se": error,
            "steps": len(gains_by_step), "quarter": quarter}


def kl_controller(config: PPOConfig):
    if not config.target_kl:
        return FixedKLController(config.kl_coef)
    return AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)


# ---------------------------------------------------------------------------------------------------------------------
# Models: policy (LoRA on the base) + value head; reference = adapter disabled
# ---------------------------------------------------------------------------------------------------------------------
RewardFn = Callable[[list[str], list[str]], "Rewards"]
"""(prompts, responses) -> Rewards (scores (B,) and what the reward knows about itself). A reward model or a Python
function (`programmatic_reward`)."""


def programmatic_reward(function: Callable[[str, str], float]) -> RewardFn:
    """Wrap `function(prompt, response) -> float` (the CLI's --reward) as a batched reward."""

    def score(prompts: list[str], responses: list[str]) -> torch.Tensor:
        values = []
        for prompt, response in zip(prompts, responses):
            value = function(prompt, response)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RLHFError(f"reward: the function returned {value!r} for {response[:40]!r}; return a finite float.")
            values.append(float(value))
        return Rewards(scores=torch.tensor(values))

    return score


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so a left-padded row sees the same positions as an unpadded one."""
    return (attention_mask.cumsum(1) - 1).clamp(min=0)


@dataclass
class Rollout:
    """One batch of experience; every tensor is (B, ...) and has no gradient."""

    queries: torch.Tensor  # (B, Lq) left-padded
    query_mask: torch.Tensor  # (B, Lq)
    responses: torch.Tensor  # (B, T) truncated after EOS
    mask: torch.Tensor  # (B, T) real response tokens, EOS included
    last_index: torch.Tensor  # (B,)
    logprobs: torch.Tensor  # (B, T)
    ref_logprobs: torch.Tensor  # (B, T)
    values: torch.Tensor  # (B, T)
    scores: torch.Tensor  # (B,) the reward's scores, the missing-EOS penalty included
    baselines: torch.Tensor  # (B,) each prompt's baseline, subtracted from its score before the KL penalty is added
    prompts: list[str]
    texts: list[str]
    ended: torch.Tensor  # (B,) True when the answer ended with EOS
    entropy: torch.Tensor  # (B, T)
    rewards: Rewards  # what the reward said, before the missing-EOS penalty (disagreement, clipping)


@dataclass
class StepResult:
    step: int
    metrics: dict
    samples: list[dict]
    """A few rows of (prompt, response, score, kl): what the policy is learning, reward hacking included."""
    rollout: Rollout | None = None
    """The step's batch of experience, as sampled and scored before its update."""


class PPORun:
    """State of one PPO run (policy, value head, optimizer, KL controller); `step()` does one PPO iteration, steps
    1 to 7 in order."""

    def __init__(self, config: PPOConfig, policy: LoadedModel, reward_fn: RewardFn, prompts: list[str],
                 labelled: dict | None = None, baselines: dict[str, float] | None = None):
        from peft import LoraConfig, get_peft_model

        self.config = config = resolve_lengths(config, None).validate()  # train_ppo resolves them from the project
        if not prompts:
            raise RLHFError("ppo: no prompts to train on; generate some or pass --prompts FILE.")
        self.prompts, self.reward_fn = prompts, reward_fn
        self.labelled = labelled  # the labelled answers' profile (rlhf.drift), the drift detectors' yardstick
        # Each prompt's baseline (`PPOConfig.prompt_baseline`): the reward's mean score of its candidate answers.
        self.baselines = (baselines or {}) if config.prompt_baseline else {}
        self.tokenizer = policy.tokenizer
        self.device = policy.device
        if policy.dtype == torch.float16:
            raise RLHFError("ppo: the policy is loaded in fp16, whose gradients underflow without a loss scaler, which "
                            "this loop does not have; load it in fp32, or bf16 where the hardware has it.")
        self.autocast_dtype = policy.dtype if policy.dtype != torch.float32 else None
        torch.manual_seed(config.seed)
        base = policy.model
        if config.lora:
            # Frozen base (its dtype: bf16 where fast), fp32 adapter; the reference is the base with the adapter off.
            lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                              target_modules="all-linear", task_type="CAUSAL_LM")
            self.model = get_peft_model(base, lora)
            self.reference = None
            if self.autocast_dtype is not None:
                # PEFT casts each LoRA input to the adapter's fp32 first; under autocast the matmul runs in bf16
                # anyway, so that copy of every activation only costs memory (about 90 MB of peak on the 135M model).
                from peft.tuners.tuners_utils import BaseTunerLayer

                for module in self.model.modules():
                    if isinstance(module, BaseTunerLayer):
                        module.cast_input_dtype_enabled = False
        else:
            self.model = base.float()  # full fine-tune (GPUs): fp32 master weights
            self.reference = copy.deepcopy(base).eval().requires_grad_(False)
        self.model.eval()  # dropout off, in rollouts and in training
        hidden = base.config.hidden_size
        self.value_head = torch.nn.Linear(hidden, 1).to(self.device)
        torch.nn.init.zeros_(self.value_head.weight)  # the critic starts knowing nothing, not something random
        torch.nn.init.zeros_(self.value_head.bias)
        params = [p for p in self.model.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.optimizer = torch.optim.Adam(params, lr=config.lr, eps=1e-5)
        updates = config.steps * config.ppo_epochs * (config.batch_size // config.mini_batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda n: max(0.0, 1 - n / updates))
        self.kl = kl_controller(config)
        self.step_count = 0
        self.guard_stop: dict | None = None  # set when the KL guard stopped the run
        self.rank, self.world = distributed()
        if self.world > 1:
            torch.manual_seed(config.seed + 1_000 * self.rank)  # same initial weights, different samples per rank

    # -- model calls ------------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _transformer(self, model):
        """The decoder without its LM head (LoRA layers inside it stay active)."""
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        return inner.model, inner.lm_head

    def forward(self, queries, query_mask, responses, mask, reference: bool = False):
        """Logits (temperature-scaled) and values for the response tokens. -> (B, T, V), (B, T)

        Logit alignment: the logits at position Lq - 1 + t predict response token t.
        """
        inputs = torch.cat([queries, responses], dim=1)
        attention = torch.cat([query_mask, mask.long()], dim=1)
        positions = position_ids_from_mask(attention)
        context = queries.size(1)
        model = self.model
        if reference and self.reference is not None:
            model = self.reference
        with self._autocast():
            decoder, lm_head = self._transformer(model)
            if reference and self.reference is None:
                with self.model.disable_adapter():  # the frozen reference: base weights, adapter off
                    hidden = decoder(input_ids=inputs, attention_mask=attention, position_ids=positions)[0]
            else:
                hidden = decoder(input_ids=inputs, attention_mask=attention, position_ids=positions)[0]
            # (B, T, H). Contiguous: on a strided slice, a bf16 lm_head matmul copied its whole 49k x 576 weight per
            # call on CPU (180 ms vs 9 ms); benchmarks/ppo.py went from 3.90 to 3.36 s a step.
            hidden = hidden[:, context - 1 : -1].contiguous()
            logits = lm_head(hidden).float().div_(self.config.temperature)  # in place: one (B, T, V) copy
        values = None
        if not reference:
            # In fp32, outside autocast: autocast would run this Linear in bf16 whatever its input, and round every
            # value to bf16's 3 significant digits. The LM head stays in autocast: in fp32 it took 2.7x its bf16 time
            # on this CPU (SmolLM2-135M, 16 x 48 tokens) and brought the mean logprob error against an all-fp32
            # forward only from 0.036 to 0.031 nats a token; the bf16 decoder below it dominates.
            with torch.autocast(self.device.type, enabled=False):
                values = self.value_head(hidden.float()).squeeze(-1)
        return logits, values

    def _sample(self, prompts: list[str]):
        from rlhf.generate import chat_messages, encode_chat

        ids = [encode_chat(self.tokenizer, chat_messages(p)) for p in prompts]
        batch = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(self.device)
        from transformers import GenerationConfig

        generation = GenerationConfig(
            do_sample=True, temperature=self.config.temperature, top_k=0, top_p=1.0,  # the full distribution:
            max_new_tokens=self.config.max_new_tokens,  # PPO's logprobs must be those of what was sampled
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
        )
        with torch.no_grad(), self._autocast():
            output = self.model.generate(**batch, generation_config=generation)
        responses = output[:, batch["input_ids"].size(1):]
        return batch["input_ids"], batch["attention_mask"], responses

    def prompts_for_step(self, step: int) -> list[str]:
        """Prompts of a step, each repeated answers_per_prompt times in a row: a fresh seeded shuffle per pass over the
        prompts, so a resumed run sees the same ones."""
        repeats = self.config.answers_per_prompt
        size = self.config.batch_size // repeats
        chosen = []
        index = (step * self.world + self.rank) * size  # each process its own slice of the prompt stream
        while len(chosen) < size:
            epoch, offset = divmod(index, len(self.prompts))
            order = list(range(len(self.prompts)))
            random.Random(self.config.seed * 1_000_003 + epoch).shuffle(order)
            chosen.append(self.prompts[order[offset]])
            index += 1
        return [prompt for prompt in chosen for _ in range(repeats)]

    # -- one PPO iteration --------------------------------------------------------------------------------------------
    def step(self) -> StepResult:
        """One PPO iteration on the next batch of prompts, the whole algorithm in order: sample answers, score them,
        compute logprobs and values, turn scores into per-token rewards with the KL penalty, estimate advantages,
        update the policy and value head over minibatches, then adapt kl_coef. Returns metrics, samples and the
        batch of experience (`StepResult.rollout`)."""
        config, tokenizer = self.config, self.tokenizer
        started = time.perf_counter()
        prompts = self.prompts_for_step(self.step_count)
        with torch.no_grad():
            # 1. generate: the policy's answers, cut after their first EOS
            queries, query_mask, raw_responses = self._sample(prompts)
            responses = truncate_response(raw_responses, tokenizer.eos_token_id, tokenizer.pad_token_id)
            mask, last_index = response_mask_and_last_index(responses, tokenizer.eos_token_id)
            ended = (responses == tokenizer.eos_token_id).any(dim=1)
            texts = [tokenizer.decode(r[m], skip_special_tokens=True).strip() for r, m in zip(responses, mask)]
            # 2. score: the reward reads the answer as cut; one that never ended pays missing_eos_penalty
            said = self.reward_fn(prompts, texts)
            if isinstance(said, torch.Tensor):  # a plain function of (prompts, responses) -> (B,) scores
                said = Rewards(scores=said)
            scores = said.scores.float().to(self.device) - config.missing_eos_penalty * (~ended).float()
            # each prompt's level (prompt_baseline; else 0), against which the step's gain is reported
            baselines = torch.tensor([self.baselines.get(prompt_key(p), 0.0) for p in prompts], device=self.device)
            # ... and what the update subtracts: that level, or the other answers to the same prompt in this step
            subtracted = (leave_one_out_baselines(scores, config.answers_per_prompt)
                          if config.answers_per_prompt > 1 else baselines)
            # 3. logprobs of policy and reference, and values (same temperature as sampling, same forward as
            # training)
            logprobs, ref_logprobs, values, entropy = self._logprobs_and_values(queries, query_mask, responses, mask)
            values = values * mask
            rollout_s = time.perf_counter() - started
            # 4. per-token rewards: -kl_coef * KL at every token, the score added at the answer's last token
            # ... less the baseline: how much better than other answers to the same question
            rewards, non_score_reward, kl = compute_rewards(scores - subtracted, logprobs, ref_logprobs, mask,
                                                            last_index, self.kl.value)
            if config.whiten_rewards:
                rewards = masked_whiten(rewards, mask, shift_mean=False) * mask
            # 5. advantages (GAE over the value head's estimates) and the returns the value head learns
            advantages, returns = compute_gae(rewards, values, mask, config.gamma, config.lam)
            advantages = masked_whiten(advantages, mask) * mask
        # 6. PPO epochs: clipped policy loss and clipped value loss over freshly shuffled minibatches
        stats = {key: [] for key in ("pg_loss", "vf_loss", "pg_clipfrac", "vf_clipfrac", "approxkl")}
        for _ in range(config.ppo_epochs):
            order = torch.randperm(config.batch_size)
            for start in range(0, config.batch_size, config.mini_batch_size):
                mb = order[start : start + config.mini_batch_size]
                logits, vpred = self.forward(queries[mb], query_mask[mb], responses[mb], mask[mb])
                pg_loss, pg_clipfrac, approxkl = policy_loss(logprobs_from_logits(logits, responses[mb]),
                                                             logprobs[mb], advantages[mb], mask[mb], config.cliprange)
                vf_loss, vf_clipfrac = value_loss(vpred, values[mb], returns[mb], mask[mb], config.cliprange_value)
                loss = pg_loss + config.vf_coef * vf_loss
                if not torch.isfinite(loss):
                    raise RLHFError(f"ppo: the loss became {loss.item()} at step {self.step_count + 1}; lower --lr or "
                                    "--max-new-tokens. The last good checkpoint is kept.")
                self.optimizer.zero_grad()
                loss.backward()
                trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
                average_gradients(trainable, self.world)  # several processes: one update from all their batches
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                for key, value in zip(stats, (pg_loss, vf_loss, pg_clipfrac, vf_clipfrac, approxkl)):
                    stats[key].append(float(value.detach()))
        # 7. the KL controller, on the KL averaged across processes so every rank moves kl_coef alike
        sequence_kl = kl.sum(1)  # (B,) nats per answer
        self.kl.update(average_metrics({"kl": float(sequence_kl.mean())}, self.world)["kl"],
                       config.batch_size * self.world)
        self.step_count += 1
        rollout = Rollout(queries, query_mask, responses, mask, last_index, logprobs, ref_logprobs, values, scores,
                          baselines, prompts, texts, ended, entropy, said)
        self.last_prompts, self.last_texts = prompts, texts
        timing = {"time/rollout_s": round(rollout_s, 3), "time/step_s": round(time.perf_counter() - started, 3)}
        metrics = self._step_metrics(rollout, non_score_reward, sequence_kl, returns, stats, timing)
        samples = [{"prompt": p, "response": t, "score": round(float(s), 3), "kl": round(float(k), 3)}
                   for p, t, s, k in list(zip(prompts, texts, scores, sequence_kl))[:4]]
        return StepResult(self.step_count, metrics, samples, rollout)

    def _logprobs_and_values(self, queries, query_mask, responses, mask):
        """Policy logprobs, reference logprobs, values and entropy, (B, T) each, computed minibatch by minibatch.

        Minibatch-sized chunks give the forwards the shapes the PPO epochs use: a GEMM's rounding depends on its
        shape (a bf16 LM head at 64 rows and at 16 differs by one bf16 step in some logits), so computed at the whole
        batch, the first minibatch's ratio would not be exactly 1. It also bounds the (B, T, V) logits in memory.
        """
        chunks = []
        for start in range(0, responses.size(0), self.config.mini_batch_size):
            rows = slice(start, start + self.config.mini_batch_size)
            mb_args = (queries[rows], query_mask[rows], responses[rows], mask[rows])
            logits, values = self.forward(*mb_args)
            logprobs = logprobs_from_logits(logits, responses[rows]).masked_fill(~mask[rows], INVALID_LOGPROB)
            entropy = entropy_from_logits(logits)
            del logits  # (B, T, V) tensors dominate memory: keep one alive at a time
            ref_logits, _ = self.forward(*mb_args, reference=True)
            ref_logprobs = logprobs_from_logits(ref_logits, responses[rows]).masked_fill(~mask[rows], INVALID_LOGPROB)
            del ref_logits
            chunks.append((logprobs, ref_logprobs, values, entropy))
        return tuple(torch.cat(parts) for parts in zip(*chunks))

    def _step_metrics(self, rollout: Rollout, non_score_reward, sequence_kl, returns, stats: dict,
                      timing: dict) -> dict:
        """A step's metrics (averaged across processes) with the drift detectors' readings on its answers."""
        config, mask = self.config, rollout.mask
        metrics = {
            "step": self.step_count,
            "objective/kl": float(sequence_kl.mean()),
            "objective/kl_coef": self.kl.value,
            "objective/kl_target": float(config.target_kl or 0.0),  # the KL budget (0: a fixed kl_coef, no budget)
            "objective/entropy": float((rollout.entropy * mask).sum(1).mean()),
            "objective/non_score_reward": float(non_score_reward.sum(1).mean()),
            "objective/scores": float(rollout.scores.mean()),
            "objective/score_gain": float((rollout.scores - rollout.baselines).mean()),
            "objective/rlhf_reward": float((rollout.scores - rollout.baselines + non_score_reward.sum(1)).mean()),
            "ppo/policy/approxkl_avg": _mean(stats["approxkl"]),
            "ppo/policy/clipfrac_avg": _mean(stats["pg_clipfrac"]),
            "ppo/loss/policy_avg": _mean(stats["pg_loss"]),
            "ppo/loss/value_avg": _mean(stats["vf_loss"]),
            "ppo/val/clipfrac_avg": _mean(stats["vf_clipfrac"]),
            "ppo/val/var_explained": explained_variance(rollout.values, returns, mask),
            "ppo/eos_rate": float(rollout.ended.float().mean()),
            "ppo/response_length": float(mask.sum(1).float().mean()),
            "ppo/lr": self.scheduler.get_last_lr()[0],
            **timing,
        }
        answer_tokens = (mask.sum(1) - rollout.ended.long()).tolist()  # without the EOS, as the labelled profile
        said = rollout.rewards
        drift = drift_report(rollout.prompts, rollout.texts, answer_tokens, self.labelled,
                             kl=metrics["objective/kl"], kl_budget=config.target_kl, disagreement=said.disagreement)
        metrics.update({f"drift/{key}": value for key, value in drift.items() if key != "flags"})
        if said.disagreement is not None:
            metrics["objective/disagreement"] = float(said.disagreement.mean())
        if said.clipped is not None:
            metrics["objective/clipped_share"] = float(said.clipped.float().mean())
        if said.outside_support is not None:
            metrics["objective/outside_support_share"] = float(said.outside_support.float().mean())
        if said.mean is not None:
            metrics["objective/scores_unpenalised"] = float(said.mean.mean())
        metrics = average_metrics(metrics, self.world)
        metrics["drift/flags"] = drift["flags"]
        return metrics

    # -- state for checkpoints ----------------------------------------------------------------------------------------
    def trainable_state(self) -> dict:
        """Copies of every trained tensor (LoRA adapter and value head): a snapshot to roll back to."""
        return {name: p.detach().clone() for name, p in self._trainable_named()}

    def load_trainable(self, state: dict) -> None:
        with torch.no_grad():
            for name, p in self._trainable_named():
                p.copy_(state[name])

    def _trainable_named(self):
        yield from (("model." + n, p) for n, p in self.model.named_parameters() if p.requires_grad)
        yield from (("value_head." + n, p) for n, p in self.value_head.named_parameters())

    # Only tensors, dicts, lists and numbers (the scheduler's lambda is not saved by LambdaLR), so the state loads with
    # `torch.load(weights_only=True)`, which runs no pickled code: a checkpoint may come from someone else's Hub repo.
    def state_dict(self) -> dict:
        """Everything a resumed run needs besides the adapter. Every rank calls it: it gathers each rank's RNG."""
        return {
            "value_head": self.value_head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "kl_coef": self.kl.value,
            "step": self.step_count,
            "rng": gather_objects(self.rng_state(), self.world),  # [rank 0's, rank 1's, ...]
        }

    def load_state_dict(self, state: dict) -> None:
        self.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.kl.value = state["kl_coef"]
        self.step_count = state["step"]
        rng = state.get("rng") or [{"cpu": state["torch_rng"]}]  # checkpoints before the CUDA generator was saved
        if self.rank < len(rng):  # a rank the saved run did not have keeps its seeded generators
            self.set_rng_state(rng[self.rank])

    def rng_state(self) -> dict:
        """The generators this process draws from: the CPU one (minibatch shuffles, CPU sampling) and, on a GPU, the
        one of this process's device (sampling). Only that device's: asking for every GPU's would create a CUDA
        context on each of them in every rank."""
        state = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def set_rng_state(self, state: dict) -> None:
        """Restore `rng_state()`. A state saved on a GPU resumed on a CPU (or the reverse) restores the CPU generator
        only: the samples then differ from the uninterrupted run's, as they would on other hardware anyway."""
        torch.set_rng_state(state["cpu"])
        if self.device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.device)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


# ---------------------------------------------------------------------------------------------------------------------
# A whole run: steps, JSONL metrics, checkpoints, resume
# ---------------------------------------------------------------------------------------------------------------------
def resolve_lengths(config: PPOConfig, labelled_limit: int | None) -> PPOConfig:
    """The config with its `None`s decided from where the labelled answers were cut (`labelled_limit`, None when the
    project has no candidates): max_new_tokens that limit, missing_eos_penalty 0 unless PPO's answers are cut shorter
    than the annotators' were. Pure."""
    max_new_tokens = config.max_new_tokens or labelled_limit or DEFAULT_MAX_NEW_TOKENS
    penalty = config.missing_eos_penalty
    if penalty is None:
        penalty = 1.0 if labelled_limit is not None and max_new_tokens < labelled_limit else 0.0
    return dataclasses.replace(config, max_new_tokens=max_new_tokens, missing_eos_penalty=penalty)


@dataclass
class RewardSource:
    """What PPO optimises, where it came from (for the checkpoint's lineage), and the labelled answers' profile."""

    fn: RewardFn
    source: str
    """A reward checkpoint id, or `function:path.py:name`."""
    labelled: dict | None = None
    audit: Callable[[list[str], list[str]], torch.Tensor] | None = None
    """The reward model's auditor (trained on held-out votes only): its scores choose the run's best step."""
    audit_baselines: dict[str, float] = dataclasses.field(default_factory=dict)
    """The auditor's mean score of each prompt's labelled answers (`audit_gains`)."""
    baselines: dict[str, float] = dataclasses.field(default_factory=dict)
    """The optimised reward's mean score of each prompt's labelled answers (`PPOConfig.prompt_baseline`)."""


def resolve_reward(store, config: PPOConfig, reward_model: str | None = None,
                   reward_function: str | None = None) -> RewardSource:
    """A reward model (the newest by default) scored with the config's caution (`RewardModel.rewards`), or a Python
    function. Either way the reward checkpoint's labelled-answer profile feeds the drift detectors and its auditor
    chooses the best step: for a Python reward, those of the project's newest reward model, when there is one."""
    from rlhf.checkpoints import find_checkpoint, list_checkpoints
    meta = None
    if reward_model or not reward_function:
        meta = find_checkpoint(store, reward_model or "latest", ("reward",))
    elif list_checkpoints(store, ("reward",)):
        meta = find_checkpoint(store, "latest", ("reward",))
    distributed()  # under a launcher: select this process's GPU first, or every rank's reward model lands on cuda:0
    device = process_device("auto")
    auditor = (RewardModel.load(meta["path"], device=device, audit=True).score if meta and meta.get("audit")
               else None)
    labelled = meta.get("labelled_answers") if meta else None
    baselines = read_prompt_baselines(meta["path"]) if auditor else {}
    if reward_function:
        from rlhf.judges import load_function

        return RewardSource(programmatic_reward(load_function(reward_function)), f"function:{reward_function}",
                            labelled, auditor, baselines)
    model = RewardModel.load(meta["path"], device=device)

    def score(prompts: list[str], responses: list[str]) -> Rewards:
        return model.rewards(prompts, responses, config.uncertainty_penalty, config.cautious_reward)

    return RewardSource(score, meta["id"], labelled, auditor, baselines,
                        reward_baselines(meta["path"], config.uncertainty_penalty))


SELECTION_RULE = ("the newest step whose answers the auditor scores within one standard error of the best step's "
                  "(mean over 3 steps' answers, each against its prompt's labelled answers), among the steps within "
                  "the KL guard and free of drift flags")


def train_ppo(
    store,
    config: PPOConfig,
    model_spec: str,
    reward: RewardSource,
    prompts: list[str] | None = None,
    resume: str | None = None,
    on_step: Callable[[StepResult], None] | None = None,
    stop: threading.Event | None = None,
    device: str = "auto",
) -> dict:
    """Run PPO to `config.steps`, logging every step to JSONL and checkpointing every `save_every` steps and at the end.

    `resume` (a PPO checkpoint) continues exactly where it stopped: adapter, value head, optimizer, scheduler, KL
    controller, step and RNG state. Ctrl-C and `stop` save a checkpoint before returning.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from rlhf.checkpoints import (
        TRAINER_STATE_FILE, CheckpointRecord, checkpoints_dir, find_checkpoint, is_checkpoint, list_checkpoints,
        new_checkpoint_id, open_run_log, read_meta, staged_checkpoint,
    )

    previous = None
    if resume:
        previous = find_checkpoint(store, resume, ("ppo",))
        config = dataclasses.replace(PPOConfig(**previous["config"]), steps=config.steps, report_to=config.report_to)
        model_spec = previous["policy_start"]
    config = resolve_lengths(config, store.candidate_max_new_tokens())
    config.validate()
    prompts = prompts if prompts is not None else [p.text for p in store.prompts()]
    parent = read_meta(model_spec) if is_checkpoint(model_spec) else None
    rank, world = distributed()
    device = process_device(device)  # one GPU per process
    # Trained in bf16 where the hardware has it, else fp32: fp16 without a GradScaler underflows (rlhf.models).
    dtype = resolve_dtype("auto", resolve_device(device), training=True)
    policy = load_model(ModelConfig(spec=model_spec, device=device, dtype=dtype_name(dtype)))  # a private copy
    run = PPORun(config, policy, reward.fn, prompts, reward.labelled, reward.baselines)
    reward_source = reward.source
    checkpoint_id = broadcast_object(previous["id"] if previous else new_checkpoint_id("ppo"), world)
    # The run's metrics, one writer (rank 0); a resumed run's log starts from its checkpoint's metrics.jsonl.
    log = open_run_log(store, checkpoint_id, config.report_to, previous and previous["path"]) if rank == 0 else None
    if previous:
        adapter = Path(previous["path"]) / "adapter" / "adapter_model.safetensors"
        set_peft_model_state_dict(run.model, load_file(str(adapter)))
        # Onto the CPU first: a run saved on a GPU resumes on a CPU, and no rank lands on cuda:0; the optimizer moves
        # its state to its parameters' device, and RNG states must be CPU tensors anyway.
        state = torch.load(Path(previous["path"]) / TRAINER_STATE_FILE, map_location="cpu", weights_only=True)
        run.load_state_dict(state)
        if "last_trainable" in state:  # the published adapter is the best step; training continues from the last
            run.load_trainable(state["last_trainable"])
        resumed_selection = state.get("selection", {})
    last_metrics: dict = {}
    # Lineage: the data behind the reward model is the data behind this policy.
    reward_meta = next((m for m in list_checkpoints(store, ("reward",)) if m["id"] == reward_source), None)
    reward_dataset = reward_meta.get("dataset") if reward_meta else None

    def save(final: bool = False) -> dict:
        """Write the checkpoint. At the end of a run the published policy is the best step by held-out evidence
        (`best`), while the resume state keeps the last step's weights so `--resume` continues exactly."""
        state = run.state_dict()  # on every rank: it gathers each rank's RNG state
        if run.rank != 0:  # one writer; the others wait at the barrier below
            barrier(run.world)
            return {"id": checkpoint_id, "steps_done": run.step_count, "rank": run.rank,
                    "path": str(checkpoints_dir(store) / checkpoint_id)}
        with staged_checkpoint(store, "ppo", checkpoint_id, log=log) as staged:
            choice = final_choice() if final else None
            chosen = choice if choice is not None and choice[1] != run.step_count else None
            last_weights = run.trainable_state() if chosen else None
            if chosen:
                run.load_trainable(chosen[2])
            if config.lora:
                run.model.save_pretrained(staged.folder / "adapter")
            else:
                run.model.save_pretrained(staged.folder / "model")
                run.tokenizer.save_pretrained(staged.folder / "model")
            if chosen:
                run.load_trainable(last_weights)
                state["last_trainable"] = {name: tensor.cpu() for name, tensor in last_weights.items()}
            # What the selection and the KL guard have seen so far, so a resumed run chooses as an unbroken one would.
            state["selection"] = {"kls": kls, "audit_gains": audit_gains_by_step, "flagged_steps": flagged_steps,
                                  "last_flags": last_flags, "peak": peak, "score_gains": score_gains_by_step}
            if best is not None:
                state["selection"]["best"] = {"evidence": best[0], "step": best[1],
                                              "weights": {name: tensor.cpu() for name, tensor in best[2].items()}}
            if within_guard is not None:
                state["selection"]["within_guard"] = {
                    "step": within_guard[0], "weights": {name: tensor.cpu() for name, tensor in within_guard[1].items()}}
            torch.save(state, staged.folder / TRAINER_STATE_FILE)
            published = staged.publish(CheckpointRecord(
                id=checkpoint_id, kind="ppo", base_model=parent["base_model"] if parent else model_spec,
                policy_start=model_spec, parent=parent["id"] if parent else None, reward=reward_source,
                dataset=reward_dataset, config=dataclasses.asdict(config), metrics=last_metrics,
                extras={
                    "algorithm": "ppo", "steps_done": run.step_count, "num_prompts": len(prompts),
                    "kl_guard": run.guard_stop,
                    "run_drift": {"flagged_steps": flagged_steps, "last_flags": last_flags},
                    "selected_step": choice[1] if choice is not None else run.step_count,
                    "selected_by": ("last step" if choice is None else "auditor" if choice[0] is not None else
                                    "newest step within the KL guard and free of drift flags"
                                    if choice is best else "newest step within the KL guard (the guard stopped the "
                                    "run)"),
                    "selection_rule": SELECTION_RULE,
                    "reward_trend": reward_trend(score_gains_by_step),
                    "processes": run.world,
                },
            ))
        barrier(run.world)
        return published

    selection = resumed_selection if previous else {}
    kls: list[float] = list(selection.get("kls", []))
    audit_gains_by_step: list[list[float]] = list(selection.get("audit_gains", []))
    score_gains_by_step: list[list[float]] = list(selection.get("score_gains", []))  # the optimised reward's, by step
    flagged_steps: list[int] = list(selection.get("flagged_steps", []))  # steps whose answers a drift detector flagged
    last_flags: list[str] = list(selection.get("last_flags", []))
    peak = tuple(selection["peak"]) if selection.get("peak") else None  # best (evidence, standard error) so far
    best = None  # (evidence, step, trainable weights) of the step to publish, by held-out evidence
    if selection.get("best"):
        best = (selection["best"]["evidence"], selection["best"]["step"],
                {name: tensor.to(run.device) for name, tensor in selection["best"]["weights"].items()})
    guard = config.kl_guard * config.target_kl if config.target_kl else None
    # The newest (step, trainable weights) whose answers were within the KL guard: what a guard stop rolls back to
    # when there is no `best` (select_best off, or every step within the guard drift-flagged).
    within_guard = None
    if selection.get("within_guard"):
        within_guard = (selection["within_guard"]["step"],
                        {name: tensor.to(run.device) for name, tensor in selection["within_guard"]["weights"].items()})

    def final_choice() -> tuple | None:
        """(evidence, step, weights) to publish at the end of the run, or None for the last step's weights."""
        if best is not None:
            return best
        if run.guard_stop and within_guard is not None:
            return (None, *within_guard)
        return None

    try:
        while run.step_count < config.steps:
            if stop is not None and stop.is_set():
                break
            # A step's answers are sampled before its update: what they show is true of the weights before it.
            keep_weights = config.select_best or guard is not None
            sampled_by = (run.step_count, run.trainable_state() if keep_weights else None)
            result = run.step()
            kls.append(result.metrics["objective/kl"])
            score_gains_by_step.append((result.rollout.scores - result.rollout.baselines).tolist())
            evidence = None
            if reward.audit is not None:  # held-out evidence on this step's answers
                scores = reward.audit(run.last_prompts, run.last_texts).tolist()
                audit_gains_by_step.append(audit_gains(scores, run.last_prompts, reward.audit_baselines))
                evidence, error = step_evidence(audit_gains_by_step)
                result.metrics["audit/scores"] = _mean(scores)
                result.metrics["audit/gain"] = _mean(audit_gains_by_step[-1])
                result.metrics["audit/evidence"] = evidence
            last_metrics = result.metrics
            if result.metrics["drift/flags"]:
                flagged_steps.append(run.step_count)
                last_flags[:] = result.metrics["drift/flags"]
            healthy = (guard is None or kls[-1] <= guard) and not result.metrics["drift/flags"]
            if config.select_best and healthy:
                # Without an auditor the newest healthy weights are the ones to keep; with one, SELECTION_RULE.
                keep, peak = (True, peak) if evidence is None else within_noise_of_peak(peak, evidence, error)
                if keep:
                    best = (evidence, *sampled_by)
            if guard is not None and kls[-1] <= guard:
                within_guard = sampled_by
            if guard is not None and kl_guard_tripped(kls, guard, config.kl_guard_steps):
                run.guard_stop = {"step": run.step_count, "kl": kls[-1]}
                choice = final_choice()
                run.guard_stop["rolled_back_to"] = choice[1] if choice is not None else run.step_count
            if run.rank == 0:
                log.append({**result.metrics, "samples": result.samples})
            if on_step is not None:
                on_step(result)
            if run.guard_stop:
                break
            if run.step_count % config.save_every == 0 and run.step_count < config.steps:
                save()
        return save(final=True)
    except KeyboardInterrupt:
        save(final=True)  # Ctrl-C: keep what was learned
        raise
    finally:
        if log is not None:
            log.close()  # the TensorBoard mirror's file, whatever ended the run; a resumed run opens its own
