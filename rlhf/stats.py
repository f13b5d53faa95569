"""Label quality: per-annotator volume and speed, agreement (percent and Krippendorff's alpha), gold accuracy,
position bias.

The math is in small pure functions over plain lists; `project_stats` gathers a project's votes and applies them.
Skips are not labels: they count as votes seen, never in agreement, bias or the label distribution.

Agreement beyond chance is Krippendorff's alpha for nominal data: who labels a pair varies from pair to pair (and a
pair may have more than two labels), which Cohen's kappa, made for two fixed raters who label every item, does not
allow; alpha takes any number of raters per item and items labelled once simply do not count.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from itertools import permutations

from rlhf.store import Store

LABELS = ("a", "b", "tie", "both_bad")


def krippendorff_alpha(units: list[list[str]]) -> float | None:
    """Krippendorff's alpha for nominal labels: 1 - D_o / D_e, observed over expected disagreement.

    `units`: for each item, the labels it got, one per rater (any number of raters; items with fewer than two labels
    are not pairable and do not count). As in Krippendorff (2011), "Computing Krippendorff's alpha-reliability":
    the coincidence matrix counts every ordered pair of labels within an item with weight 1 / (m_u - 1), m_u its
    number of labels; n_c is label c's total in it and n the number of pairable labels. Then
    alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c * n_k. 1 is perfect agreement, 0 what chance gives,
    below 0 systematic disagreement. None when undefined: nothing pairable, or a single label used throughout.
    """
    coincidences: Counter = Counter()
    for labels in units:
        m = len(labels)
        if m < 2:
            continue
        for c, k in permutations(labels, 2):  # ordered pairs of labels from different raters
            coincidences[c, k] += 1 / (m - 1)
    totals: Counter = Counter()
    for (c, _), weight in coincidences.items():
        totals[c] += weight
    n = sum(totals.values())
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    if n == 0 or expected == 0:
        return None
    observed = sum(weight for (c, k), weight in coincidences.items() if c != k)
    return 1 - (n - 1) * observed / expected


def chose_left(choice: str, swapped: bool) -> bool:
    """Whether a decided vote (a or b, canonical order) picked the candidate shown on the left."""
    return (choice == "a") != bool(swapped)


def labels_by_pair(votes: list[dict]) -> dict[int, list[tuple[str, str]]]:
    """For each pair, the (annotator, label) of every vote on it that is a label (skips aside)."""
    by_pair: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for v in votes:
        if v["choice"] in LABELS:
            by_pair[v["pair_id"]].append((v["annotator"], v["choice"]))
    return dict(by_pair)


def overlap_label_pairs(votes: list[dict]) -> dict[str, tuple[list[str], list[str]]]:
    """For each annotator, their labels and another annotator's labels on the same pairs (one entry per other vote)."""
    result: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for unit in labels_by_pair(votes).values():
        for me, mine in unit:
            for other, theirs in unit:
                if other != me:
                    result[me][0].append(mine)
                    result[me][1].append(theirs)
    return dict(result)


def _alpha(units: list[list[tuple[str, str]]]) -> float | None:
    """Krippendorff's alpha of pairs given as (annotator, label) lists, rounded for display."""
    return _round(krippendorff_alpha([[label for _, label in unit] for unit in units]))


def project_stats(store: Store) -> dict:
    """Every quality figure of a project, as plain data (the UI shows it, the CLI prints it, the card quotes it).

    An annotator's `alpha` is Krippendorff's alpha over the pairs they labelled with someone else (every label on
    those pairs); the project's is over all pairs labelled more than once.
    """
    votes = store.votes()
    labelled = [v for v in votes if v["choice"] in LABELS]
    overlaps = overlap_label_pairs(votes)
    units = list(labels_by_pair(votes).values())
    kinds = {a["name"]: a["kind"] for a in store.annotators()}
    annotators = []
    for name in sorted({v["annotator"] for v in votes}):
        mine = [v for v in votes if v["annotator"] == name]
        decided = [v for v in mine if v["choice"] in LABELS]
        positioned = [v for v in decided if v["choice"] in ("a", "b") and v["swapped"] is not None]
        gold = [v for v in decided if v["gold_choice"] is not None]
        seconds = [v["seconds_spent"] for v in decided if v["seconds_spent"] is not None]
        own, others = overlaps.get(name, ([], []))
        annotators.append({
            "annotator": name,
            "kind": kinds.get(name, "human"),
            "votes": len(decided),
            "skips": len(mine) - len(decided),
            "median_seconds": round(statistics.median(seconds), 2) if seconds else None,
            "overlap_votes": len(own),
            "agreement": round(sum(x == y for x, y in zip(own, others)) / len(own), 3) if own else None,
            "alpha": _alpha([unit for unit in units if name in {who for who, _ in unit}]),
            "gold_votes": len(gold),
            "gold_accuracy": round(sum(v["choice"] == v["gold_choice"] for v in gold) / len(gold), 3) if gold else None,
            "left_share": round(sum(chose_left(v["choice"], v["swapped"]) for v in positioned) / len(positioned), 3)
            if positioned else None,
        })
    positioned = [v for v in labelled if v["choice"] in ("a", "b") and v["swapped"] is not None]
    all_own = [x for own, _ in overlaps.values() for x in own]
    all_others = [y for _, others in overlaps.values() for y in others]
    counts = store.counts()
    return {
        "pairs": counts["pairs"],
        "pairs_labelled": len({v["pair_id"] for v in labelled}),
        "votes": len(labelled),
        "skips": sum(1 for v in votes if v["choice"] == "skip"),
        "annotators": annotators,
        "labels": {label: sum(1 for v in labelled if v["choice"] == label) for label in LABELS},
        "left_share": round(sum(chose_left(v["choice"], v["swapped"]) for v in positioned) / len(positioned), 3)
        if positioned else None,
        "overlap_pairs": sum(1 for unit in units if len(unit) > 1),
        "agreement": round(sum(x == y for x, y in zip(all_own, all_others)) / len(all_own), 3) if all_own else None,
        "alpha": _alpha(units),
        "guidelines_version": store.guidelines_version(),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def format_stats(stats: dict) -> str:
    """A plain-text report (the CLI's `stats`)."""
    lines = [
        f"pairs {stats['pairs']}, labelled {stats['pairs_labelled']}, votes {stats['votes']}, skips {stats['skips']}",
        "labels " + ", ".join(f"{k} {v}" for k, v in stats["labels"].items()),
        f"left chosen {percent(stats['left_share'])} of decided votes (50% = no position bias)",
        f"overlap pairs {stats['overlap_pairs']}, agreement {percent(stats['agreement'])}, "
        f"Krippendorff's alpha {number(stats['alpha'])}",
        "",
        f"{'annotator':<24}{'votes':>6}{'skips':>6}{'med s':>7}{'agree':>7}{'alpha':>7}{'gold':>7}{'left':>7}",
    ]
    for a in stats["annotators"]:
        lines.append(
            f"{a['annotator'][:23]:<24}{a['votes']:>6}{a['skips']:>6}{number(a['median_seconds']):>7}"
            f"{percent(a['agreement']):>7}{number(a['alpha']):>7}{percent(a['gold_accuracy']):>7}"
            f"{percent(a['left_share']):>7}"
        )
    return "\n".join(lines)


def percent(value: float | None) -> str:
    """A share as a whole percentage, "-" when there is none."""
    return "-" if value is None else f"{100 * value:.0f}%"


def number(value: float | None) -> str:
    """A figure with two decimals, "-" when there is none."""
    return "-" if value is None else f"{value:.2f}"
