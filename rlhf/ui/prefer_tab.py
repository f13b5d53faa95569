"""Prefer tab: label pairs fast (keyboard first), guidelines in view; ranking, quality panel and export.

Candidates are shown in read-only textboxes, never rendered as HTML or markdown: a completion is untrusted text.
The keyboard shortcuts live in `HOTKEYS_JS`, loaded with the page.
"""

from __future__ import annotations

import random

import gradio as gr
import pandas as pd

from rlhf.access import require_owner
from rlhf.config import RLHFError
from rlhf.dataset import export_archive
from rlhf.prefer import Presentation, next_pair, progress, rank, vote
from rlhf.stats import LABELS, project_stats
from rlhf.store import Store
from rlhf.ui.common import (CHOICE_WORDS, annotator_name, as_text, code, error_toast, login_available, user_errors,
                             username)

# Each key clicks the first visible button of its list: the Prefer tab's, or the Chat tab's arena (same keys).
HOTKEYS = {"1": ["vote-a", "arena-a"], "2": ["vote-b", "arena-b"], "3": ["vote-tie", "arena-tie"],
           "4": ["vote-both-bad", "arena-both-bad"], "0": ["vote-skip"], " ": ["vote-skip"], "u": ["vote-undo"]}
HOTKEYS_JS = """
() => {
  const keys = %s;
  document.addEventListener('keydown', (event) => {
    const target = event.target;
    const typing = target && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName));
    if (typing || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const ids = keys[event.key.toLowerCase()] || [];
    const button = ids.map((id) => document.getElementById(id))
      .find((b) => b && b.offsetParent !== null && !b.disabled);  // only buttons on the visible tab
    if (!button) return;
    event.preventDefault();
    button.click();
  });
}
""" % HOTKEYS
NOTHING_LEFT = "Nothing left for you to label in this project: generate more candidates, or ask a colleague."
BLUR_JS = "() => { if (document.activeElement) document.activeElement.blur(); }"
"""After Enter in the name box the focus leaves it, so the next keys vote (they would be typed into the name)."""
QUALITY_COLUMNS = ["annotator", "kind", "votes", "skips", "median_seconds", "agreement", "alpha", "gold_accuracy",
                   "left_share"]


def queue_line(shown: Presentation | None, order: str) -> str:
    """Which order the queue is in: least certain first needs a reward model, else it is the plain order."""
    if shown is not None and shown.order == "uncertain":
        return f"queue: least certain first (reward model `{shown.reward_model}`)"
    if order == "uncertain":
        return "queue: plain order (no reward model in this project yet)"
    return "queue: oldest first"


def _pair_outputs(store: Store, annotator: str, overlap: float, gold_rate: float, order: str,
                  scoring: gr.Progress | None = None):
    def on_score(done: int, total: int) -> None:  # the first request after training scores the queue once
        if scoring is not None:
            scoring((done, total), desc="Reward model scoring the queue")

    shown = next_pair(store, annotator, overlap=overlap, gold_rate=gold_rate, order=order or "oldest",
                      progress=on_score)
    line = f"{progress(store, annotator).line()} · {queue_line(shown, order)}"
    if shown is None:
        return None, "", "", "", f"{line}\n\n**{NOTHING_LEFT}**"
    return shown.presentation_id, shown.prompt, shown.left, shown.right, line


@user_errors
def show_next(project: str, typed: str, browser_key: str | None, overlap: float, gold_rate: float, order: str,
              profile: gr.OAuthProfile | None = None, request: gr.Request = None, scoring=gr.Progress()):
    """Load the next pair for this annotator: (presentation id, prompt, left, right, progress line)."""
    store = Store.open(project)
    annotator = annotator_name(store, typed, profile, request, browser_key)
    return _pair_outputs(store, annotator, overlap, gold_rate, order, scoring)


@user_errors
def cast(choice: str, project: str, typed: str, browser_key: str | None, presentation_id: int | None, comment: str,
         overlap: float, gold_rate: float, order: str, profile: gr.OAuthProfile | None = None,
         request: gr.Request = None, scoring=gr.Progress()):
    """Record the vote (committed before this returns), reveal the models (and the reward model's guess, when it
    scored this pair), and show the next pair."""
    store = Store.open(project)
    annotator = annotator_name(store, typed, profile, request, browser_key)
    if presentation_id is None:
        raise RLHFError("vote: no pair is shown; press Next pair (or N) first.")
    receipt = vote(store, presentation_id, choice, annotator, comment=comment)
    reveal = (f"Vote {receipt.vote_id} recorded ({CHOICE_WORDS[choice]}). Left was `{code(receipt.left_model)}`, "
              f"right was `{code(receipt.right_model)}`.")
    if receipt.reward_guess is not None:
        reveal += f" {receipt.reward_guess.line()}"
    if not receipt.created:
        reveal = f"Already recorded as vote {receipt.vote_id}."
    return (*_pair_outputs(store, annotator, overlap, gold_rate, order, scoring), reveal, "")


@user_errors
def undo(project: str, typed: str, browser_key: str | None, overlap: float, gold_rate: float, order: str,
         profile: gr.OAuthProfile | None = None, request: gr.Request = None, scoring=gr.Progress()):
    """Undo the caller's own newest vote: their login's, or their guest name's (which only this browser holds)."""
    store = Store.open(project)
    annotator = annotator_name(store, typed, profile, request, browser_key)
    undone = store.undo_last_vote(annotator)
    reveal = f"Undid vote {undone['id']}." if undone else "Nothing to undo."
    return (*_pair_outputs(store, annotator, overlap, gold_rate, order, scoring), reveal, "")


@user_errors
def save_guidelines(project: str, text: str, typed: str, profile: gr.OAuthProfile | None = None,
                    request: gr.Request = None):
    require_owner("guidelines", username(profile, request))
    store = Store.open(project)
    author = username(profile, request) or (typed or "").strip() or None
    version = store.save_guidelines(text, author=author)
    gr.Info(f"Guidelines saved as version {version}.")
    return guidelines_view(store)


def guidelines_view(store: Store) -> str:
    return f"{store.guidelines()}\n\n<sub>Guidelines version {store.guidelines_version()}</sub>"


@user_errors
def load_guidelines(project: str):
    store = Store.open(project)
    return guidelines_view(store), store.guidelines()


@user_errors
def quality(project: str):
    store = Store.open(project)
    stats = project_stats(store)
    table = pd.DataFrame(stats["annotators"], columns=QUALITY_COLUMNS)
    labels = pd.DataFrame({"label": list(LABELS), "votes": [stats["labels"][k] for k in LABELS]})
    summary = (
        f"{stats['votes']} votes on {stats['pairs_labelled']} of {stats['pairs']} pairs, {stats['skips']} skips. "
        f"Left answer chosen in {_pct(stats['left_share'])} of decided votes (50% = no position bias). "
        f"Agreement on {stats['overlap_pairs']} overlapping pairs: {_pct(stats['agreement'])}, "
        f"Krippendorff's alpha {stats['alpha'] if stats['alpha'] is not None else '-'}."
    )
    excluded = [e["annotator"] for e in store.exclusions()]
    if excluded:
        summary += (" Excluded by the owner (out of the export and training): "
                    + ", ".join(f"`{code(name)}`" for name in excluded) + ".")
    return summary, table, labels


def _pct(value):
    return "-" if value is None else f"{100 * value:.0f}%"


@user_errors
def export(project: str, profile: gr.OAuthProfile | None = None, request: gr.Request = None):
    """Owners only: the export is the project's data, and each one writes files."""
    require_owner("export", username(profile, request))
    result, archive = export_archive(Store.open(project))
    rows = ", ".join(f"{split} {n}" for split, n in result.rows.items())
    return str(archive), f"Exported {rows} rows to `{code(result.folder)}`."


# who may label (owners) -------------------------------------------------------------------------------------------
def labelling_line(store: Store) -> str:
    who = "logged-in users only" if store.setting("logins_only") else "everyone (typed names label as guests)"
    excluded = store.exclusions()
    line = f"Who may label **{code(store.name)}**: {who}."
    if excluded:
        line += " Excluded: " + ", ".join(
            f"`{code(e['annotator'])}`" + (f" ({as_text(e['reason'])})" if e["reason"] else "") for e in excluded) + "."
    return line


@user_errors
def show_labelling(project: str):
    store = Store.open(project)
    return labelling_line(store), store.setting("logins_only")


@user_errors
def set_logins_only(project: str, logins_only: bool, profile: gr.OAuthProfile | None = None,
                    request: gr.Request = None) -> str:
    owner = username(profile, request)
    require_owner("labelling", owner)
    store = Store.open(project)
    store.set_setting("logins_only", bool(logins_only), changed_by=owner)
    return labelling_line(store)


@user_errors
def exclude(project: str, annotator: str, reason: str, readmit: bool, profile: gr.OAuthProfile | None = None,
            request: gr.Request = None) -> str:
    """Exclude an annotator's votes from the export and training (or readmit them); recorded on the dataset card."""
    owner = username(profile, request)
    require_owner("labelling", owner)
    store = Store.open(project)
    name = (annotator or "").strip()
    if not name:
        raise RLHFError("exclude: give the annotator's name as the quality panel shows it (e.g. guest:alice).")
    if readmit:
        if not store.readmit_annotator(name):
            raise RLHFError(f"readmit: {name!r} is not excluded in project {store.name!r}.")
    else:
        store.exclude_annotator(name, owner, reason)
    return labelling_line(store)


# ranking ------------------------------------------------------------------------------------------------------------
MAX_RANKED = 8


@user_errors
def load_ranking(project: str, typed: str, browser_key: str | None, profile: gr.OAuthProfile | None = None,
                 request: gr.Request = None):
    """A prompt with 3+ candidates this annotator has not ranked, candidates shuffled; (state, prompt, boxes...)."""
    store = Store.open(project)
    annotator = annotator_name(store, typed, profile, request, browser_key)
    ranked = {v["prompt_id"] for v in store.votes() if v["annotator"] == annotator and v["source"] == "ranking"}
    for prompt_id, candidates in store.completions_by_prompt().items():
        if len(candidates) >= 3 and prompt_id not in ranked:
            shown = random.sample(candidates[:MAX_RANKED], k=min(len(candidates), MAX_RANKED))
            boxes = [gr.update(value=c.text, visible=True, label=f"{i + 1}") for i, c in enumerate(shown)]
            boxes += [gr.update(value="", visible=False)] * (MAX_RANKED - len(shown))
            return {"prompt_id": prompt_id, "ids": [c.id for c in shown]}, shown[0].prompt, *boxes
    gr.Info("No prompt with 3 or more candidates is left for you to rank.")
    return None, "", *[gr.update(value="", visible=False)] * MAX_RANKED


@user_errors
def submit_ranking(project: str, typed: str, browser_key: str | None, state: dict | None, order: str,
                   profile: gr.OAuthProfile | None = None, request: gr.Request = None):
    if not state:
        raise RLHFError("ranking: load a prompt to rank first.")
    try:
        positions = [int(x) for x in order.replace(",", " ").split()]
    except ValueError:
        raise RLHFError("ranking: type the numbers of the candidates, best first, e.g. `2 1 3`.") from None
    if sorted(positions) != list(range(1, len(state["ids"]) + 1)):
        raise RLHFError(f"ranking: give each of the numbers 1 to {len(state['ids'])} once, best first.")
    ordered = [state["ids"][p - 1] for p in positions]
    store = Store.open(project)
    votes = rank(store, state["prompt_id"], ordered, annotator_name(store, typed, profile, request, browser_key))
    gr.Info(f"Ranking stored as {len(votes)} pairwise votes.")
    return ""


# API ----------------------------------------------------------------------------------------------------------------
def api_next_pair(project: str, annotator: str, profile: gr.OAuthProfile | None = None,
                  request: gr.Request = None) -> dict:
    """The next pair for you: presentation_id (pass it to /vote), pair_id, prompt, left, right, and the annotator name
    the vote will carry (your login, else `guest:NAME`, held by this client's session); or {}."""
    try:
        store = Store.open(project)
        name = annotator_name(store, annotator, profile, request)
        shown = next_pair(store, name)
    except RLHFError as error:
        raise error_toast(error) from error
    if shown is None:
        return {}
    return {"presentation_id": shown.presentation_id, "pair_id": shown.pair_id, "prompt": shown.prompt,
            "left": shown.left, "right": shown.right, "annotator": name}


def api_vote(project: str, presentation_id: int, choice: str, annotator: str, comment: str = "",
             profile: gr.OAuthProfile | None = None, request: gr.Request = None) -> dict:
    """Vote on a presentation: choice a (left), b (right), tie, both_bad or skip. Returns the stored vote id."""
    try:
        store = Store.open(project)
        receipt = vote(store, int(presentation_id), choice, annotator_name(store, annotator, profile, request),
                       comment=comment, source="api")
    except RLHFError as error:
        raise error_toast(error) from error
    guess = receipt.reward_guess
    return {"vote_id": receipt.vote_id, "created": receipt.created, "stored_choice": receipt.choice,
            "left_model": receipt.left_model, "right_model": receipt.right_model,
            "reward_model_preferred": guess.preferred if guess else None,
            "reward_model_gap": guess.gap if guess else None,
            "agreed_with_reward_model": guess.agreed if guess else None}


BROWSER_KEY_JS = """(key) => key || Array.from(crypto.getRandomValues(new Uint8Array(24)),
    (b) => b.toString(16).padStart(2, '0')).join('')"""
"""The key that binds this browser's guest names: made in the page as it loads (before anyone can type a name, so
the first vote already carries it), from the browser's cryptographic random source (crypto.getRandomValues works
over plain http too, unlike randomUUID), kept in its local storage (gr.BrowserState)."""


def cast_as(choice: str):
    """The vote handler of one button. (Not functools.partial: Gradio reads a handler's type hints to pass it the
    login and the request, and a partial has none, so a logged-in vote would carry the typed name.)"""

    def vote_handler(project: str, typed: str, browser_key: str | None, presentation_id: int | None, comment: str,
                     overlap: float, gold_rate: float, order: str, profile: gr.OAuthProfile | None = None,
                     request: gr.Request = None, scoring=gr.Progress()):
        return cast(choice, project, typed, browser_key, presentation_id, comment, overlap, gold_rate, order,
                    profile=profile, request=request, scoring=scoring)

    vote_handler.__name__ = f"cast_{choice}"
    return vote_handler


def build(project: gr.Dropdown, browser_key: gr.BrowserState) -> tuple[list, list]:
    """The tab; returns what the page fills on load: (guidelines view and text, who-may-label line and checkbox)."""
    presentation = gr.State(None)
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                annotator = gr.Textbox(label="Annotator", placeholder="your name", elem_id="annotator", scale=2,
                                       info="Log in at the top, or type a name" if login_available() else None)
                next_button = gr.Button("Next pair", elem_id="next-pair", scale=1)
            status = gr.Markdown(elem_id="prefer-progress")
            prompt = gr.Textbox(label="Prompt", interactive=False, lines=2, elem_id="pair-prompt")
            with gr.Row(equal_height=True):
                left = gr.Textbox(label="A (left)", interactive=False, lines=10, max_lines=30, elem_id="pair-left")
                right = gr.Textbox(label="B (right)", interactive=False, lines=10, max_lines=30, elem_id="pair-right")
            with gr.Row():
                buttons = {
                    "a": gr.Button("A is better  [1]", variant="primary", elem_id="vote-a"),
                    "b": gr.Button("B is better  [2]", variant="primary", elem_id="vote-b"),
                    "tie": gr.Button("Tie  [3]", elem_id="vote-tie"),
                    "both_bad": gr.Button("Both bad  [4]", elem_id="vote-both-bad"),
                    "skip": gr.Button("Skip  [0 / space]", elem_id="vote-skip"),
                }
                undo_button = gr.Button("Undo  [u]", variant="stop", elem_id="vote-undo")
            comment = gr.Textbox(label="Comment (optional)", elem_id="vote-comment")
            reveal = gr.Markdown(elem_id="vote-reveal")
        with gr.Column(scale=2):
            guidelines = gr.Markdown(label="Guidelines", elem_id="guidelines", container=True)
            with gr.Accordion("Edit guidelines (creates a new version)", open=False):
                guidelines_text = gr.Textbox(lines=10, show_label=False, elem_id="guidelines-text")
                save = gr.Button("Save guidelines", elem_id="save-guidelines")
            with gr.Accordion("Queue", open=False):
                overlap = gr.Slider(0, 1, value=0.2, step=0.05, label="Overlap: share of pairs shown to a second "
                                    "annotator (measures agreement)")
                gold_rate = gr.Slider(0, 1, value=0.1, step=0.05, label="Gold rate: share of gold pairs (known "
                                      "answers) mixed in, when the project has some")
                queue_order = gr.Radio([("Least certain first", "uncertain"), ("Oldest first", "oldest")],
                                       value="uncertain", label="New pairs", elem_id="queue-order",
                                       info="Least certain first: the pairs the newest reward model scores closest "
                                            "come first (plain order until the project has a reward model)")
    with gr.Accordion("Rank 3 or more candidates of one prompt", open=False):
        ranking = gr.State(None)
        rank_prompt = gr.Textbox(label="Prompt", interactive=False)
        rank_boxes = [gr.Textbox(visible=False, interactive=False, lines=4) for _ in range(MAX_RANKED)]
        with gr.Row():
            load_rank = gr.Button("Load a prompt to rank", elem_id="load-ranking")
            order = gr.Textbox(label="Order, best first (e.g. 2 1 3)", elem_id="ranking-order")
            submit_rank = gr.Button("Submit ranking", elem_id="submit-ranking")
    with gr.Accordion("Quality", open=False):
        refresh = gr.Button("Refresh", elem_id="refresh-quality")
        summary = gr.Markdown(elem_id="quality-summary")
        table = gr.Dataframe(headers=QUALITY_COLUMNS, interactive=False, elem_id="quality-table")
        plot = gr.BarPlot(x="label", y="votes", title="Label distribution", elem_id="label-plot")
    with gr.Accordion("Export the preference dataset (owners)", open=False):
        export_button = gr.Button("Export (TRL format + dataset card)", elem_id="export")
        export_status = gr.Markdown(elem_id="export-status")
        export_file = gr.File(label="Download", interactive=False, elem_id="export-file")
    with gr.Accordion("Who may label (owners)", open=False):
        labelling = gr.Markdown(elem_id="labelling-status")
        logins_only = gr.Checkbox(label="Logged-in users only (typed guest names may not label)",
                                  elem_id="logins-only")
        with gr.Row():
            excluded_name = gr.Textbox(label="Annotator", placeholder="as the quality panel shows it: guest:alice",
                                       elem_id="exclude-name")
            reason = gr.Textbox(label="Why (recorded on the dataset card)", elem_id="exclude-reason")
            readmit = gr.Checkbox(label="Readmit instead", elem_id="exclude-readmit")
            exclude_button = gr.Button("Exclude from export and training", variant="stop", elem_id="exclude")

    private = dict(api_visibility="private")
    queue_inputs = [overlap, gold_rate, queue_order]
    pair_outputs = [presentation, prompt, left, right, status]
    who = [project, annotator, browser_key]
    next_button.click(show_next, [*who, *queue_inputs], pair_outputs, **private)
    annotator.submit(show_next, [*who, *queue_inputs], pair_outputs, **private)
    annotator.submit(None, js=BLUR_JS)  # in the browser, at once: the keys pressed next vote
    for choice, button in buttons.items():
        button.click(cast_as(choice), [*who, presentation, comment, *queue_inputs],
                     [*pair_outputs, reveal, comment], **private)
    undo_button.click(undo, [*who, *queue_inputs], [*pair_outputs, reveal, comment], **private)
    save.click(save_guidelines, [project, guidelines_text, annotator], guidelines, **private)
    project.change(load_guidelines, project, [guidelines, guidelines_text], **private)
    project.change(lambda: (None, "", "", "", "", ""), None, [*pair_outputs, reveal], **private)
    load_rank.click(load_ranking, who, [ranking, rank_prompt, *rank_boxes], **private)
    submit_rank.click(submit_ranking, [*who, ranking, order], order, **private)
    refresh.click(quality, project, [summary, table, plot], **private)
    export_button.click(export, project, [export_file, export_status], **private)
    project.change(show_labelling, project, [labelling, logins_only], **private)
    logins_only.input(set_logins_only, [project, logins_only], labelling, **private)
    exclude_button.click(exclude, [project, excluded_name, reason, readmit], labelling, **private)
    gr.api(api_next_pair, api_name="next_pair")
    gr.api(api_vote, api_name="vote")
    return [guidelines, guidelines_text], [labelling, logins_only]
