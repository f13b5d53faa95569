import sqlite3

import pytest

from rlhf.stats import chose_left, cohens_kappa, overlap_label_pairs, project_stats
from test_prefer import add_candidates


def test_cohens_kappa_by_hand():
    first = ["a", "a", "b", "b", "tie", "a"]
    second = ["a", "b", "b", "b", "tie", "a"]
    # p_o = 5/6; p_e = (3*2 + 2*3 + 1*1) / 36 = 13/36; kappa = (30/36 - 13/36) / (23/36) = 17/23
    assert cohens_kappa(first, second) == pytest.approx(17 / 23)
    assert cohens_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    assert cohens_kappa(["a", "a"], ["a", "a"]) is None  # one label only: chance agreement is total
    assert cohens_kappa([], []) is None


def test_chose_left():
    assert chose_left("a", False) and chose_left("b", True)
    assert not chose_left("b", False) and not chose_left("a", True)


def test_overlap_label_pairs():
    votes = [
        {"pair_id": 1, "annotator": "x", "choice": "a"}, {"pair_id": 1, "annotator": "y", "choice": "b"},
        {"pair_id": 2, "annotator": "x", "choice": "tie"}, {"pair_id": 3, "annotator": "y", "choice": "skip"},
    ]
    assert overlap_label_pairs(votes) == {"x": (["a"], ["b"]), "y": (["b"], ["a"])}


def test_project_stats(store):
    ids = add_candidates(store, prompts=("p1", "p2", "p3", "p4"))
    pairs = [p["id"] for p in store.open_pairs("nobody")]
    with sqlite3.connect(store.path) as conn:  # mark pair 4 as gold (no API sets it on a generated pair): a is right
        conn.execute("UPDATE pairs SET gold_choice = 'a' WHERE id = ?", (pairs[3],))
    plan = [  # (pair, annotator, canonical choice, swapped, seconds)
        (pairs[0], "x", "a", False, 2.0), (pairs[0], "y", "a", True, 4.0),
        (pairs[1], "x", "b", False, 6.0), (pairs[1], "y", "a", False, 8.0),
        (pairs[2], "x", "tie", False, 1.0), (pairs[2], "y", "skip", False, 1.0),
        (pairs[3], "x", "a", True, 3.0), (pairs[3], "y", "b", False, 5.0),
    ]
    for pair, who, choice, swapped, seconds in plan:
        store.add_vote(pair, who, choice, source="test", swapped=swapped, seconds_spent=seconds)
    stats = project_stats(store)
    x, y = stats["annotators"]
    assert (x["annotator"], x["votes"], x["skips"], x["median_seconds"]) == ("x", 4, 0, 2.5)
    assert (y["votes"], y["skips"], y["median_seconds"]) == (3, 1, 5.0)
    # overlap (skips aside): pairs 0, 1, 3 -> x: a,b,a vs y: a,a,b -> 1/3 agree
    assert x["overlap_votes"] == 3 and x["agreement"] == pytest.approx(0.333)
    # kappa: p_o = 1/3, x has a2 b1, y has a2 b1: p_e = (4 + 1) / 9 -> (3/9 - 5/9) / (4/9) = -0.5
    assert x["kappa"] == pytest.approx(-0.5)
    assert x["gold_votes"] == 1 and x["gold_accuracy"] == 1.0 and y["gold_accuracy"] == 0.0
    # left chosen: x: a unswapped (L), b unswapped (R), a swapped (R) -> 1/3; y: a swapped (R), a (L), b (R) -> 1/3
    assert x["left_share"] == pytest.approx(0.333) and y["left_share"] == pytest.approx(0.333)
    assert stats["labels"] == {"a": 4, "b": 2, "tie": 1, "both_bad": 0}
    assert stats["pairs"] == 4 and stats["pairs_labelled"] == 4 and stats["overlap_pairs"] == 3
    assert stats["left_share"] == pytest.approx(0.333)
    assert len(ids) == 8
