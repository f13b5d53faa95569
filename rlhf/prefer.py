"""Collecting preferences: what to show next, recording a vote as the annotator saw it, undo, and ranking.

A pair is stored in canonical order (a = the completion with the lower id). Each time it is shown, a presentation
records which side each candidate was on, chosen at random, so position bias can be measured and averaged out.
Annotators answer about what they saw (`a` = left, `b` = right); `to_canonical` maps that back.

What comes next, for one annotator (`next_pair`):
  0. first of all, audit pairs nobody decided yet (source `audit`: after a run whose verdict was flagged, the tuned
     policy's answer against its reference's for each prompt; the reward model never saw answers like the new
     ones, so people must judge them);
  1. with probability `gold_rate`, a gold pair (known answer) they have not seen, to measure accuracy;
  2. with probability `overlap`, a pair one other annotator already decided, to measure agreement;
  3. otherwise a pair nobody has decided yet: the oldest (`order="oldest"`), or, with `order="uncertain"` and a reward
     model in the project, the one the newest reward model is least sure about (smallest |score gap|);
  4. when no such pair is left, any overlap pair (a second opinion still helps).
No pair is shown to more than two annotators; gold pairs appear only as gold.

Least certain first ("label where it matters", uncertainty sampling: Settles, Active Learning Literature Survey,
2009, section 3.1): a pair whose two answers the reward model scores alike is where a vote teaches it most. The newest
reward checkpoint scores each completion once; the normalised scores are cached in the store (`reward_scores`), so the
model runs only for completions it has not seen (the first request after training, or after new candidates). After a
vote, `VoteReceipt.reward_guess` says which side the reward model preferred, from those cached scores (no model on
the vote path), and whether the annotator agreed.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

from rlhf.access import validate_annotator
from rlhf.checkpoints import list_checkpoints
from rlhf.config import RLHFError
from rlhf.store import Store

CHOICES = ("a", "b", "tie", "both_bad", "skip")
"""What an annotator can answer about a shown pair: left better, right better, tie, both bad, skip."""
DECIDED = ("a", "b")
MAX_ANNOTATORS_PER_PAIR = 2
ORDERS = ("oldest", "uncertain")
"""How new pairs are queued: oldest first, or least certain first under the newest reward model (when there is one)."""
SCORE_BATCH = 16


def to_canonical(shown_choice: str, swapped: bool) -> str:
    """Map a choice about the shown sides (a = left) to the stored order (a = lower completion id)."""
    if shown_choice not in CHOICES:
        raise RLHFError(f"vote: {shown_choice!r} is not a choice; use one of {', '.join(CHOICES)}.")
    if swapped and shown_choice in DECIDED:
        return "b" if shown_choice == "a" else "a"
    return shown_choice


MAX_COMMENT_CHARS = 2000


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
    order: str = "oldest"
    """The order new pairs were queued in: `uncertain` only when a reward model ordered them, else `oldest`."""
    reward_model: str | None = None
    """The reward checkpoint that ordered the queue (order `uncertain`)."""


def new_pairs(open_pairs: list[dict]) -> list[dict]:
    """The pairs nobody has decided yet (gold pairs aside): what the queue's order applies to."""
    return [p for p in open_pairs if p["gold_choice"] is None and p["decided_by"] == 0]


def least_certain_first(rows: list[dict], gaps: dict[int, float]) -> list[dict]:
    """Rows (with an `id`) by the reward model's certainty, least certain first: smallest |gap| (score of one answer
    minus the other's). Rows without a gap follow; the sort is stable, so equal gaps keep their given order."""
    return sorted(rows, key=lambda row: (row["id"] not in gaps, abs(gaps.get(row["id"], 0.0))))


def pick_pair(open_pairs: list[dict], overlap: float, gold_rate: float, rng: random.Random,
              gaps: dict[int, float] | None = None) -> tuple[dict, str] | None:
    """The queue policy (see the module docstring) over `Store.open_pairs` rows; pure, so it is tested directly.

    `gaps` (pair id -> reward score gap) puts the new pairs least certain first; without it they come oldest first."""
    gold = [p for p in open_pairs if p["gold_choice"] is not None]
    fresh = new_pairs(open_pairs)
    if gaps is not None:
        fresh = least_certain_first(fresh, gaps)
    # A flagged policy's answers against its reference's come before everything else (overlap and gold included):
    # the reward model never saw answers like the policy's new ones, so people must judge them.
    audit = [p for p in fresh if p.get("source") == "audit"]
    if audit:
        return audit[0], "audit"
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


# the reward model's view of the queue -------------------------------------------------------------------------------
def newest_reward_model(store: Store) -> dict | None:
    """Meta (with `path`) of the project's newest reward checkpoint, or None before the first one is trained."""
    found = list_checkpoints(store, ("reward",))
    return found[-1] if found else None


_scoring = threading.Lock()  # one scoring pass at a time: two requests after training must not both run the model


def score_completions(
    store: Store, completion_ids: list[int], reward_meta: dict,
    progress: Callable[[int, int], None] | None = None,
) -> dict[int, float]:
    """Normalised scores (completion id -> score) under a reward checkpoint, each computed once and cached in the store:
    only completions this checkpoint has not scored yet go through the model. `progress(done, total)` as it scores."""
    wanted = sorted({int(c) for c in completion_ids})
    with _scoring:
        cached = store.reward_scores(reward_meta["id"])
        missing = [c for c in wanted if c not in cached]
        if missing:
            from rlhf.reward import score_in_batches  # torch and transformers: only once there is something to score

            chats = store.completion_chats(missing)
            # The model runs where the GPU is (on ZeroGPU: in a @spaces.GPU worker process); the store is written here.
            batches = score_in_batches(reward_meta["path"], [chats[c][0] for c in missing],
                                       [chats[c][1] for c in missing], SCORE_BATCH)
            for index, scores in enumerate(batches):
                start = index * SCORE_BATCH
                chunk = missing[start : start + SCORE_BATCH]
                store.add_reward_scores(reward_meta["id"], dict(zip(chunk, scores)))
                cached.update(zip(chunk, scores))
                if progress is not None:
                    progress(min(start + SCORE_BATCH, len(missing)), len(missing))
    return {c: cached[c] for c in wanted}


@dataclass
class QueueScores:
    """The newest reward model's score gaps of the new pairs in a queue."""

    reward_model: str
    """Checkpoint id."""
    gaps: dict[int, float]
    """Pair id -> normalised score of completion a minus completion b (canonical order)."""


def queue_scores(store: Store, open_pairs: list[dict], progress: Callable[[int, int], None] | None = None
                 ) -> QueueScores | None:
    """Score gaps of the new pairs among `Store.open_pairs` rows under the newest reward model (None without one).
    The first call after a reward model is trained scores the queue's completions; later calls read the cache."""
    meta = newest_reward_model(store)
    if meta is None:
        return None
    fresh = new_pairs(open_pairs)
    ids = [c for p in fresh for c in (p["completion_a_id"], p["completion_b_id"])]
    scores = score_completions(store, ids, meta, progress) if ids else {}
    return QueueScores(meta["id"], {p["id"]: scores[p["completion_a_id"]] - scores[p["completion_b_id"]]
                                    for p in fresh})


def next_pair(
    store: Store,
    annotator: str,
    overlap: float = 0.2,
    gold_rate: float = 0.1,
    rng: random.Random | None = None,
    order: str = "oldest",
    progress: Callable[[int, int], None] | None = None,
) -> Presentation | None:
    """The next pair to show this annotator, sides shuffled, or None when nothing is left for them.

    `order="uncertain"` queues new pairs least certain first when the project has a reward model (plain order
    otherwise; `Presentation.order` says which was used); `progress(done, total)` follows any scoring that needs."""
    annotator = validate_annotator(annotator)
    if not (0 <= overlap <= 1 and 0 <= gold_rate <= 1):
        raise RLHFError("queue: overlap and gold rate are fractions between 0 and 1.")
    if order not in ORDERS:
        raise RLHFError(f"queue: order {order!r} is not one of {', '.join(ORDERS)}.")
    rng = rng or random.Random()
    open_pairs = store.open_pairs(annotator)
    queue = queue_scores(store, open_pairs, progress) if order == "uncertain" else None
    picked = pick_pair(open_pairs, overlap, gold_rate, rng, gaps=queue.gaps if queue else None)
    if picked is None:
        return None
    row, kind = picked
    pair = store.pair(row["id"])
    swapped = rng.random() < 0.5
    presentation_id = store.add_presentation(pair["id"], annotator, swapped, time.time())
    left, right = (pair["text_b"], pair["text_a"]) if swapped else (pair["text_a"], pair["text_b"])
    return Presentation(presentation_id, pair["id"], pair["prompt"], left, right, swapped, kind,
                        order="uncertain" if queue else "oldest", reward_model=queue.reward_model if queue else None)


@dataclass
class RewardGuess:
    """Which shown side the reward model preferred, and whether the annotator agreed."""

    reward_model: str
    preferred: str
    """`a` (left), `b` (right), or `tie` when it scored both alike."""
    gap: float
    """|score(left) - score(right)|, in normalised units (reference answers score ~N(0, 1))."""
    agreed: bool | None
    """None when there was nothing to agree on: the annotator chose tie, both bad or skip, or the model had a tie."""

    def line(self) -> str:
        if self.preferred == "tie":
            return f"Reward model scored both alike (gap {self.gap:.2f})."
        side = "LEFT" if self.preferred == "a" else "RIGHT"
        verdict = {True: "you agreed", False: "you disagreed", None: "you did not pick a side"}[self.agreed]
        return f"Reward model preferred {side} (gap {self.gap:.2f}) — {verdict}."


def guess_from_scores(reward_model: str, score_left: float, score_right: float, shown_choice: str) -> RewardGuess:
    """The reward model's guess about a pair as shown (pure): the side with the higher score, and agreement."""
    preferred = "a" if score_left > score_right else "b" if score_right > score_left else "tie"
    agreed = None if preferred == "tie" or shown_choice not in DECIDED else shown_choice == preferred
    return RewardGuess(reward_model, preferred, abs(score_left - score_right), agreed)


def reward_guess(store: Store, pair: dict, swapped: bool, shown_choice: str) -> RewardGuess | None:
    """The newest reward model's guess about a shown pair from its cached scores; None when there is no reward model
    or it has not scored this pair (the queue scores pairs only in order `uncertain`): no model runs here."""
    meta = newest_reward_model(store)
    if meta is None:
        return None
    scores = store.reward_scores(meta["id"], [pair["completion_a_id"], pair["completion_b_id"]])
    if len(scores) < 2:
        return None
    score_a, score_b = scores[pair["completion_a_id"]], scores[pair["completion_b_id"]]
    left, right = (score_b, score_a) if swapped else (score_a, score_b)
    return guess_from_scores(meta["id"], left, right, shown_choice)


@dataclass
class VoteReceipt:
    vote_id: int
    created: bool
    """False when this presentation was already voted on (a double click): nothing new was stored."""
    choice: str
    """The stored choice, canonical order."""
    left_model: str
    right_model: str
    reward_guess: RewardGuess | None = None
    """The newest reward model's guess about this pair as shown, when it has scored it (see `reward_guess`)."""


def vote(
    store: Store, presentation_id: int, shown_choice: str, annotator: str, comment: str | None = None,
    source: str = "prefer", kind: str = "human",
) -> VoteReceipt:
    """Store a vote about a presentation (a = left as shown). Committed before this returns."""
    annotator = validate_annotator(annotator)
    if comment is not None and len(comment) > MAX_COMMENT_CHARS:
        raise RLHFError(f"vote: the comment is {len(comment)} characters; keep it under {MAX_COMMENT_CHARS}.")
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
    guess = reward_guess(store, pair, swapped, shown_choice)
    return VoteReceipt(vote_id, created, choice, left_model, right_model, guess)


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
    with store.transaction():
        for i, better in enumerate(ids):
            for worse in ids[i + 1 :]:
                pair_id = store.add_pair(better, worse, source="ranking")
                choice = "a" if better < worse else "b"
                vote_id, _ = store.add_vote(pair_id, annotator, choice, source="ranking")
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
