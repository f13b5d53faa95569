"""Active labelling: does "least certain first" reach a reward-model accuracy with fewer votes than random order?

The Prefer tab can put first the pairs the newest reward model is least sure about (smallest |score gap|,
`rlhf.prefer.least_certain_first`). This measures what that buys, on answers of the real bundled model labelled by a
scripted annotator.

Data (made once, then cached in .cache/active-labelling/; `--fresh` makes it again):
- the bundled SmolLM2-135M-Instruct samples 6 answers to each of the 64 starter prompts through `rlhf.generate`
  (at most 64 new tokens, temperature 0.8, top-p 0.95, seed 0, 4 prompts a batch, into a throwaway project); every
  two answers of a prompt are a pair: 15 a prompt, 960 pairs;
- a scripted judge (the one of the former benchmarks/round.py) labels every pair: the answer whose word count is
  closer to 25 wins, equal distance is a tie. A tie costs a vote and teaches nothing (rlhf.reward trains on decided pairs only).

The reward model is a documented cheaper VARIANT. Retraining rlhf.reward's model (LoRA on the 135M model through
TRL) after every batch does not fit: one training on ~300 pairs took 708 s on this 2-core CPU
(benchmarks/results/round.json, from the former round benchmark), and this protocol trains ~45 models per ordering and seed. Here the 135M body is
FROZEN: each answer is embedded once, as rlhf.reward's model reads it (the chat of `conversation_ids`, right padding,
the hidden state at the last real token), taking that token's state after every one of the 30 layers (30 x 576
features, fp32, standardised over all answers); only a linear head on them is retrained, from scratch after each
batch, on the decided pairs labelled so far: Bradley-Terry loss `-log sigmoid(score(chosen) - score(rejected))` plus
`l2/2 |w|^2`, full-batch L-BFGS. The final layer alone (rlhf.reward's read-out) reaches only ~0.69 held-out accuracy
on this judge even with every pool pair; all layers reach ~0.79 (word counts are only partly linear in frozen
features: a fine-tuned model learns to count, as rlhf.reward's LoRA model did, 0.89 in round.json). So the default
target is 0.75, about 95% of what this variant reaches with the whole pool; 0.8 is out of its reach. A LoRA-tuned
body learns more per vote, and how much the ordering helps it may differ.

Protocol, per seed (`--seeds`):
1. split by prompt: 16 prompts' decided pairs are the held-out test set, the other 48 prompts' 720 pairs the pool;
2. seed set: the same 16 random pool pairs for both orderings (`--seed-votes`);
3. repeat until the pool is labelled: train the head on the decided pairs labelled so far, record held-out pairwise
   accuracy (a score tie counts as wrong: `rlhf.reward.pairwise_accuracy`) against the votes spent, then acquire the
   next `--batch` (16) votes:
   - random: the next pairs of a seeded shuffle of the pool;
   - uncertain: `rlhf.prefer.least_certain_first` over the unlabelled pool under the head just trained (the Prefer
     queue's own rule).
Reported: the votes each ordering needs to first reach `--target` held-out accuracy (per seed; mean and median; the
ratio uncertain / random), mean accuracy at fixed budgets, and the mean curves. Writes
benchmarks/results/active_labelling.json and a plot, benchmarks/results/active_labelling.png.

    flock /tmp/rlhf-bench.lock .venv/bin/python benchmarks/active_labelling.py [--seeds 100] [--target 0.75]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE = REPO_ROOT / ".cache" / "active-labelling"
TARGET_WORDS = 25
NUM_CANDIDATES = 6
MAX_NEW_TOKENS = 64
HELD_OUT_PROMPTS = 16
BUDGETS = (32, 64, 128, 256, 384)
"""Votes at which each ordering's held-out accuracy is reported."""


def closer_to_target(prompt: str, a: str, b: str) -> str:
    """The answer whose word count is closer to 25 wins (the judge of the former benchmarks/round.py)."""
    distance_a, distance_b = abs(len(a.split()) - TARGET_WORDS), abs(len(b.split()) - TARGET_WORDS)
    if distance_a == distance_b:
        return "tie"
    return "a" if distance_a < distance_b else "b"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100, help="seeds (splits, seed sets, random orders)")
    parser.add_argument("--target", type=float, default=0.75, help="held-out accuracy to reach")
    parser.add_argument("--seed-votes", type=int, default=16, help="random votes both orderings start from")
    parser.add_argument("--batch", type=int, default=16, help="votes acquired between retrains")
    parser.add_argument("--l2", type=float, default=1.0, help="L2 penalty: mean loss + l2/2 |w|^2")
    parser.add_argument("--fresh", action="store_true", help="sample and embed the answers again instead of the cache")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "active_labelling.json")
    return parser.parse_args()


# 1. data: answers from the real model, pairs, the judge's labels; frozen features ----------------------------------
def make_answers() -> dict:
    """Sample the answers with rlhf.generate into a throwaway project; pair them; label the pairs with the judge."""
    from rlhf.config import ModelConfig, SamplingConfig
    from rlhf.generate import generate_candidates, starter_prompts
    from rlhf.models import load_model
    from rlhf.store import Store

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-active-") as home:
        os.environ["RLHF_HOME"] = home
        store = Store.open("active", create=True)
        loaded = load_model(ModelConfig())
        sampling = SamplingConfig(num_candidates=NUM_CANDIDATES, max_new_tokens=MAX_NEW_TOKENS, seed=0, batch_size=24)
        print(f"sampling {NUM_CANDIDATES} answers to each of {len(starter_prompts())} prompts ...", flush=True)
        generate_candidates(store, loaded, starter_prompts(), sampling, source="bench",
                            progress=lambda done, total: print(f"\r  {done}/{total} prompts", end="", flush=True))
        print()
        completions = store.completions()
        rows = store.open_pairs("nobody")  # every pair, with its two completion ids
    index = {c.id: i for i, c in enumerate(completions)}  # completion id -> row of the answers (and features)
    pairs = []
    for row in rows:
        first, second = completions[index[row["completion_a_id"]]], completions[index[row["completion_b_id"]]]
        pairs.append({"id": row["id"], "a": index[first.id], "b": index[second.id], "prompt": first.prompt,
                      "label": closer_to_target(first.prompt, first.text, second.text)})
    return {
        "answers": [{"prompt": c.prompt, "text": c.text, "words": len(c.text.split()),
                     "finish_reason": c.finish_reason} for c in completions],
        "pairs": pairs,
        "generate_s": time.perf_counter() - started,
        "sampling": {"num_candidates": NUM_CANDIDATES, "max_new_tokens": MAX_NEW_TOKENS, "temperature": 0.8,
                     "top_p": 0.95, "seed": 0, "batch_size": 24, "model": ModelConfig().spec,
                     "dtype": str(loaded.dtype)},
    }


def embed(answers: list[dict]):
    """(N, L * H): each answer's hidden state at the last real token of its chat, after every transformer layer, from
    the frozen 135M body (fp32), tokenised as rlhf.reward tokenises (`conversation_ids`, right padding)."""
    import torch

    from rlhf.config import ModelConfig
    from rlhf.models import resolve_source
    from rlhf.reward import conversation, conversation_ids, load_sequence_classifier, load_tokenizer, pad_right

    source = resolve_source(ModelConfig().spec)
    tokenizer = load_tokenizer(source)
    body = load_sequence_classifier(source, tokenizer.pad_token_id).model.eval()  # the reward model minus its head
    sequences = [conversation_ids(tokenizer, conversation(a["prompt"], a["text"]), 512) for a in answers]
    features = []
    with torch.inference_mode():
        for start in range(0, len(sequences), 16):
            input_ids, attention_mask = pad_right(sequences[start : start + 16], tokenizer.pad_token_id)
            hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                          output_hidden_states=True).hidden_states[1:]  # L x (B, T, H), the embeddings left out
            last = attention_mask.sum(dim=1) - 1  # right padding: the last real token of each row
            rows = torch.arange(len(last))
            features.append(torch.cat([h[rows, last] for h in hidden], dim=1).float())  # (B, L * H)
            print(f"\r  embedded {min(start + 16, len(sequences))}/{len(sequences)} answers", end="", flush=True)
    print()
    return torch.cat(features)


def load_data(fresh: bool) -> dict:
    """Answers and features, from the cache when there (sampling takes ~5 minutes, embedding ~1.5 on 2 cores)."""
    import torch

    key = f"k{NUM_CANDIDATES}-t{MAX_NEW_TOKENS}-w{TARGET_WORDS}"
    answers_path, features_path = CACHE / f"answers-{key}.pt", CACHE / f"features-{key}-all-layers.pt"
    CACHE.mkdir(parents=True, exist_ok=True)
    if answers_path.is_file() and not fresh:
        print(f"answers from {answers_path} (--fresh samples them again)")
        data = torch.load(answers_path)
    else:
        data = make_answers()
        torch.save(data, answers_path)
    if features_path.is_file() and not fresh:
        print(f"features from {features_path}")
        cached = torch.load(features_path)
    else:
        started = time.perf_counter()
        cached = {"features": embed(data["answers"]), "embed_s": time.perf_counter() - started}
        torch.save(cached, features_path)
    return {**data, **cached}


# 2. the reward model's head, trained on frozen features -------------------------------------------------------------
def train_head(features, chosen: list[int], rejected: list[int], l2: float):
    """Linear head w, b minimising mean(-log sigmoid(s(chosen) - s(rejected))) + l2/2 |w|^2 (the bias cancels in a
    difference: only w is learnt). Full-batch L-BFGS from zero, so the result depends on the labels alone."""
    import torch

    diff = (features[chosen] - features[rejected]).double()  # (P, H)
    w = torch.zeros(features.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], lr=1, max_iter=200, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.softplus(-(diff @ w)).mean() + 0.5 * l2 * w.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach().float()


def decided(pairs: list[dict]) -> tuple[list[int], list[int]]:
    """(chosen rows, rejected rows) of the decided pairs."""
    chosen = [p[p["label"]] for p in pairs if p["label"] in ("a", "b")]
    rejected = [p["b" if p["label"] == "a" else "a"] for p in pairs if p["label"] in ("a", "b")]
    return chosen, rejected


# 3. the protocol -----------------------------------------------------------------------------------------------------
def run_ordering(order: str, pool: list[dict], seed_set: list[dict], held_out: list[dict], features, args,
                 rng: random.Random) -> list[dict]:
    """Label the pool batch by batch in this order; the curve of (votes, held-out accuracy)."""
    from rlhf.prefer import least_certain_first
    from rlhf.reward import pairwise_accuracy

    test_chosen, test_rejected = decided(held_out)
    labelled = list(seed_set)
    unlabelled = [p for p in pool if p not in seed_set]
    if order == "random":
        rng.shuffle(unlabelled)
    curve = []
    while True:
        chosen, rejected = decided(labelled)
        w = train_head(features, chosen, rejected, args.l2) if chosen else features.new_zeros(features.shape[1])
        scores = features @ w  # (N,) one score per answer
        accuracy = pairwise_accuracy(scores[test_chosen], scores[test_rejected])
        curve.append({"votes": len(labelled), "decided": len(chosen), "accuracy": round(accuracy, 4)})
        if not unlabelled:
            return curve
        if order == "uncertain":
            gaps = {p["id"]: (scores[p["a"]] - scores[p["b"]]).item() for p in unlabelled}
            unlabelled = least_certain_first(unlabelled, gaps)
        labelled += unlabelled[: args.batch]
        unlabelled = unlabelled[args.batch :]


def votes_to_reach(curve: list[dict], target: float) -> int | None:
    """Votes at the first point at or above the target (None: never)."""
    return next((point["votes"] for point in curve if point["accuracy"] >= target), None)


def votes_to_stay(curve: list[dict], target: float) -> int | None:
    """Votes from which every later point stays at or above the target (a single lucky point does not count)."""
    below = [i for i, point in enumerate(curve) if point["accuracy"] < target]
    if not below:
        return curve[0]["votes"]
    return curve[below[-1] + 1]["votes"] if below[-1] + 1 < len(curve) else None


def accuracy_at(curve: list[dict], votes: int) -> float | None:
    """Accuracy of the last model trained on at most `votes` votes."""
    points = [p for p in curve if p["votes"] <= votes]
    return points[-1]["accuracy"] if points else None


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RLHF_MODEL_CACHE", str(REPO_ROOT / ".cache" / "test-models-v1"))
    sys.path.insert(0, str(REPO_ROOT))
    import torch

    data = load_data(args.fresh)
    raw = data["features"]
    features = (raw - raw.mean(dim=0)) / raw.std(dim=0).clamp_min(1e-6)  # standardised over all answers (unlabelled)
    # The same model in 384 dimensions instead of 17280: with an L2 penalty the optimal w lies in the span of the
    # answers' features, so training on U S of their SVD (F = U S V^T, scores F w = U S (V^T w)) gives the very same
    # scores (checked to 1e-4), ~80 times faster.
    u, s, _ = torch.linalg.svd(features.double(), full_matrices=False)
    features = (u * s).float()  # (N, N)
    pairs = data["pairs"]
    prompts = sorted({p["prompt"] for p in pairs})
    started = time.perf_counter()

    runs = []
    for seed in range(args.seeds):
        rng = random.Random(seed)
        test_prompts = set(rng.sample(prompts, HELD_OUT_PROMPTS))
        held_out = [p for p in pairs if p["prompt"] in test_prompts and p["label"] in ("a", "b")]
        pool = [p for p in pairs if p["prompt"] not in test_prompts]
        seed_set = rng.sample(pool, args.seed_votes)
        curves = {order: run_ordering(order, pool, seed_set, held_out, features, args, random.Random(1000 + seed))
                  for order in ("random", "uncertain")}
        run = {"seed": seed, "held_out_pairs": len(held_out), "pool_pairs": len(pool),
               "pool_ties": sum(p["label"] == "tie" for p in pool), "curves": curves,
               "votes_to_target": {o: votes_to_reach(c, args.target) for o, c in curves.items()},
               "votes_to_stay_at_target": {o: votes_to_stay(c, args.target) for o, c in curves.items()},
               "full_pool_accuracy": curves["random"][-1]["accuracy"]}
        runs.append(run)
        print(f"seed {seed:>2}: votes to {args.target}: random {run['votes_to_target']['random']}, uncertain "
              f"{run['votes_to_target']['uncertain']} (whole pool: {run['full_pool_accuracy']:.3f})", flush=True)

    summary = summarise(runs, args)
    grid = [point["votes"] for point in runs[0]["curves"]["random"]]  # one pool size: the same votes for every curve
    for run in runs:  # the per-seed curves, compactly: held-out accuracy at each vote count of `curve_votes`
        assert all([point["votes"] for point in curve] == grid for curve in run["curves"].values())
        run["curves"] = {order: [point["accuracy"] for point in curve] for order, curve in run["curves"].items()}
    answers = data["answers"]
    report = {
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version()},
        "settings": {
            "seeds": args.seeds, "target_accuracy": args.target, "seed_votes": args.seed_votes, "batch": args.batch,
            "l2": args.l2, "held_out_prompts": HELD_OUT_PROMPTS, "sampling": data["sampling"],
            "judge": f"closer to {TARGET_WORDS} words wins, equal distance is a tie",
            "reward_model": "VARIANT: the 135M body frozen; features = the fp32 hidden state at the last real token "
                            "of rlhf.reward's chat tokenisation after each of the 30 layers (17280 features, "
                            "standardised over all answers); only a linear head retrained from scratch after each "
                            "batch, Bradley-Terry loss + l2, full-batch L-BFGS; not rlhf.reward's LoRA training "
                            "(708 s per training on 2 CPUs, ~45 trainings per ordering and seed here)",
            "orderings": {"random": "a seeded shuffle of the pool",
                          "uncertain": "rlhf.prefer.least_certain_first under the head trained on the votes so far"},
            "votes": "every acquired pair costs one vote, ties included (a tie trains nothing)",
            "never_reached": "a seed that never reaches the target counts as needing the whole pool (720 votes) in "
                             "means, medians, ratios and votes saved",
            "curve_votes": grid,
        },
        "data": {"answers": len(answers), "pairs": len(pairs), "ties": sum(p["label"] == "tie" for p in pairs),
                 "answers_ended": sum(a["finish_reason"] == "stop" for a in answers),
                 "answer_words_mean": round(statistics.mean(a["words"] for a in answers), 1),
                 "answers_within_5_words_of_target": sum(abs(a["words"] - TARGET_WORDS) <= 5 for a in answers),
                 "generate_s": round(data["generate_s"], 1), "embed_s": round(data["embed_s"], 1)},
        "simulate_s": round(time.perf_counter() - started, 1),
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    plot(summary, args.out.with_suffix(".png"), args)
    print_summary(report)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def summarise(runs: list[dict], args) -> dict:
    pool_size = runs[0]["pool_pairs"]
    out = {}
    for order in ("random", "uncertain"):
        reached = [r["votes_to_target"][order] for r in runs]
        # a run that never reached the target counts as needing the whole pool (a lower bound on its cost)
        counted = [v if v is not None else pool_size for v in reached]
        curves = [r["curves"][order] for r in runs]
        steps = sorted({p["votes"] for c in curves for p in c})
        stay = [r["votes_to_stay_at_target"][order] for r in runs]
        mean_curve = [{"votes": v, "accuracy": round(statistics.mean(accuracy_at(c, v) for c in curves), 4)}
                      for v in steps]
        out[order] = {
            "votes_to_target": reached,
            "reached": sum(v is not None for v in reached),
            "votes_to_target_mean": round(statistics.mean(counted), 1),
            "votes_to_target_median": statistics.median(counted),
            "votes_to_stay_at_target": stay,
            "votes_to_stay_at_target_median": statistics.median(v if v is not None else pool_size for v in stay),
            "mean_curve_votes_to_target": votes_to_reach(mean_curve, args.target),
            "accuracy_at": {str(b): round(statistics.mean(accuracy_at(c, b) for c in curves), 4) for b in BUDGETS},
            "mean_curve": mean_curve,
        }
    pairs = list(zip(out["uncertain"]["votes_to_target"], out["random"]["votes_to_target"]))
    out["ratio_uncertain_to_random_mean"] = round(out["uncertain"]["votes_to_target_mean"]
                                                  / out["random"]["votes_to_target_mean"], 3)
    out["ratio_uncertain_to_random_median"] = round(out["uncertain"]["votes_to_target_median"]
                                                    / out["random"]["votes_to_target_median"], 3)
    reach = [out[o]["mean_curve_votes_to_target"] for o in ("uncertain", "random")]
    out["ratio_uncertain_to_random_mean_curve"] = round(reach[0] / reach[1], 3) if None not in reach else None
    saved = [(r or pool_size) - (u or pool_size) for u, r in pairs]  # votes uncertain saved, per seed (paired)
    out["votes_saved_mean"] = round(statistics.mean(saved), 1)
    out["votes_saved_standard_error"] = (round(statistics.stdev(saved) / len(saved) ** 0.5, 1) if len(saved) > 1
                                         else None)
    out["seeds_uncertain_fewer"] = sum((u or pool_size) < (r or pool_size) for u, r in pairs)
    out["seeds_equal"] = sum((u or pool_size) == (r or pool_size) for u, r in pairs)
    out["seeds_random_fewer"] = sum((u or pool_size) > (r or pool_size) for u, r in pairs)
    out["whole_pool_accuracy_mean"] = round(statistics.mean(r["full_pool_accuracy"] for r in runs), 4)
    return out


def print_summary(report: dict) -> None:
    s, settings = report["summary"], report["settings"]
    d = report["data"]
    print(f"\ndata: {d['pairs']} pairs ({d['ties']} ties) of {d['answers']} answers ({d['answers_ended']} ended, mean "
          f"{d['answer_words_mean']} words); sampling {d['generate_s']} s, embedding {d['embed_s']} s")
    print(f"head on the whole pool: held-out accuracy {s['whole_pool_accuracy_mean']:.3f} (mean of "
          f"{settings['seeds']} seeds)")
    print(f"\nvotes to reach {settings['target_accuracy']} held-out accuracy ({settings['seeds']} seeds, "
          f"{settings['seed_votes']} seed votes, batches of {settings['batch']}):")
    for order in ("random", "uncertain"):
        o = s[order]
        print(f"  {order:<10} mean {o['votes_to_target_mean']:>6}  median {o['votes_to_target_median']:>6}  "
              f"reached in {o['reached']}/{settings['seeds']} seeds")
        print(f"  {'':<10} mean curve reaches it at {o['mean_curve_votes_to_target']}; stays above it from "
              f"{o['votes_to_stay_at_target_median']} (median)")
    print(f"  uncertain / random: {s['ratio_uncertain_to_random_mean']} (means), "
          f"{s['ratio_uncertain_to_random_median']} (medians), {s['ratio_uncertain_to_random_mean_curve']} (mean "
          f"curves); fewer votes in {s['seeds_uncertain_fewer']} seeds, "
          f"equal in {s['seeds_equal']}, more in {s['seeds_random_fewer']}")
    print(f"  votes saved by uncertain, paired per seed: {s['votes_saved_mean']} +- {s['votes_saved_standard_error']} "
          "(mean +- standard error)")
    print("\nmean held-out accuracy at   " + "  ".join(f"{b:>5}" for b in BUDGETS) + " votes")
    for order in ("random", "uncertain"):
        print(f"  {order:<25} " + "  ".join(f"{s[order]['accuracy_at'][str(b)]:>5.3f}" for b in BUDGETS))


def plot(summary: dict, path: Path, args) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for order, label in (("random", "random order"), ("uncertain", "least certain first")):
        curve = summary[order]["mean_curve"]
        ax.plot([p["votes"] for p in curve], [p["accuracy"] for p in curve], label=label)
    ax.axhline(args.target, color="grey", linestyle=":", label=f"target {args.target}")
    ax.set_xlabel("votes")
    ax.set_ylabel("held-out pairwise accuracy (mean over seeds)")
    ax.set_title(f"Reward model: frozen 135M body, linear head ({args.seeds} seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
