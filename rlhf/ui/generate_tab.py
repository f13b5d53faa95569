"""Generate tab: prompts in (typed, a file, or the starter set), K candidates per prompt out, stored in the project."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from rlhf.access import require_owner
from rlhf.config import ModelConfig, SamplingConfig
from rlhf.generate import generate_candidates, parse_prompts, read_prompts_file, starter_prompts
from rlhf.jobs import Job, runner
from rlhf.models import registry, zero_gpu
from rlhf.store import Store
from rlhf.ui.common import (MODEL_QUEUE, model_choices, refresh_models, session_id, stop_signals, user_errors,
                             username)
from rlhf.walkthrough import CANDIDATES as WALKTHROUGH_CANDIDATES
from rlhf.walkthrough import PROMPTS as WALKTHROUGH_PROMPTS

COLUMNS = ["prompt", "candidate", "answer", "tokens", "finish"]


def candidates_table(store: Store, run_id: int) -> pd.DataFrame:
    rows = [
        (c.prompt, c.candidate_index + 1, c.text, c.num_tokens, c.finish_reason) for c in store.completions(run_id)
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


@zero_gpu(duration=120)  # one generation batch per ZeroGPU call
@user_errors
def generate(
    project: str,
    prompts_text: str,
    model_spec: str,
    num_candidates: float,
    max_new_tokens: float,
    temperature: float,
    top_p: float,
    seed: float | None,
    profile: gr.OAuthProfile | None = None,
    request: gr.Request = None,
    progress=gr.Progress(),
):
    """Sample candidates for every prompt (one per line) and store them; returns the table and a status line."""
    require_owner("generate", username(profile, request))
    sampling = SamplingConfig(
        num_candidates=int(num_candidates),
        max_new_tokens=int(max_new_tokens),
        temperature=float(temperature),
        top_p=float(top_p),
        seed=None if seed is None or seed == "" else int(seed),
    ).validate()
    prompts = parse_prompts(prompts_text)
    store = Store.open(project)
    job = Job(kind="generate", project=store.name, total_steps=len(prompts),
              command=f"python -m rlhf generate --project {store.name} --prompts FILE --model {model_spec}")
    with runner.hold(job):  # one heavy job at a time: a training start meanwhile is told what runs
        cancel = stop_signals.start(session_id(request), "generate")
        progress(0, desc="Loading the model...")
        loaded = registry.get(ModelConfig(spec=model_spec).validate())
        progress(0, desc=f"Sampling {len(prompts)} prompts x {sampling.num_candidates}")

        def report(done: int, total: int) -> None:
            job.record(done, total, {})
            progress(done / total, desc=f"{done}/{total} prompts")

        result = generate_candidates(store, loaded, prompts, sampling, source="ui", progress=report, cancel=cancel)
    status = (
        f"Stored {len(result.completion_ids)} candidates for {result.prompts_done} of {result.prompts_total} prompts "
        f"in project **{store.name}** (run {result.run_id}, seed {result.params['seed']})."
    )
    if result.cancelled:
        status = "Cancelled. " + status
    return candidates_table(store, result.run_id), status


def cancel(request: gr.Request):
    stop_signals.stop(session_id(request), "generate")
    gr.Info("Cancelling: candidates of finished prompts are kept.")


@user_errors
def load_file(file_path: str | None) -> str:
    if not file_path:
        return gr.update()
    return "\n".join(read_prompts_file(Path(file_path)))


def build(project: gr.Dropdown) -> None:
    with gr.Row():
        with gr.Column(scale=3):
            prompts = gr.Textbox(
                label="Prompts, one per line", lines=8, elem_id="prompts",
                placeholder="What is an opossum?\nWrite a haiku about the first snow of winter.",
            )
            with gr.Row():
                starter = gr.Button("Load starter prompts", size="sm", elem_id="load-starter")
                walkthrough = gr.Button("Load walkthrough prompts", size="sm", elem_id="load-walkthrough")
                upload = gr.UploadButton("Load a .txt file", file_types=[".txt"], size="sm", elem_id="upload-prompts")
        with gr.Column(scale=2):
            model = gr.Dropdown(
                choices=model_choices(), value=model_choices()[0][1], allow_custom_value=True, label="Model",
                info="`bundled`, a local folder or a Hub id", elem_id="generate-model",
            )
            num_candidates = gr.Slider(2, 8, value=2, step=1, label="Candidates per prompt", elem_id="num-candidates")
            max_new_tokens = gr.Slider(8, 512, value=128, step=8, label="Max new tokens", elem_id="max-new-tokens")
            with gr.Accordion("Sampling", open=False):
                temperature = gr.Slider(0.05, 2.0, value=0.8, step=0.05, label="Temperature")
                top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="Top-p")
                seed = gr.Number(value=None, precision=0, label="Seed (blank: random)")
    with gr.Row():
        run = gr.Button("Generate", variant="primary", elem_id="generate")
        stop = gr.Button("Cancel", variant="stop", elem_id="cancel-generate")
    status = gr.Markdown(elem_id="generate-status")
    table = gr.Dataframe(
        headers=COLUMNS, wrap=True, interactive=False, elem_id="candidates", label="Candidates",
        column_widths=["24%", "8%", "52%", "8%", "8%"],
    )

    starter.click(lambda: "\n".join(starter_prompts()), None, prompts, api_visibility="private")
    walkthrough.click(lambda: ("\n".join(WALKTHROUGH_PROMPTS), WALKTHROUGH_CANDIDATES), None, [prompts, num_candidates],
                      api_visibility="private")
    upload.upload(load_file, upload, prompts, api_visibility="private")
    run.click(
        generate,
        [project, prompts, model, num_candidates, max_new_tokens, temperature, top_p, seed],
        [table, status],
        api_name="generate",
        concurrency_id=MODEL_QUEUE,
        concurrency_limit=1,
    )
    stop.click(cancel, None, None, queue=False, api_visibility="private")
    model.focus(refresh_models, project, model, queue=False, api_visibility="private")
    project.change(refresh_models, project, model, queue=False, api_visibility="private")
