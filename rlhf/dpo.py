"""DPO through TRL: tune a policy directly on the project's preference pairs, the offline alternative to PPO.

Direct Preference Optimization (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290) needs no reward model and
no sampling: for each pair it raises the policy's log-probability ratio (against a frozen reference) of the chosen
answer over the rejected one, `loss = -log sigmoid(beta * (ratio_chosen - ratio_rejected))`. TRL's DPOTrainer does
the work; this module picks the settings, logs namespaced metrics and writes a checkpoint.

- LoRA (the default): only the adapter trains; the reference is the same model with the adapter disabled (TRL does
  this when `ref_model` is None and the model is a PeftModel), so one copy of the weights serves both.
- Full fine-tune (`lora=False`): every weight trains against a frozen copy of the starting model.
- Starting from a policy checkpoint continues from its merged weights; they are also the reference.

    train_dpo(store, config, model_spec) -> meta of the new checkpoint (kind "dpo"), with its `path`
"""

from __future__ import annotations

import copy
import tempfile
import threading
from dataclasses import asdict

import torch

from rlhf.checkpoints import CheckpointRecord, is_checkpoint, read_meta, staged_checkpoint
from rlhf.config import DPOTrainConfig, ModelConfig, RLHFError
from rlhf.dataset import training_pairs
from rlhf.distributed import one_gpu_per_process
from rlhf.models import load_model, resolve_device, resolve_dtype
from rlhf.monitor import Progress, TrainingMonitor
from rlhf.store import Store




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

    with staged_checkpoint(store, "dpo", report_to=config.report_to) as staged:
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
            seconds = trainer.train().metrics["train_runtime"]
        if monitor.bad_loss_step is not None:
            raise RLHFError(
                f"dpo: the loss became {monitor.last.get('dpo/loss')} at step {monitor.bad_loss_step}; nothing was "
                f"saved. Lower the learning rate (now {config.lr}) or beta (now {config.beta})."
            )

        # 4. save: the adapter alone where the base it applies to is a model spec; otherwise the full weights
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
                    "precision": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(compute_dtype, "fp32")},
        ))
