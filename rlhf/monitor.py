"""How a training run records its metrics: `RunLog`, the one writer of a run's step metrics (reward model, PPO, DPO),
and `TrainingMonitor`, the callback that turns a TRL Trainer's logs into our rows.

A row is one logged step: `step` plus namespaced keys (`reward/loss`, `dpo/rewards/margins`, `objective/kl`).
`RunLog.append` adds it to the run's JSONL file as it comes (live curves; the checkpoint's metrics.jsonl is a copy
of that file) and, with `report_to="tensorboard"`, writes each of its numbers as a TensorBoard scalar at the row's
step. `TrainingMonitor` hands each row to the log and to a progress callback; a stop event or a non-finite loss ends
training after the current step (transformers would otherwise hide a NaN behind its running mean).
"""

from __future__ import annotations

import json
import math
import shutil
import threading
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback

from rlhf.config import TENSORBOARD_MISSING, RLHFError

Progress = Callable[[int, int, dict], None]
"""Called as progress(step, total_steps, metrics) after each logged step; metrics as written to metrics.jsonl."""


class RunLog:
    """A run's step metrics: one JSON object per line in `path`, mirrored to TensorBoard when `tensorboard_dir` is set.

    The file starts as `start` (empty for a new run; a resumed run's checkpointed record), so it always holds exactly
    the run's rows so far. The mirror is rebuilt from it on open: a resumed run runs again the steps logged after its
    last checkpoint, and their old events would otherwise show twice.
    """

    def __init__(self, path: Path, start: str = "", tensorboard_dir: Path | None = None):
        self.path = Path(path)
        self.tensorboard_dir = tensorboard_dir
        self._writer = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:  # the config's validate() says so first; this is for direct callers
                raise RLHFError(TENSORBOARD_MISSING) from error
            shutil.rmtree(tensorboard_dir, ignore_errors=True)
            self._writer = SummaryWriter(str(tensorboard_dir))
            for line in start.splitlines():
                if line.strip():
                    self._mirror(json.loads(line))
            self._writer.flush()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(start)

    def append(self, row: dict) -> None:
        """Add one step's row (it must have a `step`); the file and the mirror are flushed, so readers see it now."""
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self._writer is not None:
            self._mirror(row)
            self._writer.flush()

    def _mirror(self, row: dict) -> None:
        for key, value in row.items():
            # Numbers only: `drift/flags` and the sample table are lists; `None` is a metric nothing measured.
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(key, value, global_step=row["step"])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def namespaced(prefix: str, logs: dict) -> dict:
    """The Trainer's log keys under `prefix/`, the epoch left out (it is a column of its own)."""
    return {f"{prefix}/{key}": value for key, value in logs.items() if key != "epoch"}


class TrainingMonitor(TrainerCallback):
    def __init__(self, prefix: str, log: RunLog | None = None, progress: Progress | None = None,
                 stop: threading.Event | None = None):
        self.prefix, self.log, self.progress, self.stop = prefix, log, progress, stop
        self.rows: list[dict] = []
        self.bad_loss_step: int | None = None

    @property
    def last(self) -> dict:
        return self.rows[-1] if self.rows else {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return  # the end-of-training summary (runtime, mean loss) is not a step
        row = {"step": state.global_step, "epoch": logs.get("epoch"), **namespaced(self.prefix, logs)}
        self.rows.append(row)
        if self.log is not None:
            self.log.append(row)
        if not math.isfinite(logs["loss"]):
            self.bad_loss_step = state.global_step
            control.should_training_stop = True
        if self.progress is not None:
            self.progress(state.global_step, state.max_steps, row)

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop is not None and self.stop.is_set():
            control.should_training_stop = True  # the step just taken is kept and saved


def stop_on_ctrl_c() -> threading.Event:
    """For the CLI: the first Ctrl-C asks training to stop after the current step and save a checkpoint; a second
    one interrupts at once."""
    import signal
    import sys

    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to quit now)", file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    return stop
