"""What our TRL-based trainers (reward model, DPO) share: a callback that turns the Trainer's logs into our metrics.

Each logged step becomes a row with namespaced keys (`reward/loss`, `dpo/rewards/margins`), appended to a JSONL file
as it comes (live curves) and handed to a progress callback; a stop event or a non-finite loss ends training after
the current step (transformers would otherwise hide a NaN behind its running mean).
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback

Progress = Callable[[int, int, dict], None]
"""Called as progress(step, total_steps, metrics) after each logged step; metrics as written to metrics.jsonl."""


def namespaced(prefix: str, logs: dict) -> dict:
    """The Trainer's log keys under `prefix/`, the epoch left out (it is a column of its own)."""
    return {f"{prefix}/{key}": value for key, value in logs.items() if key != "epoch"}


class TrainingMonitor(TrainerCallback):
    def __init__(self, prefix: str, log_path: Path | None = None, progress: Progress | None = None,
                 stop: threading.Event | None = None):
        self.prefix, self.log_path, self.progress, self.stop = prefix, log_path, progress, stop
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
        if self.log_path is not None:
            with Path(self.log_path).open("a") as handle:
                handle.write(json.dumps(row) + "\n")
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
