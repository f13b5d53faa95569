"""Train tab: reward model, PPO and DPO runs started from the browser and watched live.

Widgets fill the same config dataclasses as the CLI, and the "CLI equivalent" box shows the command that runs the
same training. The run itself is a background job (rlhf.jobs): a timer polls it for curves, samples and progress.
"""

from __future__ import annotations

import dataclasses
import html
from functools import partial

import gradio as gr
import pandas as pd

from rlhf.access import require_owner
from rlhf.checkpoints import list_checkpoints
from rlhf.config import DPOTrainConfig, RewardTrainConfig, RLHFError
from rlhf.evaluate import report_text
from rlhf.jobs import command_line, runner, start_training
from rlhf.models import zero_gpu
from rlhf.pipeline import hardware_defaults
from rlhf.store import Store
from rlhf.ui.common import (MODEL_QUEUE, as_text, checkpoint_picker, model_choices, refresh_models, user_errors,
                             username)

PLOTS = {
    "ppo": [["objective/scores", "objective/rlhf_reward"], ["objective/kl"],
            ["ppo/loss/policy_avg", "ppo/loss/value_avg", "ppo/policy/clipfrac_avg", "ppo/eos_rate"]],
    "reward": [["reward/loss"], ["reward/accuracy"], ["reward/margin"]],
    "dpo": [["dpo/loss"], ["check/kl"], ["dpo/rewards/accuracies", "dpo/rewards/margins", "audit/evidence"]],
}
PLOT_TITLES = {"ppo": ["Reward (score, score - KL penalty)", "KL to the reference (nats per answer)",
                       "Losses, clip fraction, EOS rate"],
               "reward": ["Loss", "Accuracy (chosen scored above rejected)", "Margin"],
               "dpo": ["Loss", "KL to the reference at the checks (nats per answer)",
                       "Reward accuracy and margin; the auditor's gain at the checks"]}
SAMPLE_COLUMNS = ["step", "prompt", "response", "score", "kl"]
COMPARE_COLUMNS = ["prompt", "reference", "tuned"]
RUN_COLUMNS = ["id", "kind", "created_at", "steps", "key metric"]


def make_config(kind, *settings, **named):
    """The form's settings as the config of `kind`; a value that is not a number is an RLHFError that says so (the
    form's events are public endpoints: anything may arrive)."""
    try:
        return _form_config(kind, *settings, **named)
    except (TypeError, ValueError) as error:
        raise RLHFError(f"train: a setting is not a number ({error}); enter numbers in the training settings."
                        ) from None


def _form_config(kind, rm_epochs, rm_lr, rm_lora, rm_eval, rm_ties, rm_pooling, steps, batch, mini, epochs, lr, tokens,
                 kl_coef, target_kl, dpo_epochs, dpo_lr, dpo_beta, dpo_lora, dpo_target_kl):
    defaults = hardware_defaults()
    if kind == "reward":
        return RewardTrainConfig(epochs=float(rm_epochs), lr=float(rm_lr), lora=bool(rm_lora),
                                 eval_fraction=float(rm_eval), tie_weight=float(rm_ties), pooling=str(rm_pooling),
                                 batch_size=defaults["reward"].batch_size)
    if kind == "dpo":
        return DPOTrainConfig(epochs=float(dpo_epochs), lr=float(dpo_lr), beta=float(dpo_beta), lora=bool(dpo_lora),
                              target_kl=float(dpo_target_kl or 0),  # 0, not None: the CLI equivalent says --target-kl 0
                              batch_size=defaults["dpo"].batch_size)
    return dataclasses.replace(defaults["ppo"], steps=int(steps), batch_size=int(batch), mini_batch_size=int(mini),
                               ppo_epochs=int(epochs), lr=float(lr), max_new_tokens=int(tokens) or None,
                               kl_coef=float(kl_coef), target_kl=float(target_kl or 0))


def cli_equivalent(project, kind, model_spec, reward_model, *settings) -> str:
    try:
        return command_line(kind, project, model_spec, make_config(kind, *settings).validate(), reward_model)
    except Exception as error:  # half-typed numbers: say so instead of a stale command
        return f"(not a valid setting yet: {error})"


@user_errors
def start(profile: gr.OAuthProfile | None, request: gr.Request, project, kind, model_spec, reward_model, *settings):
    # (profile and request come first: Gradio fills them in, and it looks for such parameters only before *settings)
    require_owner("train", username(profile, request))
    job = start_training(kind, project, model_spec, make_config(kind, *settings), reward_model)
    gr.Info(html.escape(f"Started: {job.command}", quote=False))
    return gr.update(active=True)


@user_errors
def stop(profile: gr.OAuthProfile | None = None, request: gr.Request = None):
    require_owner("stop", username(profile, request))
    job = runner.stop()
    if job is not None:
        gr.Info("Stopping after this step; a checkpoint will be saved.")


def metric_frame(metrics: list[dict], names: list[str]) -> pd.DataFrame:
    rows = [{"step": m["step"], "metric": name, "value": m[name]}
            for m in metrics for name in names if isinstance(m.get(name), (int, float))]
    return pd.DataFrame(rows, columns=["step", "metric", "value"])


def poll():
    """Status line, three plots and the sample table of the current (or last) run."""
    job = runner.job
    if job is None:
        empty = pd.DataFrame(columns=["step", "metric", "value"])
        return ("No run yet in this server.", empty, empty, empty, pd.DataFrame(columns=SAMPLE_COLUMNS),
                pd.DataFrame(columns=COMPARE_COLUMNS))
    status = job.summary()
    if job.error:  # an error quotes what it failed on (a prompt, a path): shown as text, never as Markdown
        status += f"\n\n**Failed:** {as_text(job.error)}"
    elif job.result:
        status += f"\n\nCheckpoint `{job.result['id']}` saved; it is in the Chat tab's model list."
    if job.kind == "ppo" and job.metrics:
        status += "\n\n" + drift_line(job.metrics)
    checks = [row for row in job.metrics if "check/kl" in row] if job.kind == "dpo" else []
    if checks:  # DPO's KL budget: the newest check, in words
        from rlhf.dpo import check_line

        status += "\n\n**KL budget:** " + as_text(check_line(checks[-1])) + "."
    if job.evaluation:
        status += "\n\n**Before and after.** " + as_text(report_text(job.evaluation)).replace("\n", "  \n")
    status += f"\n\n`{job.command}`"
    frames = [gr.update(value=metric_frame(job.metrics, names), title=title)  # a generation job has no curves
              for names, title in zip(PLOTS.get(job.kind, [[]] * 3), PLOT_TITLES.get(job.kind, [""] * 3))]
    samples = pd.DataFrame(job.samples[:12], columns=SAMPLE_COLUMNS)
    examples = (job.evaluation or {}).get("examples", [])
    side_by_side = pd.DataFrame(examples, columns=COMPARE_COLUMNS)
    return status, *frames, samples, side_by_side


def drift_line(metrics: list[dict]) -> str:
    """The drift detectors on a PPO run so far, in words: the newest step's flags, how many steps were flagged, the
    KL against its budget and the auditor's latest evidence (what the published step is chosen by)."""
    last = metrics[-1]
    flagged = [m["step"] for m in metrics if m.get("drift/flags")]
    budget = last.get("objective/kl_target")
    kl = f"KL {last['objective/kl']:.1f} nats per answer" + (f" (budget {budget:.0f})" if budget else "")
    gain = last.get("audit/evidence")
    audit = f"; auditor {gain:+.2f} over the labelled answers" if isinstance(gain, (int, float)) else ""
    if last.get("drift/flags"):
        head = f"**Drift at step {last['step']}:** " + as_text("; ".join(last["drift/flags"])) + "."
    elif flagged:
        head = f"**Drift** was flagged at {len(flagged)} step(s) (latest {flagged[-1]}); step {last['step']} is clean."
    else:
        head = "No drift detector has fired."
    return f"{head} {kl}{audit}."


def runs_table(project: str) -> pd.DataFrame:
    try:
        store = Store.open(project)
    except Exception:
        return pd.DataFrame(columns=RUN_COLUMNS)
    rows = []
    for meta in reversed(list_checkpoints(store)):
        metrics = meta.get("metrics") or {}
        key = {"reward": "eval_accuracy", "ppo": "objective/scores", "dpo": "final_loss"}.get(meta["kind"], "")
        value = metrics.get(key)
        rows.append([meta["id"], meta["kind"], meta["created_at"], meta.get("steps_done", metrics.get("steps")),
                     f"{key} {value:.3f}" if isinstance(value, (int, float)) else ""])
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


@user_errors
def run_curves(project: str, run_id: str):
    """A finished run's curves, re-plotted from its metrics.jsonl."""
    import json
    from pathlib import Path

    from rlhf.checkpoints import METRICS_FILE, find_checkpoint

    meta = find_checkpoint(Store.open(project), (run_id or "").strip())
    rows = [json.loads(line) for line in (Path(meta["path"]) / METRICS_FILE).read_text().splitlines() if line]
    names = [name for group in PLOTS[meta["kind"]][:2] for name in group]
    return gr.update(value=metric_frame(rows, names), title=f"{meta['id']}: {', '.join(names)}")


@user_errors
def pick_run(project: str, run_id: str):
    """Use a policy run as the starting point of the next round."""
    from rlhf.checkpoints import POLICY_KINDS, find_checkpoint

    meta = find_checkpoint(Store.open(project), (run_id or "").strip(), POLICY_KINDS)
    gr.Info(f"The next run starts from {meta['id']}.")
    return gr.update(choices=model_choices(project), value=meta["path"])


@user_errors
def remove_run(project: str, run_id: str, confirmed: bool, profile: gr.OAuthProfile | None = None,
               request: gr.Request = None):
    from rlhf.jobs import delete_run

    require_owner("delete", username(profile, request))
    if not confirmed:
        raise RLHFError("delete: tick \"Yes, delete it\" first; a deleted run cannot be restored.")
    store = Store.open(project)
    delete_run(store, (run_id or "").strip())
    gr.Info(html.escape(f"Deleted {run_id}.", quote=False))
    return runs_table(project), False


ROUND_COLUMNS = ["round", "policy", "algorithm", "votes_added", "reward_model_accuracy", "win_rate_vs_previous",
                 "kl"]


def rounds_table(project: str) -> pd.DataFrame:
    from rlhf.rounds import rounds

    return pd.DataFrame(rounds(Store.open(project)), columns=ROUND_COLUMNS)


@zero_gpu(duration=120)  # one generation batch per ZeroGPU call
@user_errors
def start_next_round(project: str, profile: gr.OAuthProfile | None = None, request: gr.Request = None,
                     progress=gr.Progress()):
    require_owner("generate", username(profile, request))
    from rlhf.jobs import Job
    from rlhf.pipeline import next_round
    from rlhf.rounds import newest_policy

    store = Store.open(project)
    policy = newest_policy(store)
    job = Job(kind="generate", project=store.name, total_steps=len(store.prompts()),
              command=f"python -m rlhf next-round --project {store.name}")
    def report(done: int, total: int) -> None:
        job.record(done, total, {})  # the status line above counts the prompts too
        progress(done / total, desc=f"{done}/{total} prompts")

    with runner.hold(job):
        result = next_round(store, progress=report, cancel=job.stop_event)
    status = (f"Round started: {len(result.completion_ids)} new candidates from `{policy}` for "
              f"{result.prompts_done} prompts. Label them in the Prefer tab; the next PPO or DPO run starts from "
              "this policy.")
    return status, gr.update(choices=model_choices(project), value=policy)


def build(project: gr.Dropdown) -> None:
    defaults = hardware_defaults()
    ppo, rm, dpo = defaults["ppo"], defaults["reward"], defaults["dpo"]
    with gr.Row():
        kind = gr.Radio([("Reward model", "reward"), ("PPO", "ppo"), ("DPO", "dpo")], value="reward",
                        label="What to train", elem_id="train-kind")
        start_model = gr.Dropdown(choices=model_choices(), value=model_choices()[0][1], allow_custom_value=True,
                                  label="Start from", elem_id="train-model")
        reward_model = gr.Dropdown(choices=["latest"], value="latest", label="Reward model (PPO)",
                                   elem_id="train-reward-model")
    with gr.Group(visible=True) as reward_box:
        with gr.Row():
            rm_epochs = gr.Number(rm.epochs, label="Epochs")
            rm_lr = gr.Number(rm.lr, label="Learning rate")
            rm_lora = gr.Checkbox(rm.lora, label="LoRA (off: train every weight)")
            rm_eval = gr.Slider(0, 0.5, value=rm.eval_fraction, step=0.05, label="Held-out share")
            rm_ties = gr.Slider(0, 1, value=rm.tie_weight, step=0.25, label="Weight of a tie vote (0: ties left out)",
                                elem_id="rm-tie-weight")
            rm_pooling = gr.Radio([("Last token", "last"), ("Mean over the answer", "mean")], value=rm.pooling,
                                  label="Score read at", elem_id="rm-pooling")
    with gr.Group(visible=False) as ppo_box:
        with gr.Row():
            steps = gr.Number(ppo.steps, label="Steps", precision=0, elem_id="ppo-steps")
            batch = gr.Number(ppo.batch_size, label="Batch size", precision=0, elem_id="ppo-batch")
            mini = gr.Number(ppo.mini_batch_size, label="Minibatch size", precision=0, elem_id="ppo-mini")
            epochs = gr.Number(ppo.ppo_epochs, label="PPO epochs", precision=0)
        with gr.Row():
            lr = gr.Number(ppo.lr, label="Learning rate")
            tokens = gr.Number(ppo.max_new_tokens or 0, label="Max new tokens (0: as the labelled candidates)",
                               precision=0, elem_id="ppo-tokens")
            kl_coef = gr.Number(ppo.kl_coef, label="KL coefficient (with a budget: its floor)")
            target_kl = gr.Number(ppo.target_kl or 0, label="KL budget, nats per answer (0: none, a fixed coefficient)")
    with gr.Group(visible=False) as dpo_box:
        with gr.Row():
            dpo_epochs = gr.Number(dpo.epochs, label="Epochs")
            dpo_lr = gr.Number(dpo.lr, label="Learning rate")
            dpo_beta = gr.Number(dpo.beta, label="Beta")
            dpo_lora = gr.Checkbox(dpo.lora, label="LoRA")
            dpo_target_kl = gr.Number(dpo.target_kl or 0, label="KL budget, nats per answer (0: none, every epoch)")
    command = gr.Textbox(label="CLI equivalent", interactive=False, elem_id="cli-equivalent")
    with gr.Row():
        start_button = gr.Button("Start", variant="primary", elem_id="train-start")
        stop_button = gr.Button("Stop (saves a checkpoint)", variant="stop", elem_id="train-stop")
    status = gr.Markdown(elem_id="train-status")
    with gr.Row():
        plots = [gr.LinePlot(x="step", y="value", color="metric", title=title, elem_id=f"train-plot-{i}")
                 for i, title in enumerate(PLOT_TITLES["ppo"])]
    samples = gr.Dataframe(headers=SAMPLE_COLUMNS, wrap=True, interactive=False, label="Recent samples",
                           elem_id="train-samples")
    compare = gr.Dataframe(headers=COMPARE_COLUMNS, wrap=True, interactive=False, elem_id="train-compare",
                           label="Before and after: the reference and the tuned policy answer the same prompts")
    with gr.Accordion("Runs of this project", open=False):
        refresh_runs = gr.Button("Refresh", elem_id="refresh-runs")
        runs = gr.Dataframe(headers=RUN_COLUMNS, interactive=False, elem_id="runs-table")
        with gr.Row():
            run_id = gr.Textbox(label="Run id", placeholder="ppo-2026...", elem_id="run-id")
            use_run = gr.Button("Start the next round from it", elem_id="use-run")
            confirm = gr.Checkbox(label="Yes, delete it", elem_id="confirm-delete")
            delete_run = gr.Button("Delete run", variant="stop", elem_id="delete-run")
        plot_run = gr.Button("Plot its curves", elem_id="plot-run")
        history_plot = gr.LinePlot(x="step", y="value", color="metric", elem_id="history-plot")
    with gr.Accordion("Rounds: generate -> label -> reward model -> PPO/DPO -> new policy", open=False):
        refresh_rounds = gr.Button("Refresh", elem_id="refresh-rounds")
        rounds_view = gr.Dataframe(headers=ROUND_COLUMNS, interactive=False, elem_id="rounds-table")
        next_round_button = gr.Button("Start next round: candidates from the newest policy", elem_id="next-round")
        next_round_status = gr.Markdown(elem_id="next-round-status")
    timer = gr.Timer(1.5, active=True)

    settings = [rm_epochs, rm_lr, rm_lora, rm_eval, rm_ties, rm_pooling, steps, batch, mini, epochs, lr, tokens,
                kl_coef, target_kl, dpo_epochs, dpo_lr, dpo_beta, dpo_lora, dpo_target_kl]
    private = dict(api_visibility="private")
    kind.change(lambda k: (gr.update(visible=k == "reward"), gr.update(visible=k == "ppo"),
                           gr.update(visible=k == "dpo")), kind, [reward_box, ppo_box, dpo_box], **private)
    command_inputs = [project, kind, start_model, reward_model, *settings]
    for widget in [project, kind, start_model, reward_model, *settings]:
        widget.change(cli_equivalent, command_inputs, command, queue=False, **private)
    start_button.click(start, command_inputs, timer, **private)
    stop_button.click(stop, None, None, queue=False, **private)
    timer.tick(poll, None, [status, *plots, samples, compare], queue=False, **private)
    refresh_runs.click(runs_table, project, runs, **private)
    refresh_rounds.click(rounds_table, project, rounds_view, **private)
    next_round_button.click(start_next_round, project, [next_round_status, start_model], concurrency_id=MODEL_QUEUE,
                            concurrency_limit=1, **private)
    use_run.click(pick_run, [project, run_id], start_model, **private)
    plot_run.click(run_curves, [project, run_id], history_plot, **private)
    delete_run.click(remove_run, [project, run_id, confirm], [runs, confirm], **private)
    start_model.focus(refresh_models, project, start_model, queue=False, **private)
    reward_model.focus(partial(checkpoint_picker, kinds=("reward",)), project, reward_model, queue=False, **private)
    return command_inputs, command
