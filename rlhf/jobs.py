"""Long training runs in a background thread, one at a time, watched by the UI.

A job outlives the browser tab that started it: the runner is one per process, so closing the tab leaves the run
going and reopening the page shows it. Metrics and sample tables arrive through the trainers' progress callbacks;
`stop()` sets the event the trainers check between steps, and they save a checkpoint before returning.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from rlhf.config import RLHFError


class Busy(RLHFError):
    """Another heavy job is running."""


@dataclass
class Job:
    kind: str
    """`reward`, `ppo` or `dpo`."""
    project: str
    total_steps: int
    command: str
    """The CLI command that does the same."""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    steps_done: int = 0
    status: str = "running"
    """running, done, stopped or failed."""
    error: str | None = None
    metrics: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    result: dict | None = None
    evaluation: dict | None = None
    """Tuned vs reference after a policy run (rlhf.evaluate), when the project has a reward model."""
    phase: str = "training"
    stop_event: threading.Event = field(default_factory=threading.Event)

    def record(self, step: int, total: int, metrics: dict, samples: list[dict] | None = None) -> None:
        """Progress callback for the trainers (called from the training thread)."""
        self.steps_done, self.total_steps = step, max(total, 1)
        self.metrics.append({"step": step, **{k: v for k, v in metrics.items() if k != "samples"}})
        if samples:
            self.samples = [{"step": step, **row} for row in samples] + self.samples[:40]

    def elapsed(self) -> float:
        return (self.finished_at or time.time()) - self.started_at

    def eta(self) -> float | None:
        """Seconds left, from the mean time per step so far."""
        if self.status != "running" or self.steps_done == 0:
            return None
        return self.elapsed() / self.steps_done * (self.total_steps - self.steps_done)

    def summary(self) -> str:
        eta = self.eta()
        left = f", about {_clock(eta)} left" if eta is not None else ""
        phase = f" ({self.phase})" if self.status == "running" and self.phase != "training" else ""
        return (f"{self.kind} on project {self.project!r}: {self.status}{phase}, step {self.steps_done}/"
                f"{self.total_steps}, {_clock(self.elapsed())} elapsed{left}")


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


class JobRunner:
    """Runs at most one job at a time; a second start is refused with what is running and how long it has left."""

    def __init__(self):
        self._lock = threading.Lock()
        self.job: Job | None = None

    def busy(self) -> Job | None:
        job = self.job
        return job if job is not None and job.status == "running" else None

    def check_idle(self) -> None:
        job = self.busy()
        if job is not None:
            raise Busy(f"Busy: {job.summary()}. Wait for it, or stop it in the Train tab.")

    def start(self, job: Job, work: Callable[[Job], dict]) -> Job:
        """Run `work(job)` in a thread; it returns the checkpoint meta."""
        with self._lock:
            self.check_idle()
            self.job = job

        def run():
            try:
                job.result = work(job)
                job.status = "stopped" if job.stop_event.is_set() else "done"
            except RLHFError as error:
                job.status, job.error = "failed", str(error)
            except Exception as error:  # the thread must record every failure, or the UI waits forever
                job.status, job.error = "failed", f"{type(error).__name__}: {error}"
                traceback.print_exc()
            finally:
                job.finished_at = time.time()

        threading.Thread(target=run, daemon=True, name=f"rlhf-{job.kind}").start()
        return job

    @contextlib.contextmanager
    def hold(self, job: Job):
        """Run heavy work in the caller's thread (a generation batch) as the current job: others are refused."""
        with self._lock:
            self.check_idle()
            self.job = job
        try:
            yield job
            job.status = "stopped" if job.stop_event.is_set() else "done"
        except BaseException as error:
            job.status, job.error = "failed", str(error)
            raise
        finally:
            job.finished_at = time.time()

    def stop(self) -> Job | None:
        job = self.busy()
        if job is not None:
            job.stop_event.set()
        return job


runner = JobRunner()


# ---------------------------------------------------------------------------------------------------------------------
# Training jobs: the same library calls as the CLI, reporting into a Job
# ---------------------------------------------------------------------------------------------------------------------
def delete_run(store, reference: str) -> None:
    """Delete a run of the project (`rlhf.checkpoints.delete_checkpoint`), refused while a job is going in it."""
    from rlhf.checkpoints import delete_checkpoint

    job = runner.busy()
    if job is not None and job.project == store.name:
        raise RLHFError(f"delete: a run is going in project {store.name!r}; stop it first.")
    delete_checkpoint(store, reference)


def command_line(kind: str, project: str, model_spec: str, config, reward_model: str | None = None) -> str:
    """The `python -m rlhf ...` command that runs the same training as the UI would."""
    import shlex

    from rlhf.config import to_flags

    command = {"reward": "train-reward", "ppo": "ppo", "dpo": "dpo"}[kind]
    parts = ["python", "-m", "rlhf", command, "--project", project, "--model", model_spec]
    if kind == "ppo" and reward_model and reward_model != "latest":
        parts += ["--reward-model", reward_model]
    return " ".join(shlex.quote(p) for p in parts + to_flags(config))


def start_training(kind: str, project: str, model_spec: str, config, reward_model: str | None = None) -> Job:
    """Validate, then run reward-model, PPO or DPO training as the background job."""
    from rlhf.models import on_zero_gpu
    from rlhf.store import Store

    if on_zero_gpu():
        raise RLHFError(
            "Training cannot run on ZeroGPU hardware: a training run is a background job that holds the GPU for "
            "minutes, and ZeroGPU lends a GPU only for the length of one call. Generation, labelling and chat work "
            "here; to train, switch the Space to a dedicated GPU (Settings > Hardware, e.g. Nvidia T4 small or L4) or "
            "to CPU, or run `python -m rlhf` on your own machine and pull the result."
        )
    config.validate()
    store = Store.open(project)
    runner.check_idle()
    total = getattr(config, "steps", 0) or 1
    job = Job(kind=kind, project=store.name, total_steps=total,
              command=command_line(kind, store.name, model_spec, config, reward_model))

    def progress(step: int, total_steps: int, metrics: dict) -> None:
        job.record(step, total_steps, metrics)

    def work(job: Job) -> dict:
        from rlhf import pipeline

        def phase(name: str) -> None:
            job.phase = name

        if kind == "reward":
            return pipeline.train_reward(store, config, model_spec, progress=progress, stop=job.stop_event, phase=phase)
        meta = pipeline.train_policy(
            store, kind, config, model_spec, reward_model=None if reward_model == "latest" else reward_model,
            on_step=lambda result: job.record(result.step, config.steps, result.metrics, result.samples),
            progress=progress, stop=job.stop_event, phase=phase,
        )
        job.evaluation = meta.get("evaluation")
        return meta

    if kind == "ppo":  # fail now, not in the thread, when there is no reward model to train against
        from rlhf.checkpoints import find_checkpoint

        find_checkpoint(store, reward_model or "latest", ("reward",))
    return runner.start(job, work)
