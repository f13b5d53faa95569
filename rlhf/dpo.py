"""DPO through TRL: tune a policy directly on the project's preference pairs, the offline alternative to PPO.

Direct Preference Optimization (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290) needs no reward model and
no sampling: for each pair it raises the policy's log-probability ratio (against a frozen reference) of the chosen
answer over the rejected one, `loss = -log sigmoid(beta * (ratio_chosen - ratio_rejected))`. TRL's DPOTrainer does
the work; this module picks the settings, logs namespaced metrics and writes a checkpoint.

- LoRA (the default): only the adapter trains; the reference is the same model with the adapter disabled (TRL does
  this when `ref_model` is None and the model is a PeftModel), so one copy of the weights serves both.
- Full fine-tune (`lora=False`): every weight trains against a frozen copy of the starting model.
- Starting from a policy checkpoint continues from its merged weights; they are also the reference.

DPO moves the policy as far as its data pushes it: on many decided pairs it overshoots any KL budget, on few it
barely moves, and its loss says nothing about which. So it is held to PPO's budget by measurement (`BudgetChecks`):
every `check_every` steps the policy answers some of the project's prompts, and those answers give its KL against
the reference (as `evaluate` measures it), the reward model's auditor's verdict (trained on votes DPO never saw) and
the drift detectors' flags. The first check over the budget ends the run. Its weights are not thrown away: the
change they make to the reference is scaled back until the answers' KL fits the budget (`BudgetChecks.scale_back`,
at most `SCALE_TRIES` more checks), the interpolation toward the initialisation of Ramé et al. 2024 (WARP, "LITI"),
which keeps what the last steps learned at a KL the budget allows instead of falling back to an older check. The
weights published are the check's that `SELECTION_RULE` chooses among the healthy ones, scaled-back ones included.

    train_dpo(store, config, model_spec) -> meta of the new checkpoint (kind "dpo"), with its `path`
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
import threading
from dataclasses import asdict

import torch
from transformers import TrainerCallback

from rlhf.checkpoints import CheckpointRecord, is_checkpoint, read_meta, staged_checkpoint
from rlhf.config import DPOTrainConfig, ModelConfig, RLHFError
from rlhf.dataset import training_pairs
from rlhf.distributed import broadcast_object, distributed, one_gpu_per_process
from rlhf.drift import drift_report
from rlhf.generate import answer_logprobs, encode_prompts, evaluation_sampling, mean_kls, sample_answers, spread
from rlhf.models import LoadedModel, load_model, resolve_device, resolve_dtype
from rlhf.monitor import Progress, TrainingMonitor
from rlhf.reward import RewardModel, audit_gains, read_prompt_baselines, step_evidence, within_noise_of_peak
from rlhf.store import Store

DEFAULT_MAX_NEW_TOKENS = 64
"""Answer length of the checks for a project whose pairs came from elsewhere (no candidates sampled here)."""
SCALE_TRIES = 3
"""Most checks spent scaling an over-budget step's weights back into the budget (each is one check's time)."""
SCALE_AIM = 0.9
"""Scaling aims at this share of the budget, so that a try usually fits: the KL of 32 answers is itself noisy."""
SCALE_CLOSE_ENOUGH = 0.8
"""A try whose KL is within the budget and at least this share of it ends the scaling: more tries would gain little."""
SELECTION_RULE = ("the newest check whose answers the auditor scores within one standard error of the best check's "
                  "(each answer against its prompt's labelled answers), among the checks within the KL budget and "
                  "free of drift flags")


class BudgetChecks(TrainerCallback):
    """A check before the first step, every `check_every` steps and after the last: the policy answers the check
    prompts (one answer each, the same seed every time, so checks differ by the weights, not the draws); the answers'
    KL against the reference, the auditor's gain and the drift flags are logged, a check over the KL budget stops the
    run, and a healthy check the selection rule keeps has its weights copied (`best`) for publishing."""

    def __init__(self, config: DPOTrainConfig, policy: LoadedModel, reference: LoadedModel | None,
                 prompts: list[str], max_new_tokens: int, audit: dict | None,
                 monitor: TrainingMonitor, autocast: torch.dtype | None):
        self.config, self.policy, self.reference, self.autocast = config, policy, reference, autocast
        self.monitor = monitor  # its log and progress take the checks' rows too; a NaN loss it saw ends the checks
        self.prompts = prompts
        self.sampling = evaluation_sampling(max_new_tokens, seed=config.seed)
        self.encoded = encode_prompts(policy, prompts, max_new_tokens)
        self.auditor = self.baselines = self.labelled = None
        if audit is not None:  # the reward model whose auditor's votes DPO left out
            self.auditor = RewardModel.load(audit["path"], device=policy.device, audit=True)
            self.baselines = read_prompt_baselines(audit["path"])
            self.labelled = read_meta(audit["path"]).get("labelled_answers")
        self.checks: list[dict] = []
        self.peak: tuple[float, float] | None = None
        self.best: tuple[int, float, dict] | None = None  # (step, scale, trainable weights) to publish
        self.budget_stop: dict | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.check(0, state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        if (state.global_step % self.config.check_every == 0 and self.monitor.bad_loss_step is None
                and self.check(state.global_step, state.max_steps)["over_budget"]):
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self.checks[-1]["step"] != state.global_step and self.monitor.bad_loss_step is None:
            self.check(state.global_step, state.max_steps)

    def _trainable(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in self.policy.model.named_parameters() if p.requires_grad}

    def _origin(self) -> dict[str, torch.Tensor]:
        """Where the trainable weights stand for "no change": LoRA's B matrices at 0 (the adapter's update is
        B @ A, so scaling B alone scales the update exactly), every weight of a full fine-tune at the reference's."""
        if self.reference is None:
            return {name: torch.zeros_like(p) for name, p in self.policy.model.named_parameters()
                    if p.requires_grad and "lora_B" in name}
        reference = dict(self.reference.model.named_parameters())
        return {name: reference[name].detach() for name, p in self.policy.model.named_parameters()  # frozen: no copy
                if p.requires_grad and name in reference}

    def restore(self, weights: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, p in self.policy.model.named_parameters():
                if name in weights:
                    p.copy_(weights[name])

    def _reference_scope(self):
        """The reference: a frozen copy (full fine-tune) or the policy with its LoRA adapter switched off."""
        return contextlib.nullcontext(self.reference) if self.reference is not None else _adapter_off(self.policy)

    def check(self, step: int, total_steps: int, scale: float | None = None) -> dict:
        """Measure the current weights (`scale`: they are an over-budget step's, scaled back) and keep them when
        the selection rule says so; the first check over the budget is scaled back into it (`scale_back`)."""
        model = self.policy.model
        training = model.training
        model.eval()
        devices = [self.policy.device] if self.policy.device.type == "cuda" else []
        autocast = (torch.autocast(self.policy.device.type, dtype=self.autocast) if self.autocast
                    else contextlib.nullcontext())
        with torch.random.fork_rng(devices=devices), autocast:  # the trainer's own random draws stay as they were
            samples = sample_answers(self.policy, self.encoded, self.sampling)
            temperatures = (1.0, self.sampling.temperature)
            policy_logprobs = answer_logprobs(self.policy, self.encoded, samples, temperatures)
            with self._reference_scope() as reference:
                reference_logprobs = answer_logprobs(reference, self.encoded, samples, temperatures)
        model.train(training)
        kl, kl_sampled = mean_kls(policy_logprobs, reference_logprobs, len(temperatures))
        texts = [sample.text for sample in samples]
        tokens = [sample.num_tokens - (sample.finish_reason == "stop") for sample in samples]
        budget = self.config.target_kl
        flags = drift_report(self.prompts, texts, tokens, self.labelled, kl=kl_sampled, kl_budget=budget)["flags"]
        evidence = error = None
        if self.auditor is not None:
            gains = audit_gains(self.auditor.score(self.prompts, texts).tolist(), self.prompts, self.baselines)
            evidence, error = step_evidence([gains], window=1)
        # Data parallel (accelerate launch): every process checks the same answers, and all of them act on rank 0's
        # figures, so they stop at the same step and keep the same step's weights.
        kl, kl_sampled, tokens, flags, evidence, error = broadcast_object(
            (kl, kl_sampled, tokens, flags, evidence, error), distributed()[1])
        row = {"step": step, "check/kl": kl_sampled, "check/kl_temperature_1": kl, "check/length": _mean(tokens),
               "check/kl_budget": budget, "drift/flags": flags, "over_budget": kl_sampled > budget}
        if scale is not None:
            row["check/scale"] = scale
        scale = 1.0 if scale is None else scale  # an unscaled check holds the step's own weights
        if evidence is not None:
            row.update({"audit/evidence": evidence, "audit/error": error})
        if not row["over_budget"] and not flags:
            # Without an auditor the newest healthy weights are the ones to keep; with one, SELECTION_RULE.
            keep, self.peak = (True, self.peak) if evidence is None else within_noise_of_peak(self.peak, evidence,
                                                                                                error)
            if keep:
                self.best = (step, scale, self._trainable())
        row["kept"] = self.best is not None and self.best[:2] == (step, scale)
        self.checks.append(row)
        if self.monitor.log is not None:
            self.monitor.log.append(row)
        if self.monitor.progress is not None:
            self.monitor.progress(step, total_steps, row)
        if row["over_budget"] and "check/scale" not in row and self.budget_stop is None:
            self.budget_stop = {"step": step, "kl": kl_sampled}
            self.scale_back(step, total_steps, kl_sampled)
            self.budget_stop["published_step"] = self.best[0] if self.best else None
            self.budget_stop["published_scale"] = self.best[1] if self.best else None
        return row

    def scale_back(self, step: int, total_steps: int, kl: float) -> None:
        """Scale the over-budget weights' change back toward the reference until a check fits the budget (at most
        `SCALE_TRIES` checks, `next_scale` choosing each), keeping those the selection rule keeps; then put the
        step's own weights back, so that the trainer ends where it stopped."""
        trained, origin = self._trainable(), self._origin()  # the origin only when needed: no work at start-up
        tries = [(0.0, 0.0), (1.0, kl)]
        for _ in range(SCALE_TRIES):
            scale = next_scale(tries, self.config.target_kl)
            self.restore(scaled_change(trained, origin, scale))
            row = self.check(step, total_steps, scale=scale)
            tries.append((scale, row["check/kl"]))
            if SCALE_CLOSE_ENOUGH * self.config.target_kl <= row["check/kl"] <= self.config.target_kl:
                break
        self.restore(trained)


def scaled_change(weights: dict[str, torch.Tensor], origin: dict[str, torch.Tensor], scale: float
                  ) -> dict[str, torch.Tensor]:
    """`weights` moved back toward `origin`: origin + scale x (weights - origin) where an origin is given, the weight
    as it is elsewhere (LoRA's A matrices: with B scaled, the adapter's update B @ A scales exactly). Pure."""
    return {name: origin[name] + scale * (w - origin[name]) if name in origin else w for name, w in weights.items()}


def next_scale(tries: list[tuple[float, float]], budget: float) -> float:
    """The next scale to try for an over-budget step's change, from the (scale, KL) tries so far: between the largest
    scale that fit the budget and the smallest that did not, where sqrt(KL) reaches `SCALE_AIM` x budget on the line
    through them (KL grows about as the square of a small change to the weights). Pure."""
    fit = max((t for t in tries if t[1] <= budget), key=lambda t: t[0])
    over = min((t for t in tries if t[1] > budget), key=lambda t: t[0])
    aim = math.sqrt(SCALE_AIM * budget)
    low, high = math.sqrt(max(0.0, fit[1])), math.sqrt(over[1])  # a KL estimate can dip below 0
    share = min(1.0, max(0.0, (aim - low) / (high - low))) if high > low else 0.5
    return fit[0] + share * (over[0] - fit[0])


def check_line(row: dict) -> str:
    """A check in words, for the CLI and the Train tab. Pure."""
    scaled = f", its change scaled to {row['check/scale']:.2f}" if row.get("check/scale") is not None else ""
    text = (f"check at step {row['step']}{scaled}: KL {row['check/kl']:.1f} nats per answer (budget "
            f"{row['check/kl_budget']:g}), {row['check/length']:.0f} tokens")
    if row.get("audit/evidence") is not None:
        text += f", auditor gain {row['audit/evidence']:+.2f} ± {row['audit/error']:.2f}"
    if row["over_budget"]:
        return text + ("; still over the budget" if scaled else "; over the budget: training stops here, and its "
                       "change is scaled back into the budget")
    if row["drift/flags"]:
        return text + "; drift: " + "; ".join(row["drift/flags"])
    return text + ("; kept for publishing" if row["kept"] else "; not kept (the auditor saw better before)")


def selection(checks: BudgetChecks | None, last_step: int) -> dict:
    """What the checkpoint's meta says about the checks: which step's weights it holds, chosen how, and why it ended."""
    if checks is None:
        return {"selected_step": last_step, "selected_scale": 1.0, "selected_by": "last step (no KL budget)",
                "selection_rule": None,
                "kl_budget_stop": None, "checks": []}
    chosen, scale = checks.best[:2] if checks.best is not None else (last_step, 1.0)
    by = ("auditor" if checks.auditor is not None else "newest check within the KL budget and free of drift flags"
          ) if checks.best is not None else "last step (no check was within the KL budget and free of drift flags)"
    return {"selected_step": chosen, "selected_scale": scale, "selected_by": by, "selection_rule": SELECTION_RULE,
            "kl_budget_stop": checks.budget_stop,
            "checks": [{key: row[key] for key in ("step", "check/scale", "check/kl", "audit/evidence", "drift/flags",
                                                  "kept")
                        if key in row} for row in checks.checks]}


def published_words(meta: dict) -> str:
    """Which weights a DPO checkpoint holds, in words: "step 40", or "step 60, its change scaled to 0.71". Pure."""
    scale = meta.get("selected_scale", 1.0)
    return f"step {meta['selected_step']}" + (f", its change scaled to {scale:.2f}" if scale != 1.0 else "")


@contextlib.contextmanager
def _adapter_off(policy: LoadedModel):
    with policy.model.disable_adapter():
        yield policy


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def train_dpo(
    store: Store,
    config: DPOTrainConfig,
    model_spec: str,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    held_out: dict | None = None,
) -> dict:
    """Train a DPO policy on the project's decided pairs and save it as a checkpoint; returns its meta with `path`.

    `model_spec` is a base model spec or a policy checkpoint folder to continue from. `held_out`
    ({"reward_model", "pair_ids"}) names pairs to leave out: those a reward model's auditor learned from, so its
    verdict on this policy stays held-out evidence. Setting `stop` ends training after the current step and still
    saves. A non-finite loss raises RLHFError and leaves no checkpoint behind.
    """
    from peft import LoraConfig
    from transformers import PrinterCallback, ProgressCallback, set_seed
    from trl import DPOConfig, DPOTrainer

    config.validate()
    data = training_pairs(store, config.min_pairs)
    if held_out:
        excluded = set(held_out["pair_ids"])
        data.dataset = data.dataset.filter(lambda row: row["pair_id"] not in excluded)
        if len(data.dataset) < config.min_pairs:
            raise RLHFError(f"dpo: only {len(data.dataset)} pairs are left once the {len(excluded)} pairs the "
                            f"auditor of {held_out['reward_model']} learned from are held out; label more pairs.")

    # 1. the starting policy: a base model, or a policy checkpoint's merged weights (then it is the parent)
    parent = read_meta(model_spec) if is_checkpoint(model_spec) else None
    base_model = parent["base_model"] if parent else model_spec
    device = resolve_device("auto")
    # Weights stay fp32 for the optimizer; bf16 runs as autocast where it is native (GPUs, CPUs with AVX512-BF16 or
    # AMX: ~4x the fp32 matmul speed), fp32 elsewhere. Gradient checkpointing (TRL's default) is on for GPUs, where it
    # saves memory, and off on CPU, where it only costs time (recomputed activations) and memory is not the limit.
    compute_dtype = resolve_dtype("auto", device)
    set_seed(config.seed)  # LoRA's A matrices are drawn at random
    loaded = load_model(ModelConfig(spec=model_spec, device=device.type, dtype="fp32"))
    model, tokenizer = loaded.model, loaded.tokenizer

    # 2. policy and reference
    peft_config = None
    ref_model = None
    if config.lora:
        peft_config = LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    else:
        # TRL would reload the reference from the model's `name_or_path`, which for a merged LoRA checkpoint names
        # its base, not the weights we start from: hand it a frozen copy instead.
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)

    with staged_checkpoint(store, "dpo", report_to=config.report_to, every_process=True) as staged:
        monitor = TrainingMonitor("dpo", staged.log, progress, stop)
        with tempfile.TemporaryDirectory(prefix="rlhf-dpo-") as scratch:
            args = one_gpu_per_process(DPOConfig(  # one GPU, as PPO; several: accelerate launch
                output_dir=scratch, save_strategy="no", report_to=[], seed=config.seed,
                num_train_epochs=config.epochs, learning_rate=config.lr, per_device_train_batch_size=config.batch_size,
                beta=config.beta, max_length=config.max_length,
                use_cpu=device.type != "cuda", bf16=compute_dtype == torch.bfloat16,
                fp16=compute_dtype == torch.float16, activation_checkpointing=device.type == "cuda",
                logging_steps=1,
                logging_nan_inf_filter=False,  # transformers would hide a NaN loss behind the running mean
            ))
            # 3. train: TRL tokenizes prompt/chosen/rejected with the chat template and drops our extra columns
            trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=data.dataset,
                                 processing_class=tokenizer, peft_config=peft_config, callbacks=[monitor])
            # The Trainer prints every log dict to stdout (a tqdm bar or a plain print); `progress` reports instead.
            trainer.remove_callback(PrinterCallback)
            trainer.remove_callback(ProgressCallback)
            n_pairs = len(trainer.train_dataset)
            if n_pairs == 0:
                raise RLHFError(f"dpo: every pair's prompt is at least max_length={config.max_length} tokens; "
                                "raise --max-length.")
            checks = None
            if config.target_kl:  # 4. the KL budget, measured on the policy's own answers
                policy = LoadedModel(model=trainer.model, tokenizer=tokenizer, spec=model_spec, device=device,
                                     dtype=torch.float32)
                reference = None if config.lora else LoadedModel(
                    model=trainer.ref_model, tokenizer=tokenizer, spec=model_spec, device=device, dtype=torch.float32)
                checks = BudgetChecks(
                    config, policy, reference, spread([p.text for p in store.prompts()], config.check_prompts),
                    store.candidate_max_new_tokens() or DEFAULT_MAX_NEW_TOKENS, held_out, monitor,
                    compute_dtype if compute_dtype != torch.float32 else None)
                trainer.add_callback(checks)
            seconds = trainer.train().metrics["train_runtime"]
            if checks is not None and checks.best is not None:
                checks.restore(checks.best[2])  # the weights of the check the evidence chose
        if monitor.bad_loss_step is not None:
            raise RLHFError(
                f"dpo: the loss became {monitor.last.get('dpo/loss')} at step {monitor.bad_loss_step}; nothing was "
                f"saved. Lower the learning rate (now {config.lr}) or beta (now {config.beta})."
            )

        # 5. save: the adapter alone where the base it applies to is a model spec; otherwise the full weights
        policy = trainer.model
        if config.lora and parent is None:
            weights_dir = staged.folder / "adapter"
        else:
            # A LoRA trained on a parent checkpoint's merged weights would need the whole chain to load: merge it.
            policy = policy.merge_and_unload() if config.lora else policy
            weights_dir = staged.folder / "model"
        policy.save_pretrained(weights_dir)
        tokenizer.save_pretrained(weights_dir)

        last = monitor.last
        return staged.publish(CheckpointRecord(
            id=staged.id,
            kind="dpo",
            base_model=base_model,
            parent=parent["id"] if parent else None,
            policy_start=model_spec,
            config=asdict(config),
            metrics={
                "dpo/loss": last.get("dpo/loss"),
                "dpo/rewards/margins": last.get("dpo/rewards/margins"),
                "dpo/rewards/accuracies": last.get("dpo/rewards/accuracies"),
                "n_pairs": n_pairs,
                "steps": trainer.state.global_step,
                "stopped_early": trainer.state.global_step < trainer.state.max_steps,
                "seconds": seconds,
            },
            dataset={"fingerprint": data.fingerprint, "export_dir": str(data.export_dir), "rows": len(data.dataset),
                     "held_out_for": held_out["reward_model"] if held_out else None},
            # Which mode the figures came from: speed and results differ between bf16 autocast and fp32.
            extras={"algorithm": "dpo", "device": device.type,
                    "precision": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(compute_dtype, "fp32"),
                    **(selection(checks, trainer.state.global_step))},
        ))
