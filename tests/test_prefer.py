import random

import pytest

from rlhf.config import RLHFError
from rlhf.prefer import next_pair, pick_pair, progress, rank, to_canonical, vote


def add_candidates(store, prompts=("What is an opossum?", "Why is the sky blue?"), k=2):
    run = store.start_generation_run("base-model", None, {"temperature": 0.8})
    rows = [(p, j, f"{p} answer {j}", 3, "stop") for p in prompts for j in range(k)]
    return store.add_completions(run, rows, source="test")


class FixedDraw(random.Random):
    """random() returns a chosen value: selects a branch of the queue policy."""

    def __init__(self, draw):
        super().__init__(0)
        self.draw = draw

    def random(self):
        return self.draw


def test_to_canonical():
    assert [to_canonical(c, False) for c in ("a", "b", "tie", "both_bad", "skip")] == ["a", "b", "tie", "both_bad",
                                                                                       "skip"]
    assert [to_canonical(c, True) for c in ("a", "b", "tie", "both_bad", "skip")] == ["b", "a", "tie", "both_bad",
                                                                                      "skip"]
    with pytest.raises(RLHFError, match="not a choice"):
        to_canonical("left", False)


def test_queue_policy():
    fresh = {"id": 1, "gold_choice": None, "decided_by": 0}
    second = {"id": 2, "gold_choice": None, "decided_by": 1}
    full = {"id": 3, "gold_choice": None, "decided_by": 2}
    gold = {"id": 4, "gold_choice": "a", "decided_by": 0}
    rows = [fresh, second, full, gold]
    assert pick_pair(rows, overlap=0.2, gold_rate=0.1, rng=FixedDraw(0.05)) == (gold, "gold")
    assert pick_pair(rows, overlap=0.2, gold_rate=0.1, rng=FixedDraw(0.25)) == (second, "overlap")
    assert pick_pair(rows, overlap=0.2, gold_rate=0.1, rng=FixedDraw(0.5)) == (fresh, "new")
    assert pick_pair([second, full, gold], overlap=0.2, gold_rate=0.0, rng=FixedDraw(0.9)) == (second, "overlap")
    assert pick_pair([full, gold], overlap=0.2, gold_rate=0.0, rng=FixedDraw(0.9)) is None  # gold only as gold


def test_vote_records_annotator_time_guidelines_and_side(store):
    add_candidates(store)
    store.save_guidelines("Biology tutor: accuracy first.")
    shown = next_pair(store, "alice", rng=FixedDraw(0.9))  # 0.9 >= 0.5: not swapped
    assert shown.kind == "new" and shown.prompt == "What is an opossum?" and not shown.swapped
    receipt = vote(store, shown.presentation_id, "b", "alice", comment="more precise")
    assert receipt.created and receipt.choice == "b" and receipt.left_model == "base-model"
    [stored] = store.votes()
    assert (stored["annotator"], stored["choice"], stored["guidelines_version"], stored["comment"]) == (
        "alice", "b", 2, "more precise")
    assert stored["seconds_spent"] >= 0 and stored["created_at"] and stored["swapped"] == 0

    swapped = next_pair(store, "alice", rng=FixedDraw(0.4))  # 0.4 < 0.5: swapped, b on the left
    assert swapped.swapped and swapped.left == "Why is the sky blue? answer 1"
    assert vote(store, swapped.presentation_id, "a", "alice").choice == "b"  # left = completion b


def test_a_double_vote_is_one_vote_and_others_cannot_vote_for_you(store):
    add_candidates(store)
    shown = next_pair(store, "alice")
    first = vote(store, shown.presentation_id, "a", "alice")
    again = vote(store, shown.presentation_id, "b", "alice")
    assert again.vote_id == first.vote_id and not again.created
    assert len(store.votes()) == 1 and store.votes()[0]["choice"] == first.choice
    other = next_pair(store, "alice")
    with pytest.raises(RLHFError, match="shown to 'alice'"):
        vote(store, other.presentation_id, "a", "bob")


def test_undo_returns_the_pair_to_the_queue(store):
    add_candidates(store, prompts=("only prompt",))
    shown = next_pair(store, "alice")
    vote(store, shown.presentation_id, "a", "alice")
    assert next_pair(store, "alice") is None
    undone = store.undo_last_vote("alice")
    assert undone["pair_id"] == shown.pair_id
    assert store.votes() == [] and len(store.votes(include_undone=True)) == 1
    assert next_pair(store, "alice").pair_id == shown.pair_id
    assert store.undo_last_vote("nobody") is None


def test_no_pair_goes_to_more_than_two_annotators(store):
    add_candidates(store, prompts=("only prompt",))
    for name in ("alice", "bob"):
        vote(store, next_pair(store, name, overlap=1.0).presentation_id, "a", name)
    assert next_pair(store, "carol", overlap=1.0) is None


def test_ranking_stores_the_implied_pairs(store):
    ids = add_candidates(store, prompts=("rank me",), k=3)
    prompt_id = store.prompts()[0].id
    best_first = [ids[2], ids[0], ids[1]]
    assert len(rank(store, prompt_id, best_first, "alice")) == 3
    winners = {}
    for v in store.votes():
        pair = store.pair(v["pair_id"])
        winners[(pair["completion_a_id"], pair["completion_b_id"])] = pair[f"completion_{v['choice']}_id"]
    assert winners == {(ids[0], ids[2]): ids[2], (ids[1], ids[2]): ids[2], (ids[0], ids[1]): ids[0]}
    before = store.counts()
    with pytest.raises(RLHFError, match="each candidate"):
        rank(store, prompt_id, [ids[0], ids[0], ids[1]], "bob")
    assert store.counts() == before


def test_progress_line(store):
    add_candidates(store)
    vote(store, next_pair(store, "alice").presentation_id, "a", "alice")
    vote(store, next_pair(store, "alice").presentation_id, "skip", "alice")
    now = progress(store, "alice")
    assert (now.labelled, now.remaining, now.yours_today, now.total_pairs) == (1, 0, 2, 2)
    assert progress(store, "bob").remaining == 2
    assert now.line() == "1 labelled · 0 remaining for you · 2 yours today"


def test_next_pair_needs_an_annotator(store):
    add_candidates(store)
    with pytest.raises(RLHFError, match="annotator"):
        next_pair(store, "  ")


def test_annotate_refuses_a_judge_answer_it_does_not_know(store):
    from rlhf.judges import annotate

    add_candidates(store)
    with pytest.raises(RLHFError, match="returned 'left'"):
        annotate(store, lambda prompt, a, b: "left", "judge:odd")
    assert store.votes() == []
    assert annotate(store, lambda prompt, a, b: "tie", "judge:even", seed=0) == 2
    assert {v["choice"] for v in store.votes()} == {"tie"}
