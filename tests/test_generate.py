import threading

import pytest
import torch
from transformers import TopPLogitsWarper

from rlhf.config import RLHFError, SamplingConfig
from rlhf.generate import (
    encode_prompts, generate_candidates, mean_kls, nucleus_filter, parse_prompts, read_prompts_file, sample_batch,
    split_response, spread,
    starter_prompts, stream_chat,
)

GREEDY = dict(temperature=1.0, top_p=1e-6)  # top_p this small keeps only the most likely token


def test_parse_prompts_skips_blank_and_comment_lines():
    assert parse_prompts("  What is an opossum?  \n\n# a comment\n\tWhy?\n") == ["What is an opossum?", "Why?"]
    for empty in ["", "   \n\t\n", "# only a comment"]:
        with pytest.raises(RLHFError, match="none given"):
            parse_prompts(empty)


def test_prompt_files(tmp_path):
    with pytest.raises(RLHFError, match="does not exist"):
        read_prompts_file(tmp_path / "missing.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(RLHFError, match="not UTF-8"):
        read_prompts_file(binary)


def test_starter_prompts():
    prompts = starter_prompts()
    assert len(prompts) >= 30 and len(set(prompts)) == len(prompts)
    assert "What is an opossum?" in prompts


def test_spread_takes_evenly_spaced_prompts_first_and_last_included():
    prompts = [f"p{i}" for i in range(10)]
    assert spread(prompts, 4) == ["p0", "p3", "p6", "p9"]  # round(i * 9 / 3)
    assert spread(prompts, 10) == prompts and spread(prompts[:3], 8) == ["p0", "p1", "p2"]


def test_mean_kls_by_hand():
    # two answers at two temperatures; an empty answer (None) does not count
    policy = [[-1.0, -2.0], None, [-3.0, -5.0]]
    reference = [[-2.0, -2.5], None, [-3.5, -4.0]]
    assert mean_kls(policy, reference, 2) == [(1.0 + 0.5) / 2, (0.5 - 1.0) / 2]
    assert mean_kls([None], [None], 2) == [0.0, 0.0]


def test_split_response_cuts_at_the_first_eos():
    eos = 2
    assert split_response([5, 6, 2, 0, 0], eos) == ([5, 6], 3, "stop")
    assert split_response([2, 7, 2], eos) == ([], 1, "stop")
    assert split_response([5, 6, 7], eos) == ([5, 6, 7], 3, "length")


def test_candidates_are_stored_with_model_and_sampling_parameters(store, tiny):
    sampling = SamplingConfig(num_candidates=3, max_new_tokens=8, seed=11, batch_size=4)
    seen = []
    result = generate_candidates(store, tiny, ["What is an opossum?", "Why is the sky blue?"], sampling,
                                 progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]  # batch_size 4 // 3 candidates = 1 prompt per batch
    completions = store.completions(result.run_id)
    assert [(c.prompt, c.candidate_index) for c in completions] == [
        (p, k) for p in ["What is an opossum?", "Why is the sky blue?"] for k in range(3)]
    assert all(c.num_tokens == 8 and c.finish_reason == "length" and c.model_spec == tiny.spec for c in completions)
    run = store.generation_run(result.run_id)
    assert run["status"] == "done" and run["checkpoint_id"] is None
    assert run["params"]["seed"] == 11 and run["params"]["temperature"] == 0.8 and run["params"]["dtype"] == "float32"


def test_same_seed_same_candidates_and_random_seed_is_recorded(store, tiny):
    sampling = SamplingConfig(max_new_tokens=12, seed=5)
    texts = [[c.text for c in store.completions(generate_candidates(store, tiny, ["Hi"], sampling).run_id)]
             for _ in range(2)]
    assert texts[0] == texts[1] and texts[0][0] != texts[0][1]
    unseeded = generate_candidates(store, tiny, ["Hi"], SamplingConfig(max_new_tokens=4))
    assert isinstance(unseeded.params["seed"], int)


def test_left_padding_does_not_change_answers(tiny):
    """A short prompt batched with a long one (so it is left-padded) gets the same greedy answer as alone."""
    sampling = SamplingConfig(max_new_tokens=10, **GREEDY)
    short, long = encode_prompts(tiny, ["Hi", "Tell me everything you know about opossums and marsupials"], 10)
    assert len(short) < len(long)
    alone = sample_batch(tiny, [short], sampling)
    batched = sample_batch(tiny, [long, short], sampling)
    assert batched[1] == alone[0]


@pytest.mark.parametrize(
    "prompts, message",
    [
        (["What is an opossum?", "   "], "prompt 2 is empty"),
        (["word " * 300], "exceeds the model's context of 256"),
        ([], "none given"),
    ],
)
def test_bad_prompts_leave_the_store_untouched(store, tiny, prompts, message):
    before = store.counts()
    with pytest.raises(RLHFError, match=message):
        generate_candidates(store, tiny, prompts, SamplingConfig(max_new_tokens=8))
    assert store.counts() == before


def test_bad_sampling_parameters_leave_the_store_untouched(store, tiny):
    before = store.counts()
    with pytest.raises(RLHFError, match="top_p"):
        generate_candidates(store, tiny, ["Hi"], SamplingConfig(top_p=0))
    assert store.counts() == before


def test_cancel_keeps_finished_prompts_only(store, tiny):
    cancel = threading.Event()
    result = generate_candidates(
        store, tiny, ["one", "two", "three"], SamplingConfig(max_new_tokens=6, batch_size=2),
        progress=lambda done, total: cancel.set(), cancel=cancel,
    )
    assert result.cancelled and result.prompts_done == 1
    assert {c.prompt for c in store.completions(result.run_id)} == {"one"}
    assert store.generation_run(result.run_id)["status"] == "cancelled"


def test_chat_streams_a_growing_answer(tiny):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]
    parts = list(stream_chat(tiny, messages, SamplingConfig(num_candidates=1, max_new_tokens=20, seed=1)))
    assert len(parts) >= 2
    assert all(later.startswith(earlier) for earlier, later in zip(parts, parts[1:]))
    assert len(parts[-1]) > len(parts[0])


def test_closing_the_chat_stream_stops_sampling(tiny):
    stop = threading.Event()
    stream = stream_chat(tiny, [{"role": "user", "content": "Hi"}], SamplingConfig(max_new_tokens=200), stop=stop)
    next(stream)
    stream.close()  # what Gradio's Stop does to the handler
    assert stop.is_set()
    assert not [t for t in threading.enumerate() if t.name == "rlhf-chat-sampler"]  # joined, not left running


def test_chat_refuses_an_empty_message(tiny):
    with pytest.raises(RLHFError, match="empty"):
        next(stream_chat(tiny, [{"role": "user", "content": "  "}], SamplingConfig(num_candidates=1)))


def test_nucleus_filter_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = ~torch.isinf(nucleus_filter(logits, top_p=0.75, candidates=2))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reach 0.75: the rest is cut
    kept = ~torch.isinf(nucleus_filter(logits, top_p=0.85, candidates=2))  # nucleus beyond the 2 candidates
    assert kept.tolist() == [[True, True, True, False]]
    assert (~torch.isinf(nucleus_filter(logits, top_p=1e-6))).tolist() == [[True, False, False, False]]


@pytest.mark.parametrize("scale", [1.0, 8.0, 30.0])  # flat (full-sort path) to peaked (top-k path) distributions
@pytest.mark.parametrize("top_p", [0.3, 0.9, 0.95])
def test_nucleus_filter_matches_transformers(scale, top_p):
    torch.manual_seed(1)
    logits = torch.randn(4, 5000) * scale
    ours = nucleus_filter(logits, top_p, candidates=64)
    reference = TopPLogitsWarper(top_p)(None, logits.clone())
    assert torch.equal(ours, reference)
