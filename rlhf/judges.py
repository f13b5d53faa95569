"""Scripted judges: a Python function that answers like an annotator, for demos without people and for tests.

A preference judge is `function(prompt: str, a: str, b: str) -> "a" | "b" | "tie" | "both_bad"`, loaded from
`path/to/file.py:function`. `annotate` asks it about every open pair of a project, each in random left/right order,
and stores its answers through the same path as a person's votes, with the judge as annotator.
"""

from __future__ import annotations

import importlib.util
import inspect
import random
import time
from pathlib import Path
from typing import Callable

from rlhf.config import RLHFError
from rlhf.prefer import ORDERS, least_certain_first, queue_scores, vote
from rlhf.store import Store

JUDGE_ANSWERS = ("a", "b", "tie", "both_bad")


def load_function(reference: str) -> Callable:
    """The function named by `path/to/file.py:function`."""
    path, _, name = (reference or "").rpartition(":")
    if not path or not name:
        raise RLHFError(f"judge: {reference!r} is not of the form path/to/file.py:function.")
    file = Path(path)
    if not file.is_file():
        raise RLHFError(f"judge: the file {path!r} does not exist (relative paths start at {Path.cwd()}); check the "
                        "path in path/to/file.py:function.")
    spec = importlib.util.spec_from_file_location(f"rlhf_user_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's file: report its error, whatever it is
        raise RLHFError(f"judge: importing {path!r} failed: {type(error).__name__}: {error}") from error
    function = getattr(module, name, None)
    if not callable(function):
        defined = ", ".join(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_"))
        raise RLHFError(f"judge: {path!r} has no function named {name!r} (its functions: {defined or 'none'}); "
                        f"name one of them after the colon, or define `def {name}(prompt, a, b)` there.")
    return function


def annotate(
    store: Store,
    judge: Callable[[str, str, str], str],
    annotator: str,
    limit: int | None = None,
    seed: int | None = None,
    order: str = "oldest",
) -> int:
    """Let `judge` vote on every pair it has not voted on yet (at most `limit`); returns the number of votes stored.

    Pairs come in id order, or with `order="uncertain"` the new ones least certain first under the newest reward
    model (as the Prefer queue orders them; plain order without a reward model)."""
    if order not in ORDERS:
        raise RLHFError(f"annotate: order {order!r} is not one of {', '.join(ORDERS)}.")
    rng = random.Random(seed)
    stored = 0
    rows = store.open_pairs(annotator)
    queue = queue_scores(store, rows) if order == "uncertain" else None
    for row in least_certain_first(rows, queue.gaps) if queue else rows:
        if limit is not None and stored >= limit:
            break
        if row["gold_choice"] is not None:
            continue  # gold pairs test people; a judge's answer to them would only repeat the key
        pair = store.pair(row["id"])
        swapped = rng.random() < 0.5
        left, right = (pair["text_b"], pair["text_a"]) if swapped else (pair["text_a"], pair["text_b"])
        presentation_id = store.add_presentation(pair["id"], annotator, swapped, time.time())
        try:
            answer = judge(pair["prompt"], left, right)
        except Exception as error:  # the user's function: say which pair broke it
            raise RLHFError(f"judge: it raised {type(error).__name__}: {error} on pair {pair['id']}.") from error
        if answer not in JUDGE_ANSWERS:
            raise RLHFError(
                f"judge: it returned {answer!r} for pair {pair['id']}; return one of {', '.join(JUDGE_ANSWERS)}."
            )
        vote(store, presentation_id, answer, annotator, source="judge", kind="judge")
        stored += 1
    return stored
