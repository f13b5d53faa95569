"""Collecting preferences: what to show next, recording a vote as the annotator saw it, undo, and ranking.

A pair is stored in canonical order (a = the completion with the lower id). Each time it is shown, a presentation
records which side each candidate was on, chosen at random, so position bias can be measured and averaged out.
Annotators answer about what they saw (`a` = left, `b` = right); `to_canonical` maps that back.

What comes next, for one annotator (`next_pair`):
  1. with probability `gold_rate`, a gold pair (known answer) they have not seen, to measure accuracy;
  2. with probability `overlap`, a pair one other annotator already decided, to measure agreement;
  3. otherwise the oldest pair nobody has decided yet;
  4. when no such pair is left, any overlap pair (a second opinion still helps).
No pair is shown to more than two annotators; gold pairs appear only as gold.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from dataclasses import dataclass

from rlhf.config import RLHFError
from rlhf.store import Store

CHOICES = ("a", "b", "tie", "both_bad", "skip")
"""What an annotator can answer about a shown pair: left better, right better, tie, both bad, skip."""
DECIDED = ("a", "b")
MAX_ANNOTATORS_PER_PAIR = 2


def to_canonical(shown_choice: str, swapped: bool) -> str:
    """Map a choice about the shown sides (a = left) to the stored order (a = lower completion id)."""
    if shown_choice not in CHOICES:
        raise RLHFError(f"vote: {shown_choice!r} is not a choice; use one of {', '.join(CHOICES)}.")
    if swapped and shown_choice in DECIDED:
        return "b" if shown_choice == "a" else "a"
    return shown_choice


def validate_annotator(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise RLHFError("annotator: no name; log in, or type your name in the Annotator field.")
    if len(name) > 64:
        raise RLHFError("annotator: the name is longer than 64 characters; shorten it.")
    return name


@dataclass
class Presentation:
    """A pair as one annotator sees it."""

    presentation_id: int
    pair_id: int
    prompt: str
    left: str
    right: str
    swapped: bool
    """True when completion b of the pair is on the left."""
    kind: str
    """`new`, `overlap` or `gold`: why the queue picked it."""


def pick_pair(open_pairs: list[dict], overlap: float, gold_rate: float, rng: random.Random) -> tuple[dict, str] | None:
    """The queue policy (see the module docstring) over `Store.open_pairs` rows; pure, so it is tested directly."""
    gold = [p for p in open_pairs if p["gold_choice"] is not None]
    fresh = [p for p in open_pairs if p["gold_choice"] is None and p["decided_by"] == 0]
    second = [p for p in open_pairs
              if p["gold_choice"] is None and 0 < p["decided_by"] < MAX_ANNOTATORS_PER_PAIR]
    draw = rng.random()
    if gold and draw < gold_rate:
        return rng.choice(gold), "gold"
    if second and draw < gold_rate + overlap:
        return second[0], "overlap"
    if fresh:
        return fresh[0], "new"
    if second:
        return second[0], "overlap"
    return None


def next_pair(
    store: Store,
    annotator: str,
    overlap: float = 0.2,
    gold_rate: float = 0.1,
    rng: random.Random | None = None,
) -> Presentation | None:
    """The next pair to show this annotator, sides shuffled, or None when nothing is left for them."""
    annotator = validate_annotator(annotator)
    if not (0 <= overlap <= 1 and 0 <= gold_rate <= 1):
        raise RLHFError("queue: overlap and gold rate are fractions between 0 and 1.")
    rng = rng or random.Random()
    picked = pick_pair(store.open_pairs(annotator), overlap, gold_rate, rng)
    if picked is None:
        return None
    row, kind = picked
    pair = store.pair(row["id"])
    swapped = rng.random() < 0.5
    presentation_id = store.add_presentation(pair["id"], annotator, swapped, time.time())
    left, right = (pair["text_b"], pair["text_a"]) if swapped else (pair["text_a"], pair["text_b"])
    return Presentation(presentation_id, pair["id"], pair["prompt"], left, right, swapped, kind)


@dataclass
class VoteReceipt:
    vote_id: int
    created: bool
    """False when this presentation was already voted on (a double click): nothing new was stored."""
    choice: str
    """The stored choice, canonical order."""
    left_model: str
    right_model: str


def vote(
    store: Store, presentation_id: int, shown_choice: str, annotator: str, comment: str | None = None,
    source: str = "prefer", kind: str = "human",
) -> VoteReceipt:
    """Store a vote about a presentation (a = left as shown). Committed before this returns."""
    annotator = validate_annotator(annotator)
    shown = store.presentation(int(presentation_id))
    if shown["annotator"] != annotator:
        raise RLHFError(
            f"vote: presentation {presentation_id} was shown to {shown['annotator']!r}, not {annotator!r}; "
            "ask for your own next pair."
        )
    swapped = bool(shown["swapped"])
    choice = to_canonical(shown_choice, swapped)
    vote_id, created = store.add_vote(
        shown["pair_id"], annotator, choice, source=source, kind=kind, presentation_id=shown["id"], swapped=swapped,
        seconds_spent=round(time.time() - shown["shown_at"], 3), comment=comment,
    )
    pair = store.pair(shown["pair_id"])
    model_a = _model_name(pair["model_a"], pair["checkpoint_a"])
    model_b = _model_name(pair["model_b"], pair["checkpoint_b"])
    left_model, right_model = (model_b, model_a) if swapped else (model_a, model_b)
    return VoteReceipt(vote_id, created, choice, left_model, right_model)


def _model_name(spec: str, checkpoint: str | None) -> str:
    return f"{spec} @ {checkpoint}" if checkpoint else spec


def rank(store: Store, prompt_id: int, ordered_completion_ids: list[int], annotator: str) -> list[int]:
    """Store a best-to-worst ordering of a prompt's candidates as the pairs it implies (K(K-1)/2 votes).

    Everything is written in one transaction: a ranking is stored whole or not at all.
    """
    annotator = validate_annotator(annotator)
    ids = [int(i) for i in ordered_completion_ids]
    candidates = {c.id for c in store.completions_by_prompt().get(prompt_id, [])}
    if len(ids) < 2 or len(set(ids)) != len(ids) or not set(ids) <= candidates:
        raise RLHFError(
            f"ranking: give each candidate of prompt {prompt_id} once, best first (its candidates: "
            f"{sorted(candidates)}); got {ids}."
        )
    vote_ids = []
    with store.connect() as conn:
        for i, better in enumerate(ids):
            for worse in ids[i + 1 :]:
                pair_id = store._pair_id(conn, prompt_id, better, worse, source="ranking")
                choice = "a" if better < worse else "b"
                vote_id, _ = store.add_vote(pair_id, annotator, choice, source="ranking", conn=conn)
                vote_ids.append(vote_id)
    return vote_ids


@dataclass
class Progress:
    labelled: int
    """Pairs with at least one decided vote (a, b, tie or both bad), by anyone."""
    remaining: int
    """Pairs this annotator could still be shown."""
    yours_today: int
    """This annotator's live votes since midnight UTC."""
    total_pairs: int

    def line(self) -> str:
        return f"{self.labelled} labelled · {self.remaining} remaining for you · {self.yours_today} yours today"


def progress(store: Store, annotator: str) -> Progress:
    votes = store.votes()
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    labelled = {v["pair_id"] for v in votes if v["choice"] != "skip"}
    open_pairs = store.open_pairs(annotator) if annotator else []
    remaining = sum(1 for p in open_pairs if p["decided_by"] < MAX_ANNOTATORS_PER_PAIR)
    yours = sum(1 for v in votes if v["annotator"] == annotator and v["created_at"][:10] == today)
    return Progress(len(labelled), remaining, yours, store.counts()["pairs"])
