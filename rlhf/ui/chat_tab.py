"""Chat tab: stream answers from the base model or a tuned checkpoint, with an optional system prompt."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from rlhf import access
from rlhf.config import ModelConfig, RLHFError, SamplingConfig
from rlhf.generate import check_conversation_length, stream_chat
from rlhf.jobs import runner
from rlhf.models import registry, zero_gpu
from rlhf.store import Store
from rlhf.ui.common import (CHOICE_WORDS, MODEL_QUEUE, annotator_name, code, model_choices, offered_model,
                             refresh_models, session_id, stop_signals, user_errors, username)


LEADERBOARD_COLUMNS = ["model", "rating", "ci_low", "ci_high", "votes", "reward", "kl"]


def message_text(content) -> str:
    """Gradio 6 chat history holds content as a list of parts; the model wants plain text."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text", "")
    return "".join(message_text(part) for part in content or [])


@zero_gpu(duration=60)  # one answer per ZeroGPU call
@user_errors
def chat(
    message: str,
    history: list[dict] | None,
    model_spec: str,
    system_prompt: str,
    max_new_tokens: float,
    temperature: float,
    top_p: float,
    profile: gr.OAuthProfile | None = None,
    request: gr.Request = None,
):
    """Stream the assistant's reply; yields (cleared textbox, history with the growing answer).

    A visitor chats with the offered models only, and gets at most `access.visitor_max_new_tokens()` new tokens."""
    caller = username(profile, request)
    spec = offered_model(model_spec, None, profile, request)  # before anything is loaded or fetched
    sampling = SamplingConfig(
        num_candidates=1, max_new_tokens=access.cap_new_tokens(max_new_tokens, caller), temperature=float(temperature),
        top_p=float(top_p),
    ).validate(min_candidates=1)
    history = [{"role": m["role"], "content": message_text(m["content"])} for m in history or []]
    history.append({"role": "user", "content": message or ""})
    messages = ([{"role": "system", "content": system_prompt}] if (system_prompt or "").strip() else []) + history
    check_conversation_length(messages)
    runner.check_idle()  # one heavy job at a time: say what runs instead of queueing behind it
    stop = stop_signals.start(session_id(request), "chat")
    loaded = registry.get(ModelConfig(spec=spec).validate())
    for text in stream_chat(loaded, messages, sampling, stop=stop):
        yield "", history + [{"role": "assistant", "content": text}]


@zero_gpu(duration=90)  # two answers per ZeroGPU call
@user_errors
def ask_both(project: str, prompt: str, model_a: str, model_b: str, annotator: str, browser_key: str | None,
             max_new_tokens: float, profile: gr.OAuthProfile | None = None, request: gr.Request = None):
    """Arena: both models answer; the answers come back in random order, the models hidden until the vote."""
    from rlhf.arena import arena_pair

    store = Store.open(project)
    who = annotator_name(store, annotator, profile, request, browser_key)
    specs = [offered_model(spec, store.name, profile, request) for spec in (model_a, model_b)]
    runner.check_idle()
    sampling = SamplingConfig(num_candidates=1,
                              max_new_tokens=access.cap_new_tokens(max_new_tokens, username(profile, request)))
    shown = arena_pair(store, prompt, *specs, who, sampling)
    return shown.presentation_id, shown.left, shown.right, "Which answer is better? (1, 2, 3 or 4)"


@user_errors
def arena_vote(choice: str, project: str, presentation_id: int | None, annotator: str, browser_key: str | None,
               profile: gr.OAuthProfile | None = None, request: gr.Request = None):
    """The vote is about what was shown: the login (or this browser's guest name) must be the one it was shown to."""
    from rlhf.prefer import vote

    if presentation_id is None:
        raise RLHFError("arena: ask both models first.")
    store = Store.open(project)
    receipt = vote(store, presentation_id, choice, annotator_name(store, annotator, profile, request, browser_key),
                   source="arena")
    return None, (f"Vote {receipt.vote_id} recorded ({CHOICE_WORDS[choice]}). Left was `{code(receipt.left_model)}`, "
                  f"right was `{code(receipt.right_model)}`.")


def arena_vote_as(choice: str):
    """The vote handler of one arena button (not a functools.partial, which would hide the login: see
    prefer_tab.cast_as)."""

    def vote_handler(project: str, presentation_id: int | None, annotator: str, browser_key: str | None,
                     profile: gr.OAuthProfile | None = None, request: gr.Request = None):
        return arena_vote(choice, project, presentation_id, annotator, browser_key, profile=profile, request=request)

    vote_handler.__name__ = f"arena_vote_{choice}"
    return vote_handler


@user_errors
def leaderboard_table(project: str):
    from rlhf.arena import leaderboard

    rows = leaderboard(Store.open(project))
    return pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)


def stop_chat(request: gr.Request):
    stop_signals.stop(session_id(request), "chat")


def build(project: gr.Dropdown, browser_key: gr.BrowserState) -> None:
    with gr.Row():
        model = gr.Dropdown(
            choices=model_choices(), value=model_choices()[0][1], allow_custom_value=True, label="Model",
            elem_id="chat-model", scale=2,
        )
        system_prompt = gr.Textbox(
            label="System prompt (optional)", placeholder="You are a biology tutor.", elem_id="system-prompt", scale=3
        )
    chatbot = gr.Chatbot(label="Chat", elem_id="chatbot", height=420)
    message = gr.Textbox(label="Message", placeholder="Ask something and press Enter", elem_id="chat-message")
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id="chat-send")
        stop = gr.Button("Stop", variant="stop", elem_id="chat-stop")
        clear = gr.Button("Clear", elem_id="chat-clear")
    with gr.Accordion("Sampling", open=False):
        max_new_tokens = gr.Slider(8, 1024, value=256, step=8, label="Max new tokens", elem_id="chat-max-new-tokens",
                                   info=f"Visitors get at most {access.visitor_max_new_tokens()}; owners any"
                                   if access.enforced() else None)
        temperature = gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="Temperature")
        top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="Top-p")

    inputs = [message, chatbot, model, system_prompt, max_new_tokens, temperature, top_p]
    options = dict(concurrency_id=MODEL_QUEUE, concurrency_limit=1)
    sent = send.click(chat, inputs, [message, chatbot], api_name="chat", **options)
    submitted = message.submit(chat, inputs, [message, chatbot], api_visibility="private", **options)
    stop.click(stop_chat, None, None, queue=False, cancels=[sent, submitted], api_visibility="private")
    clear.click(lambda: ([], ""), None, [chatbot, message], queue=False, api_visibility="private")
    model.focus(refresh_models, project, model, queue=False, api_visibility="private")
    project.change(refresh_models, project, model, queue=False, api_visibility="private")

    with gr.Accordion("Compare two models (arena): blind votes become preference pairs", open=False):
        shown = gr.State(None)
        with gr.Row():
            model_a = gr.Dropdown(choices=model_choices(), value=model_choices()[0][1], allow_custom_value=True,
                                  label="Model 1", elem_id="arena-model-a")
            model_b = gr.Dropdown(choices=model_choices(), value=None, allow_custom_value=True, label="Model 2",
                                  elem_id="arena-model-b")
            annotator = gr.Textbox(label="Your name", elem_id="arena-annotator")
        arena_prompt = gr.Textbox(label="Prompt for both", elem_id="arena-prompt")
        ask = gr.Button("Ask both", variant="primary", elem_id="arena-ask")
        with gr.Row(equal_height=True):
            left = gr.Textbox(label="A (left)", interactive=False, lines=8, elem_id="arena-left")
            right = gr.Textbox(label="B (right)", interactive=False, lines=8, elem_id="arena-right")
        with gr.Row():
            buttons = {"a": gr.Button("A is better  [1]", elem_id="arena-a"),
                       "b": gr.Button("B is better  [2]", elem_id="arena-b"),
                       "tie": gr.Button("Tie  [3]", elem_id="arena-tie"),
                       "both_bad": gr.Button("Both bad  [4]", elem_id="arena-both-bad")}
        arena_status = gr.Markdown(elem_id="arena-status")
        refresh_board = gr.Button("Refresh leaderboard", elem_id="refresh-leaderboard")
        board = gr.Dataframe(headers=LEADERBOARD_COLUMNS, interactive=False, elem_id="leaderboard",
                             label="Leaderboard (Bradley-Terry rating, 95% bootstrap interval)")
    ask.click(ask_both, [project, arena_prompt, model_a, model_b, annotator, browser_key, max_new_tokens],
              [shown, left, right, arena_status], api_visibility="private", **options)
    for choice, button in buttons.items():
        button.click(arena_vote_as(choice), [project, shown, annotator, browser_key], [shown, arena_status],
                     api_visibility="private")
    refresh_board.click(leaderboard_table, project, board, api_visibility="private")
    for picker in (model_a, model_b):
        picker.focus(refresh_models, project, picker, queue=False, api_visibility="private")
