"""Label quality: per-annotator volume and speed, agreement (percent and Cohen's kappa), gold accuracy, position bias.

The math is in small pure functions over plain lists; `project_stats` gathers a project's votes and applies them.
Skips are not labels: they count as votes seen, never in agreement, bias or the label distribution.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

from rlhf.store import Store

LABELS = ("a", "b", "tie", "both_bad")


def cohens_kappa(first: list[str], second: list[str]) -> float | None:
    """Agreement of two raters beyond chance: (p_observed - p_expected) / (1 - p_expected).

    p_expected sums, over labels, the product of each rater's share of that label (Cohen 1960). None when it is
    undefined (no items, or both raters always used one and the same label).
    """
    if len(first) != len(second):
        raise ValueError("cohens_kappa: the two raters must label the same items")
    n = len(first)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(first, second)) / n
    share_first, share_second = Counter(first), Counter(second)
    expected = sum(share_first[label] * share_second[label] for label in share_first) / (n * n)
    if expected == 1:
        return None
    return (observed - expected) / (1 - expected)


def chose_left(choice: str, swapped: bool) -> bool:
    """Whether a decided vote (a or b, canonical order) picked the candidate shown on the left."""
    return (choice == "a") != bool(swapped)


def overlap_label_pairs(votes: list[dict]) -> dict[str, tuple[list[str], list[str]]]:
    """For each annotator, their labels and another annotator's labels on the same pairs (one entry per other vote)."""
    by_pair: dict[int, list[dict]] = defaultdict(list)
    for v in votes:
        if v["choice"] in LABELS:
            by_pair[v["pair_id"]].append(v)
    result: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for pair_votes in by_pair.values():
        for mine in pair_votes:
            for other in pair_votes:
                if other["annotator"] != mine["annotator"]:
                    result[mine["annotator"]][0].append(mine["choice"])
                    result[mine["annotator"]][1].append(other["choice"])
    return dict(result)


def project_stats(store: Store) -> dict:
    """Every quality figure of a project, as plain data (the UI shows it, the CLI prints it, the card quotes it)."""
    votes = store.votes()
    labelled = [v for v in votes if v["choice"] in LABELS]
    overlaps = overlap_label_pairs(votes)
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
            "kappa": _round(cohens_kappa(own, others)),
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
        "overlap_pairs": len({v["pair_id"] for v in labelled
                              if sum(1 for w in labelled if w["pair_id"] == v["pair_id"]) > 1}),
        "agreement": round(sum(x == y for x, y in zip(all_own, all_others)) / len(all_own), 3) if all_own else None,
        "kappa": _round(cohens_kappa(all_own, all_others)),
        "guidelines_version": store.guidelines_version(),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def format_stats(stats: dict) -> str:
    """A plain-text report (the CLI's `stats`)."""
    lines = [
        f"pairs {stats['pairs']}, labelled {stats['pairs_labelled']}, votes {stats['votes']}, skips {stats['skips']}",
        "labels " + ", ".join(f"{k} {v}" for k, v in stats["labels"].items()),
        f"left chosen {_pct(stats['left_share'])} of decided votes (50% = no position bias)",
        f"overlap pairs {stats['overlap_pairs']}, agreement {_pct(stats['agreement'])}, kappa {stats['kappa']}",
        "",
        f"{'annotator':<24}{'votes':>6}{'skips':>6}{'med s':>7}{'agree':>7}{'kappa':>7}{'gold':>7}{'left':>7}",
    ]
    for a in stats["annotators"]:
        lines.append(
            f"{a['annotator'][:23]:<24}{a['votes']:>6}{a['skips']:>6}{_num(a['median_seconds']):>7}"
            f"{_pct(a['agreement']):>7}{_num(a['kappa']):>7}{_pct(a['gold_accuracy']):>7}{_pct(a['left_share']):>7}"
        )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
