import random

import pytest

from rlhf.config import RLHFError
from rlhf.prefer import (
    guess_from_scores,
    least_certain_first,
    next_pair,
    pick_pair,
    progress,
    rank,
    to_canonical,
    vote,
)


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


# least certain first -----------------------------------------------------------------------------------------------
def test_least_certain_first_by_hand():
    rows = [{"id": i} for i in (1, 2, 3, 4, 5)]
    gaps = {1: 0.9, 2: -0.1, 3: 0.1, 4: -2.0}  # pair 5 has no score yet
    assert [r["id"] for r in least_certain_first(rows, gaps)] == [2, 3, 1, 4, 5]  # |gap|; equal gaps keep their order
    assert [r["id"] for r in least_certain_first(rows, {})] == [1, 2, 3, 4, 5]


def test_queue_policy_with_gaps_changes_only_the_new_pairs():
    old = {"id": 1, "gold_choice": None, "decided_by": 0}
    close = {"id": 5, "gold_choice": None, "decided_by": 0}
    second = {"id": 2, "gold_choice": None, "decided_by": 1}
    gold = {"id": 4, "gold_choice": "a", "decided_by": 0}
    rows = [old, second, gold, close]
    gaps = {1: 1.5, 5: -0.2}
    assert pick_pair(rows, 0.2, 0.1, FixedDraw(0.5), gaps=gaps) == (close, "new")
    assert pick_pair(rows, 0.2, 0.1, FixedDraw(0.5)) == (old, "new")  # no gaps: oldest first, as before
    assert pick_pair(rows, 0.2, 0.1, FixedDraw(0.05), gaps=gaps) == (gold, "gold")  # gold and overlap draws as before
    assert pick_pair(rows, 0.2, 0.1, FixedDraw(0.25), gaps=gaps) == (second, "overlap")


def test_reward_guess_by_hand():
    left = guess_from_scores("reward-1", 1.2, 0.4, "a")
    assert (left.preferred, round(left.gap, 6), left.agreed) == ("a", 0.8, True)
    assert left.line() == "Reward model preferred LEFT (gap 0.80) — you agreed."
    right = guess_from_scores("reward-1", -0.5, 0.25, "a")
    assert (right.preferred, right.gap, right.agreed) == ("b", 0.75, False)
    assert right.line() == "Reward model preferred RIGHT (gap 0.75) — you disagreed."
    assert guess_from_scores("reward-1", -0.5, 0.25, "b").agreed is True
    assert [guess_from_scores("r", 1.0, 0.0, c).agreed for c in ("tie", "both_bad", "skip")] == [None] * 3
    assert guess_from_scores("r", 1.0, 0.0, "skip").line().endswith("— you did not pick a side.")
    same = guess_from_scores("r", 0.3, 0.3, "a")
    assert (same.preferred, same.gap, same.agreed) == ("tie", 0.0, None)


OPOSSUM_ANSWERS = {  # fresh pairs to order: one clear call (praise vs none), near-duplicates the model scores alike
    "Fresh clear?": ("Opossums are wonderful animals, fresh.", "Cats are fine, fresh."),
    "Fresh close?": ("Opossums are wonderful animals, close.", "Opossums are wonderful animals, close!"),
    "Fresh middle?": ("Opossums are wonderful animals, middle.", "Cats are fine, opossums too, middle."),
}


@pytest.fixture(scope="module")
def reward_project(tiny_model_dir, tmp_path_factory):
    """A project with a tiny reward model trained on the opossum preference (tests/test_reward.py), then 3 fresh
    pairs nobody has labelled; each test copies it into its own data directory."""
    from test_reward import TOY_CONFIG, opossum_project

    from rlhf.reward import train_reward_model
    from rlhf.store import Store

    root = tmp_path_factory.mktemp("reward-home")
    store = opossum_project(Store.open("ranked", create=True, root=root))
    meta = train_reward_model(store, TOY_CONFIG, str(tiny_model_dir))
    run = store.start_generation_run("base-model", None, {})
    store.add_completions(run, [(prompt, j, text, 5, "stop") for prompt, answers in OPOSSUM_ANSWERS.items()
                                for j, text in enumerate(answers)], source="test")
    return root / "ranked", meta


@pytest.fixture
def ranked(reward_project, rlhf_home):
    import shutil

    from rlhf.store import Store

    folder, meta = reward_project
    shutil.copytree(folder, rlhf_home / folder.name)
    return Store.open(folder.name), meta["id"]


def fresh_pair_ids(store):
    return [p["id"] for p in store.open_pairs("alice") if p["decided_by"] == 0]


def test_uncertain_queue_scores_once_caches_and_puts_the_closest_call_first(ranked):
    from rlhf.prefer import newest_reward_model
    from rlhf.reward import RewardModel

    store, checkpoint = ranked
    fresh = fresh_pair_ids(store)
    assert len(fresh) == 3 and store.reward_scores(checkpoint) == {}
    shown = next_pair(store, "alice", overlap=0.0, gold_rate=0.0, rng=FixedDraw(0.9), order="uncertain")
    assert (shown.order, shown.reward_model, shown.kind) == ("uncertain", checkpoint, "new")

    # every completion of the new pairs was scored once, and the cache holds the reward model's normalised scores
    cached = store.reward_scores(checkpoint)
    pairs = [store.pair(i) for i in fresh]
    completions = [c for p in pairs for c in (p["completion_a_id"], p["completion_b_id"])]
    assert sorted(cached) == sorted(completions)
    reward_model = RewardModel.load(newest_reward_model(store)["path"])
    again = reward_model.score([p["prompt"] for p in pairs for _ in "ab"],
                               [p[f"text_{side}"] for p in pairs for side in "ab"])
    assert again.tolist() == pytest.approx([cached[c] for c in completions], abs=0.05)

    # the pair shown is the one with the smallest |score gap|, not the oldest
    gaps = {p["id"]: abs(cached[p["completion_a_id"]] - cached[p["completion_b_id"]]) for p in pairs}
    assert shown.pair_id == min(gaps, key=gaps.get) and shown.pair_id != fresh[0]
    assert store.pair(shown.pair_id)["prompt"] == "Fresh close?"
    assert gaps[shown.pair_id] < gaps[fresh[0]]  # the clear call is far from a toss-up

    # later requests read the cache: a score changed there (here by hand) changes the order, the model is not rerun
    clear = store.pair(fresh[0])
    store.add_reward_scores(checkpoint, {clear["completion_b_id"]: cached[clear["completion_a_id"]]})
    bob = next_pair(store, "bob", overlap=0.0, gold_rate=0.0, rng=FixedDraw(0.9), order="uncertain")
    assert bob.pair_id == fresh[0]
    assert store.reward_scores(checkpoint)[clear["completion_b_id"]] == cached[clear["completion_a_id"]]


def test_the_receipt_tells_whether_the_reward_model_agreed(ranked):
    from rlhf.prefer import reward_guess

    store, checkpoint = ranked
    for draw in (0.9, 0.4):  # shown as stored, then swapped: the guess follows the sides as the annotator saw them
        shown = next_pair(store, "alice", overlap=0.0, gold_rate=0.0, rng=FixedDraw(draw), order="uncertain")
        assert shown.swapped == (draw < 0.5)
        pair = store.pair(shown.pair_id)
        scores = store.reward_scores(checkpoint)
        left, right = scores[pair["completion_a_id"]], scores[pair["completion_b_id"]]
        if shown.swapped:
            left, right = right, left
        model_side = "a" if left > right else "b"
        other_side = "b" if model_side == "a" else "a"
        receipt = vote(store, shown.presentation_id, model_side, "alice")
        guess = receipt.reward_guess
        assert (guess.reward_model, guess.preferred, guess.agreed) == (checkpoint, model_side, True)
        assert guess.gap == pytest.approx(abs(left - right))
        assert guess.line().startswith(f"Reward model preferred {'LEFT' if model_side == 'a' else 'RIGHT'} (gap ")
        assert guess.line().endswith("you agreed.")
        assert reward_guess(store, pair, shown.swapped, other_side).agreed is False  # the other answer: disagreed
    # an opossum-praising answer against a plain one: the trained model prefers the praise, as the judge did
    clear = next_pair(store, "alice", overlap=0.0, gold_rate=0.0, rng=FixedDraw(0.9), order="uncertain")
    assert clear.left.startswith("Opossums") and clear.right.startswith("Cats")
    assert vote(store, clear.presentation_id, "b", "alice").reward_guess.agreed is False


def test_without_scores_or_without_a_reward_model_the_queue_is_plain(ranked, store):
    from rlhf.judges import annotate

    ranked_store, checkpoint = ranked
    oldest = next_pair(ranked_store, "alice", overlap=0.0, gold_rate=0.0, order="oldest")
    assert (oldest.order, oldest.reward_model, oldest.pair_id) == ("oldest", None, fresh_pair_ids(ranked_store)[0])
    assert ranked_store.reward_scores(checkpoint) == {}  # the plain order runs no model
    assert vote(ranked_store, oldest.presentation_id, "a", "alice").reward_guess is None  # nothing scored: no guess

    add_candidates(store)  # no reward model in this project
    shown = next_pair(store, "alice", overlap=0.0, gold_rate=0.0, order="uncertain")
    assert (shown.order, shown.reward_model, shown.prompt) == ("oldest", None, "What is an opossum?")
    assert vote(store, shown.presentation_id, "a", "alice").reward_guess is None
    with pytest.raises(RLHFError, match="order 'random' is not one of oldest, uncertain"):
        next_pair(store, "alice", order="random")

    # a scripted judge takes the same order (`python -m rlhf annotate --order uncertain`): closest call first
    assert annotate(ranked_store, lambda prompt, a, b: "a", "judge:first", limit=1, order="uncertain") == 1
    [judged] = [v for v in ranked_store.votes() if v["annotator"] == "judge:first"]
    assert ranked_store.pair(judged["pair_id"])["prompt"] == "Fresh close?"
    from rlhf.__main__ import build_parser

    cli = ["annotate", "--project", "p", "--judge", "judge.py:first"]
    assert build_parser().parse_args(cli).order == "oldest"
    assert build_parser().parse_args([*cli, "--order", "uncertain"]).order == "uncertain"


def test_prefer_tab_says_which_order_and_shows_the_guess(ranked):
    from rlhf.ui import prefer_tab

    store, checkpoint = ranked
    presentation_id, prompt, _, _, status = prefer_tab.show_next(store.name, "alice", "key", 0.0, 0.0, "uncertain")
    assert prompt == "Fresh close?" and f"queue: least certain first (reward model `{checkpoint}`)" in status
    *_, reveal, _ = prefer_tab.cast("a", store.name, "alice", "key", presentation_id, "", 0.0, 0.0, "uncertain")
    assert reveal.startswith("Vote ") and " Reward model preferred " in reveal
    assert reveal.endswith(("you agreed.", "you disagreed."))
    *_, plain = prefer_tab.show_next(store.name, "bob", "key", 0.0, 0.0, "oldest")
    assert "queue: oldest first" in plain


def test_every_queue_event_reads_the_queue_order_control():
    """The handlers take the order last among their inputs: wired to the wrong component, the queue silently runs
    oldest first (a ranking box once shadowed the radio)."""
    import gradio as gr

    from rlhf.ui import prefer_tab

    with gr.Blocks() as demo:
        prefer_tab.build(gr.Dropdown(["p"], value="p"), gr.BrowserState())
    queue_events = {}
    for event in demo.fns.values():
        name = getattr(event.fn, "__name__", "")
        name = "cast" if name.startswith("cast_") else name
        if name in ("show_next", "cast", "undo"):
            queue_events.setdefault(name, []).append(event.inputs[-1].elem_id)
    assert queue_events == {"show_next": ["queue-order"] * 2, "cast": ["queue-order"] * 5, "undo": ["queue-order"]}
