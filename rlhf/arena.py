"""Arena and leaderboard: ask two models the same prompt, vote blind, and rank models by their head-to-head votes.

An arena round samples one answer from each model, stores both as candidates (one generation run per model, so
every answer keeps its model and checkpoint), makes them a pair and shows it with sides shuffled, exactly like the
Prefer tab: the vote is a preference pair like any other (source `arena`), counted in the quality panel and export.

The leaderboard fits a Bradley-Terry model, P(i beats j) = s_i / (s_i + s_j), to every decided vote between answers
of two different models (ties count half a win each way), by the classic minorisation-maximisation iteration
(Hunter 2004), and gives bootstrap confidence intervals by resampling the votes.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, replace

from rlhf.access import validate_annotator
from rlhf.config import ModelConfig, RLHFError, SamplingConfig
from rlhf.generate import check_prompt_length, encode_prompts, sample_batch
from rlhf.models import registry
from rlhf.prefer import Presentation
from rlhf.store import ARENA, Store


MIN_ANSWER_TOKENS = 16
"""Room an arena prompt must leave in each model's context for the answer."""


def arena_pair(store: Store, prompt: str, model_a: str, model_b: str, annotator: str,
               sampling: SamplingConfig | None = None, rng: random.Random | None = None) -> Presentation:
    """Both models answer `prompt`; the answers become a pair shown to `annotator` in random order."""
    annotator = validate_annotator(annotator)
    if not (prompt or "").strip():
        raise RLHFError("arena: the prompt is empty; type a question for both models.")
    check_prompt_length(prompt)  # before any model loads: a visitor's 100k characters cost nothing
    if model_a == model_b:
        raise RLHFError("arena: pick two different models to compare.")
    sampling = sampling or SamplingConfig(num_candidates=1, max_new_tokens=128)
    sampling.validate(min_candidates=1)
    rng = rng or random.Random()
    models = [registry.get(ModelConfig(spec=spec).validate()) for spec in (model_a, model_b)]
    # The Generate tab's check for both models before sampling: the prompt leaves room for an answer in each
    # context; the answer then gets what room there is, up to max_new_tokens (as in Chat).
    encoded = [encode_prompts(loaded, [prompt], MIN_ANSWER_TOKENS)[0] for loaded in models]
    settings = [replace(sampling, max_new_tokens=min(sampling.max_new_tokens, loaded.max_context - len(ids)))
                for loaded, ids in zip(models, encoded)]
    samples = [sample_batch(loaded, [ids], fitted)[0] for loaded, ids, fitted in zip(models, encoded, settings)]
    completion_ids = []
    for loaded, sample, fitted in zip(models, samples, settings):
        run = store.start_generation_run(loaded.spec, loaded.checkpoint_id, {**asdict(fitted), "source": ARENA})
        [completion_id] = store.add_completions(run, [(prompt.strip(), 0, sample.text, sample.num_tokens,
                                                       sample.finish_reason)], source=ARENA)
        store.finish_generation_run(run, "done")
        completion_ids.append(completion_id)
    pair_id = store.add_pair(*completion_ids, source=ARENA)
    pair = store.pair(pair_id)
    swapped = rng.random() < 0.5
    presentation_id = store.add_presentation(pair_id, annotator, swapped, time.time())
    left, right = (pair["text_b"], pair["text_a"]) if swapped else (pair["text_a"], pair["text_b"])
    return Presentation(presentation_id, pair_id, pair["prompt"], left, right, swapped, "arena")


def model_name(spec: str, checkpoint_id: str | None) -> str:
    return checkpoint_id or spec


def head_to_head(store: Store) -> list[tuple[str, str, float]]:
    """(model i, model j, points for i) for every decided vote between answers of two different models (votes of
    excluded annotators aside)."""
    games = []
    excluded = {e["annotator"] for e in store.exclusions()}
    for vote in store.votes():
        if vote["choice"] not in ("a", "b", "tie", "both_bad") or vote["annotator"] in excluded:
            continue
        pair = store.pair(vote["pair_id"])
        a, b = model_name(pair["model_a"], pair["checkpoint_a"]), model_name(pair["model_b"], pair["checkpoint_b"])
        if a == b:
            continue
        points = {"a": 1.0, "b": 0.0}.get(vote["choice"], 0.5)
        games.append((a, b, points))
    return games


def bradley_terry(games: list[tuple[str, str, float]], iterations: int = 200) -> dict[str, float]:
    """Strengths s (geometric mean 1) maximising the Bradley-Terry likelihood; MM updates (Hunter 2004):
    s_i <- W_i / sum_j n_ij / (s_i + s_j), W_i = points won by i, n_ij = games between i and j."""
    models = sorted({m for a, b, _ in games for m in (a, b)})
    if not models:
        return {}
    wins = {m: 0.0 for m in models}
    pairs: dict[tuple[str, str], float] = {}
    for a, b, points in games:
        wins[a] += points
        wins[b] += 1 - points
        key = tuple(sorted((a, b)))
        pairs[key] = pairs.get(key, 0) + 1
    strength = {m: 1.0 for m in models}
    for _ in range(iterations):
        updated = {}
        for m in models:
            denominator = sum(n / (strength[a] + strength[b]) for (a, b), n in pairs.items() if m in (a, b))
            # a small pseudo-win keeps an undefeated or winless model finite
            updated[m] = (wins[m] + 0.1) / (denominator + 0.2 / (strength[m] + 1))
        scale = math.exp(sum(math.log(v) for v in updated.values()) / len(updated))
        strength = {m: v / scale for m, v in updated.items()}
    return strength


def leaderboard(store: Store, bootstrap: int = 200, seed: int = 0) -> list[dict]:
    """Models ranked by Bradley-Terry strength (as an Elo-like rating), with a 95% bootstrap interval."""
    games = head_to_head(store)
    if not games:
        return []
    fitted = bradley_terry(games)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {m: [] for m in fitted}
    for _ in range(bootstrap):
        resampled = bradley_terry([rng.choice(games) for _ in games], iterations=50)
        for m in fitted:
            samples[m].append(resampled.get(m, 1.0))
    counts: dict[str, int] = {m: 0 for m in fitted}
    for a, b, _ in games:
        counts[a] += 1
        counts[b] += 1

    def rating(s: float) -> float:
        return 1000 + 400 * math.log10(s)  # Elo's scale: 400 points = 10:1 odds

    evaluations = _evaluations(store)
    rows = []
    for m, s in sorted(fitted.items(), key=lambda item: -item[1]):
        low, high = sorted(samples[m])[int(0.025 * bootstrap)], sorted(samples[m])[int(0.975 * bootstrap) - 1]
        evaluation = evaluations.get(m, {})
        rows.append({"model": m, "rating": round(rating(s)), "ci_low": round(rating(low)),
                     "ci_high": round(rating(high)), "votes": counts[m],
                     "reward": evaluation.get("reward_tuned"), "kl": evaluation.get("kl")})
    return rows


def _evaluations(store: Store) -> dict[str, dict]:
    """The before/after evaluation saved with each policy checkpoint (reward-model score, KL to the reference)."""
    import json
    from pathlib import Path

    from rlhf.checkpoints import EVALUATION_FILE, POLICY_KINDS, list_checkpoints

    found = {}
    for meta in list_checkpoints(store, POLICY_KINDS):
        path = Path(meta["path"]) / EVALUATION_FILE
        if path.is_file():
            found[meta["id"]] = json.loads(path.read_text())
    return found
