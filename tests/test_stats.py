import random
import sqlite3

import pytest

from rlhf.stats import LABELS, chose_left, format_stats, krippendorff_alpha, overlap_label_pairs, project_stats
from test_prefer import add_candidates


def test_krippendorff_alpha_by_hand():
    # Two raters, three items: (a, a), (a, b), (b, a). Coincidences (each ordered pair, weight 1/(m-1) = 1):
    # o_aa = 2, o_ab = o_ba = 2, o_bb = 0; n_a = 4, n_b = 2, n = 6.
    # alpha = 1 - (n - 1) * (o_ab + o_ba) / (2 * n_a * n_b) = 1 - 5 * 4 / 16 = -0.25
    assert krippendorff_alpha([["a", "a"], ["a", "b"], ["b", "a"]]) == pytest.approx(-0.25)
    # Three raters on one item, two on another; a third item labelled once does not count:
    # item 1 (a, a, b): the 6 ordered pairs weigh 1/2 each: o_aa = 1, o_ab = o_ba = 1; item 2 (b, b): o_bb = 2.
    # n_a = 2, n_b = 3, n = 5; alpha = 1 - 4 * 2 / (2 * 2 * 3) = 1/3
    assert krippendorff_alpha([["a", "a", "b"], ["b", "b"], ["tie"]]) == pytest.approx(1 / 3)
    assert krippendorff_alpha([["a", "a"], ["b", "b"]]) == 1.0
    assert krippendorff_alpha([["a", "b"], ["b", "a"]]) == pytest.approx(1 - 3 * 4 / 8)  # -0.5: worse than chance
    assert krippendorff_alpha([["a", "a"], ["a", "a"]]) is None  # one label only: no disagreement to expect
    assert krippendorff_alpha([["a"], ["b"]]) is None and krippendorff_alpha([]) is None  # nothing pairable


KRIPPENDORFF_2011 = [  # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the example with missing
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],  # data: 4 observers, 12 units; nominal alpha = 0.743
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def units_of(matrix):
    return [[row[u] for row in matrix if row[u] is not None] for u in range(len(matrix[0]))]


def test_krippendorff_alpha_matches_the_published_example():
    assert krippendorff_alpha(units_of(KRIPPENDORFF_2011)) == pytest.approx(0.743, abs=5e-4)


def test_krippendorff_alpha_matches_the_krippendorff_package():
    krippendorff = pytest.importorskip("krippendorff", reason="the reference package (requirements-dev.txt)")
    rng = random.Random(0)
    checked = 0
    for _ in range(200):
        raters, items = rng.randint(2, 5), rng.randint(2, 12)
        labels = LABELS[: rng.randint(2, 4)]
        matrix = [[rng.choice(labels) if rng.random() < 0.7 else None for _ in range(items)] for _ in range(raters)]
        ours = krippendorff_alpha(units_of(matrix))
        if ours is None:
            continue
        numeric = [[float("nan") if x is None else float(LABELS.index(x)) for x in row] for row in matrix]
        theirs = krippendorff.alpha(reliability_data=numeric, level_of_measurement="nominal",
                                    value_domain=list(range(len(LABELS))))
        assert ours == pytest.approx(theirs, abs=1e-9), matrix
        checked += 1
    assert checked > 150
    reference = krippendorff.alpha(reliability_data=[[float("nan") if x is None else x for x in row]
                                                     for row in KRIPPENDORFF_2011], level_of_measurement="nominal")
    assert krippendorff_alpha(units_of(KRIPPENDORFF_2011)) == pytest.approx(reference, abs=1e-12)


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
    # alpha over pairs 0, 1, 3 (both annotators' labels): (a, a), (b, a), (a, b) -> -0.25 (by hand above);
    # pair 2 has one label (y skipped), so it does not count
    assert x["alpha"] == y["alpha"] == stats["alpha"] == pytest.approx(-0.25)
    assert x["gold_votes"] == 1 and x["gold_accuracy"] == 1.0 and y["gold_accuracy"] == 0.0
    # left chosen: x: a unswapped (L), b unswapped (R), a swapped (R) -> 1/3; y: a swapped (R), a (L), b (R) -> 1/3
    assert x["left_share"] == pytest.approx(0.333) and y["left_share"] == pytest.approx(0.333)
    assert stats["labels"] == {"a": 4, "b": 2, "tie": 1, "both_bad": 0}
    assert stats["pairs"] == 4 and stats["pairs_labelled"] == 4 and stats["overlap_pairs"] == 3
    assert stats["left_share"] == pytest.approx(0.333)
    assert len(ids) == 8
    assert "Krippendorff's alpha -0.25" in format_stats(stats)


def test_alpha_counts_pairs_with_varying_annotators_and_per_annotator_only_their_pairs(store):
    add_candidates(store, prompts=("p1", "p2", "p3", "p4"))
    pairs = [p["id"] for p in store.open_pairs("nobody")]
    plan = [(pairs[0], "x", "a"), (pairs[0], "y", "a"), (pairs[0], "z", "b"),  # three people on one pair
            (pairs[1], "x", "b"), (pairs[1], "z", "b"),
            (pairs[2], "y", "tie"), (pairs[2], "z", "tie"),
            (pairs[3], "x", "a")]  # labelled once: not pairable
    for pair, who, choice in plan:
        store.add_vote(pair, who, choice, source="test")
    stats = project_stats(store)
    everyone = [["a", "a", "b"], ["b", "b"], ["tie", "tie"]]
    assert stats["alpha"] == pytest.approx(round(krippendorff_alpha(everyone), 3))
    x, y, z = stats["annotators"]
    assert x["alpha"] == pytest.approx(round(krippendorff_alpha([["a", "a", "b"], ["b", "b"]]), 3))
    assert y["alpha"] == pytest.approx(round(krippendorff_alpha([["a", "a", "b"], ["tie", "tie"]]), 3))
    assert z["alpha"] == stats["alpha"]
    assert stats["overlap_pairs"] == 3
