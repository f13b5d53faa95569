"""PPO: every math helper against a hand-computed or naive-loop reference, then real steps on the tiny model."""

import dataclasses
import math
import threading

import numpy as np
import pytest
import torch

from rlhf.config import ModelConfig, PPOConfig, RLHFError
from rlhf.models import load_model
from rlhf.ppo import (
    RewardSource,
    AdaptiveKLController, FixedKLController, PPORun, compute_gae, compute_rewards, first_true_indices, kl_guard_tripped,
    leave_one_out_baselines, resolve_lengths, reward_trend,
    logprobs_from_logits, masked_mean, masked_var, masked_whiten, policy_loss, programmatic_reward,
    response_mask_and_last_index, train_ppo, truncate_response, value_loss,
)
from rlhf.reward import audit_gains, step_evidence, within_noise_of_peak

EOS, PAD = 2, 0


def test_masked_statistics_match_numpy():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -100.0, -100.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    kept = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert masked_mean(values, mask).item() == pytest.approx(kept.mean())
    assert masked_var(values, mask).item() == pytest.approx(kept.var())  # biased, as numpy's default
    whitened = masked_whiten(values, mask)[mask]
    assert whitened.numpy() == pytest.approx((kept - kept.mean()) / np.sqrt(kept.var() + 1e-8), rel=1e-5)
    kept_mean = masked_whiten(values, mask, shift_mean=False)[mask]
    assert kept_mean.mean().item() == pytest.approx(kept.mean(), rel=1e-5)
    assert kept_mean.numpy() == pytest.approx((kept - kept.mean()) / np.sqrt(kept.var() + 1e-8) + kept.mean(),
                                              rel=1e-5)
    assert masked_mean(values, mask, axis=1).tolist() == pytest.approx([2.0, 4.5])
    with pytest.raises(ValueError, match="fewer than 2"):
        masked_whiten(values, torch.zeros_like(mask).index_fill_(1, torch.tensor([0]), True)[:1])
    with pytest.raises(ValueError, match="selects nothing"):
        masked_mean(values, torch.zeros_like(mask))


def test_eos_truncation_and_masks():
    responses = torch.tensor([[5, 6, EOS, 7, EOS], [5, 6, 7, 8, 9], [EOS, 3, 3, 3, 3]])
    assert first_true_indices(responses == EOS).tolist() == [2, 5, 0]
    assert truncate_response(responses, EOS, PAD).tolist() == [[5, 6, EOS, PAD, PAD], [5, 6, 7, 8, 9],
                                                               [EOS, PAD, PAD, PAD, PAD]]
    mask, last = response_mask_and_last_index(truncate_response(responses, EOS, PAD), EOS)
    assert last.tolist() == [2, 4, 0]  # a never-ending answer's last real token is its final one
    assert mask.int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_logprobs_from_logits():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]]])
    expected = [np.log(np.exp(2) / (1 + np.e + np.exp(2))), np.log(1 / (np.exp(3) + 2))]
    assert logprobs_from_logits(logits, torch.tensor([[2, 1]]))[0].tolist() == pytest.approx(expected, rel=1e-5)


def test_kl_penalty_per_token_and_score_at_the_last_real_token():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, 1.0], [-1.0, -1.0, -1.0, -1.0]])
    ref_logprobs = torch.tensor([[-1.5, -1.0, -0.5, 1.0], [-2.0, -2.0, -2.0, -2.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    rewards, non_score, kl = compute_rewards(torch.tensor([3.0, -1.0]), logprobs, ref_logprobs, mask,
                                             torch.tensor([2, 3]), kl_coef=0.1)
    assert kl.flatten().tolist() == pytest.approx([0.5, -1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    assert non_score.flatten().tolist() == pytest.approx([-0.05, 0.1, 0.0, 0.0, -0.1, -0.1, -0.1, -0.1])
    assert rewards.flatten().tolist() == pytest.approx([-0.05, 0.1, 3.0, 0.0, -0.1, -0.1, -0.1, -1.1])


def naive_gae(rewards, values, gamma, lam):
    """Textbook GAE on one unpadded sequence."""
    advantages, last = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(values) else 0.0
        last = rewards[t] + gamma * next_value - values[t] + gamma * lam * last
        advantages[t] = last
    return advantages, [a + v for a, v in zip(advantages, values)]


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.5)])
def test_gae_matches_a_naive_loop_per_sequence(gamma, lam):
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 6), torch.randn(3, 6)
    lengths = [6, 4, 1]
    mask = torch.arange(6).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    advantages, returns = compute_gae(rewards, values, mask, gamma, lam)
    for i, n in enumerate(lengths):
        expected_adv, expected_ret = naive_gae(rewards[i, :n].tolist(), values[i, :n].tolist(), gamma, lam)
        assert advantages[i, :n].tolist() == pytest.approx(expected_adv, rel=1e-5, abs=1e-6)
        assert returns[i, :n].tolist() == pytest.approx(expected_ret, rel=1e-5, abs=1e-6)
        assert advantages[i, n:].abs().sum() == 0 and returns[i, n:].abs().sum() == 0  # nothing after the end



def test_gae_credit_for_the_score_reaches_the_first_token_only_at_lam_1():
    # A critic that knows nothing yet (values 0, as the zero-initialised value head starts) and one score of 1 at the
    # last of 50 tokens: at lam 0.95 the first token's advantage is 0.95^49 = 0.08 of the score, so what an answer
    # says first (the subject named, the tone set) earns almost nothing; at lam 1 every token gets the whole score.
    rewards, values = torch.zeros(1, 50), torch.zeros(1, 50)
    rewards[0, -1] = 1.0
    mask = torch.ones(1, 50, dtype=torch.bool)
    decayed, _ = compute_gae(rewards, values, mask, gamma=1.0, lam=0.95)
    assert decayed[0, 0].item() == pytest.approx(0.95 ** 49) and decayed[0, -1].item() == pytest.approx(1.0)
    whole, _ = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert whole[0].tolist() == pytest.approx([1.0] * 50)

def test_policy_loss_by_hand():
    logprobs = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))  # ratios 1.5, 0.5, 1.0 against old logprob 0
    old = torch.zeros(1, 3)
    advantages = torch.tensor([[1.0, 1.0, -2.0]])
    mask = torch.tensor([[True, True, False]])
    loss, clipfrac, approxkl = policy_loss(logprobs, old, advantages, mask, cliprange=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(-0.5, -0.8) = -0.5; token 2 masked
    assert loss.item() == pytest.approx((-1.2 - 0.5) / 2)
    assert clipfrac.item() == pytest.approx(0.5)
    assert approxkl.item() == pytest.approx(0.5 * (np.log(1.5) ** 2 + np.log(0.5) ** 2) / 2)


def test_value_loss_by_hand():
    values, old = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    returns, mask = torch.tensor([[2.0, 1.0]]), torch.tensor([[True, True]])
    loss, clipfrac = value_loss(values, old, returns, mask, cliprange_value=0.5)
    # token 0: unclipped (1-2)^2 = 1, clipped (0.5-2)^2 = 2.25 -> 2.25; token 1: 1 and 1 -> 1
    assert loss.item() == pytest.approx(0.5 * (2.25 + 1.0) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_kl_controllers():
    fixed = FixedKLController(0.1)
    fixed.update(100.0, 16)
    assert fixed.value == 0.1
    adaptive = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    adaptive.update(12.0, 100)  # error clipped to +0.2: 0.1 * (1 + 0.2 * 100 / 10000)
    assert adaptive.value == pytest.approx(0.1 * 1.002)
    adaptive.update(12.0, 5000)  # * (1 + 0.2 * 0.5)
    assert adaptive.value == pytest.approx(0.1 * 1.002 * 1.1)
    adaptive.update(5.4, 1000)  # error -0.1: * (1 - 0.1 * 0.1)
    assert adaptive.value == pytest.approx(0.1 * 1.002 * 1.1 * 0.99)
    adaptive.update(0.0, 10000)  # error -0.2 over a whole horizon would more than halve it: it stops at the start
    assert adaptive.value == 0.1
    fast = AdaptiveKLController(0.1, target=6.0, horizon=16)
    for _ in range(3):
        fast.update(30.0, 16)  # far over budget: +20% a step with a horizon of one batch
    assert fast.value == pytest.approx(0.1 * 1.2**3)


def test_lengths_follow_the_labelled_answers():
    config = PPOConfig()
    assert (resolve_lengths(config, 128).max_new_tokens, resolve_lengths(config, 128).missing_eos_penalty) == (128, 0)
    assert resolve_lengths(config, None).max_new_tokens == 64  # no candidates yet
    shorter = resolve_lengths(dataclasses.replace(config, max_new_tokens=48), 128)  # cut before annotators' answers
    assert (shorter.max_new_tokens, shorter.missing_eos_penalty) == (48, 1.0)
    chosen = resolve_lengths(dataclasses.replace(config, missing_eos_penalty=0.5), 128)
    assert chosen.missing_eos_penalty == 0.5  # a value the user set stays


def test_kl_guard_needs_consecutive_steps_over_the_limit():
    assert not kl_guard_tripped([20.0, 20.0], limit=15.0, steps=3)  # not enough steps yet
    assert not kl_guard_tripped([20.0, 10.0, 20.0, 20.0], limit=15.0, steps=3)  # a dip below resets it
    assert kl_guard_tripped([1.0, 16.0, 17.0, 18.0], limit=15.0, steps=3)


def test_reward_trend_compares_the_first_and_last_quarter_of_the_steps_by_hand():
    # first quarter [0, 2]: mean 1, variance 2; last [6, 6]: mean 6, variance 0; se = sqrt(2/2 + 0/2) = 1
    trend = reward_trend([[0.0, 2.0], [1.0, 1.0], [5.0, 7.0], [6.0, 6.0]])
    assert trend["label"] == "rose" and trend["quarter"] == 1 and trend["steps"] == 4
    assert (trend["first"], trend["last"], trend["change"]) == (1.0, 6.0, 5.0)
    assert math.isclose(trend["se"], 1.0)
    assert reward_trend([[6.0, 6.0], [1.0, 1.0], [5.0, 7.0], [0.0, 2.0]])["label"] == "fell"
    # last [1, 3]: mean 2, variance 2: change 1 against se sqrt(1 + 1) = 1.41, within two standard errors
    flat = reward_trend([[0.0, 2.0], [1.0, 1.0], [1.0, 1.0], [1.0, 3.0]])
    assert flat["label"] == "flat" and math.isclose(flat["se"], math.sqrt(2))
    nine = reward_trend([[0.0, 0.0]] * 2 + [[5.0, 5.0]] * 5 + [[1.0, 1.0], [3.0, 3.0]])
    assert nine["quarter"] == 2 and (nine["first"], nine["last"]) == (0.0, 2.0)  # steps 1-2 against 8-9
    assert reward_trend([[1.0, 2.0]] * 3) is None  # under 4 steps: one batch's prompts, not a trend


def test_step_evidence_is_the_mean_gain_of_the_last_three_steps_with_its_standard_error():
    mean, error = step_evidence([[9.0, 9.0], [0.0, 2.0], [1.0, 3.0], [2.0, 4.0]])  # the first step is out of the window
    assert mean == pytest.approx(2.0)
    # gains 0,2,1,3,2,4: sample variance 2.0, standard error sqrt(2 / 6)
    assert error == pytest.approx(math.sqrt(2.0 / 6))
    assert step_evidence([[5.0]]) == (5.0, 0.0)


def test_leave_one_out_baselines_by_hand():
    scores = torch.tensor([1.0, 2.0, 6.0, -1.0, 1.0, 0.0])  # two prompts, three answers each
    baselines = leave_one_out_baselines(scores, 3)
    assert baselines.tolist() == [4.0, 3.5, 1.5, 0.5, -0.5, 0.0]  # e.g. (2 + 6) / 2, then (1 + 6) / 2
    # each group's scores less their baselines sum to 0: the update sees only how answers to a prompt differ
    assert (scores - baselines).view(2, 3).sum(1).tolist() == [0.0, 0.0]
    assert leave_one_out_baselines(torch.tensor([3.0, 5.0]), 2).tolist() == [5.0, 3.0]


def test_audit_gains_subtract_each_prompts_baseline():
    baselines = {"Why is the sky blue?": 1.5, "Name a prime.": -0.5}
    gains = audit_gains([2.0, 0.0, 0.25], ["Why is the sky blue?", "Name a prime.", "Unlabelled prompt"], baselines)
    assert gains == [0.5, 0.5, 0.25]  # an unlabelled prompt's baseline is the labelled answers' mean, 0


def test_the_published_step_is_the_newest_within_noise_of_the_peak():
    keep, peak = within_noise_of_peak(None, 0.2, 0.1)
    assert keep and peak == (0.2, 0.1)  # the first healthy step
    keep, peak = within_noise_of_peak(peak, 0.5, 0.1)
    assert keep and peak == (0.5, 0.1)  # a new best
    # 0.4 is within hypot(0.1, 0.1) = 0.141 of 0.5: not distinguishably worse, and newer, so it is kept
    keep, peak = within_noise_of_peak(peak, 0.4, 0.1)
    assert keep and peak == (0.5, 0.1)
    keep, peak = within_noise_of_peak(peak, 0.3, 0.1)  # 0.2 below the peak: worse, the newer step is not kept
    assert not keep and peak == (0.5, 0.1)


def test_config_rules():
    with pytest.raises(RLHFError, match="not a multiple"):
        PPOConfig(batch_size=6, mini_batch_size=4).validate()
    with pytest.raises(RLHFError, match="at least 2"):
        PPOConfig(batch_size=1, mini_batch_size=1).validate()
    with pytest.raises(RLHFError, match="divide batch_size 16"):
        PPOConfig(answers_per_prompt=3).validate()
    with pytest.raises(RLHFError, match="choose one"):
        PPOConfig(answers_per_prompt=4, prompt_baseline=True).validate()


def test_programmatic_reward_refuses_non_finite_values():
    score = programmatic_reward(lambda prompt, response: len(response))
    assert score(["p", "p"], ["ab", "abcd"]).scores.tolist() == [2.0, 4.0]
    with pytest.raises(RLHFError, match="finite float"):
        programmatic_reward(lambda prompt, response: float("nan"))(["p"], ["x"])


SMALL = PPOConfig(steps=2, batch_size=4, mini_batch_size=2, ppo_epochs=2, max_new_tokens=6, save_every=1, seed=3)
PROMPTS = ["What is an opossum?", "Hi", "Tell me a joke", "Why is the sky blue?", "Count to three"]


def length_reward(prompts, responses):
    return torch.tensor([len(r) / 10 for r in responses])


def test_one_step_changes_only_the_trainable_parameters_and_not_the_reference(tiny_model_dir):
    policy = load_model(ModelConfig(spec=str(tiny_model_dir), device="cpu", dtype="fp32"))
    run = PPORun(SMALL, policy, length_reward, PROMPTS)
    base = load_model(ModelConfig(spec=str(tiny_model_dir), device="cpu", dtype="fp32")).model
    trainable = {n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in run.model.named_parameters() if not p.requires_grad}
    head = run.value_head.weight.detach().clone()
    result = run.step()
    rollout = result.rollout  # the batch as sampled and scored before the update
    lora_b = [n for n, p in run.model.named_parameters() if p.requires_grad and "lora_B" in n]
    assert len(lora_b) == 7 * 2  # q, k, v, o, gate, up, down in each of the 2 layers: the check below sees them all
    moved = [n for n, p in run.model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert set(lora_b) <= set(moved)  # every LoRA B matrix moved (A too, once B is non-zero)
    assert frozen and all(torch.equal(p, frozen[n]) for n, p in run.model.named_parameters() if not p.requires_grad)
    assert not torch.equal(run.value_head.weight, head)
    with torch.no_grad():
        ref_after, _ = run.forward(rollout.queries, rollout.query_mask, rollout.responses, rollout.mask,
                                   reference=True)
        policy_after, _ = run.forward(rollout.queries, rollout.query_mask, rollout.responses, rollout.mask)
        inputs = torch.cat([rollout.queries, rollout.responses], 1)
        attention = torch.cat([rollout.query_mask, rollout.mask.long()], 1)
        positions = (attention.cumsum(1) - 1).clamp(min=0)
        base_logits = base(input_ids=inputs, attention_mask=attention, position_ids=positions).logits
        # recomputed in the step's own minibatch chunks: the same shapes, so the same rounding as the rollout's
        _, ref_logprobs_after, _, _ = run._logprobs_and_values(rollout.queries, rollout.query_mask, rollout.responses,
                                                               rollout.mask)
    context = rollout.queries.size(1)
    assert torch.equal(ref_logprobs_after, rollout.ref_logprobs)  # the reference is frozen
    base_response_logits = base_logits[:, context - 1:-1] / SMALL.temperature
    assert torch.allclose(ref_after, base_response_logits, atol=1e-5)  # and equal to the untouched base model
    assert not torch.allclose(policy_after, ref_after)  # while the policy moved
    assert result.metrics["time/rollout_s"] < result.metrics["time/step_s"]  # steps 1-3 are part of the step
    for key in ["objective/kl", "objective/entropy", "objective/scores", "objective/non_score_reward",
                "ppo/policy/approxkl_avg", "ppo/policy/clipfrac_avg", "ppo/val/var_explained", "ppo/eos_rate"]:
        assert key in result.metrics
    assert len(result.samples) == 4 and {"prompt", "response", "score", "kl"} <= set(result.samples[0])


def test_a_prompt_level_offset_in_the_reward_changes_nothing_once_its_baseline_is_subtracted(tiny_model_dir):
    """A reward model's level for a whole prompt carries no preference (it learns from pairs of answers to one
    prompt). With each prompt's baseline subtracted, a reward that adds a per-prompt offset trains exactly as the
    reward without it: same advantages, same update."""
    offsets = {prompt: 3.0 * i - 5.0 for i, prompt in enumerate(PROMPTS)}
    baselined = dataclasses.replace(SMALL, prompt_baseline=True)

    def offset_reward(prompts, responses):
        return length_reward(prompts, responses) + torch.tensor([offsets[p] for p in prompts])

    def one_step(config, reward_fn, baselines):
        policy = load_model(ModelConfig(spec=str(tiny_model_dir), device="cpu", dtype="fp32"))
        run = PPORun(config, policy, reward_fn, PROMPTS, baselines=baselines)
        return run.trainable_state, run.step()

    plain_state, plain = one_step(baselined, length_reward, None)
    offset_state, offset = one_step(baselined, offset_reward, offsets)
    assert offset.rollout.texts == plain.rollout.texts  # same seed, same answers
    assert offset.rollout.baselines.tolist() == [offsets[p] for p in offset.rollout.prompts]
    assert not torch.allclose(offset.rollout.scores, plain.rollout.scores)  # the raw scores differ by the offsets
    assert offset.metrics["objective/score_gain"] == pytest.approx(plain.metrics["objective/score_gain"], abs=1e-5)
    plain_weights, offset_weights = plain_state(), offset_state()
    assert all(torch.allclose(plain_weights[n], offset_weights[n], atol=1e-5) for n in plain_weights)
    # without the baseline the offsets do change the update (the check above can fail), and the default (off)
    # ignores the baselines it is given
    assert not SMALL.prompt_baseline
    ignored_state, ignored = one_step(SMALL, offset_reward, offsets)
    assert ignored.rollout.baselines.abs().sum() == 0
    moved = ignored_state()
    assert not all(torch.allclose(plain_weights[n], moved[n], atol=1e-5) for n in plain_weights)


def test_with_several_answers_per_prompt_each_answer_is_compared_with_the_others_to_its_prompt(tiny_model_dir):
    """Answers per prompt above 1: a step samples several answers to each of fewer prompts, and the update subtracts
    from each score the mean of the other answers to its prompt. A reward that adds a per-prompt offset then trains
    exactly as the reward without it, with no baselines given, while its training gain is still reported."""
    grouped = dataclasses.replace(SMALL, answers_per_prompt=2)
    offsets = {prompt: 3.0 * i - 5.0 for i, prompt in enumerate(PROMPTS)}

    def offset_reward(prompts, responses):
        return length_reward(prompts, responses) + torch.tensor([offsets[p] for p in prompts])

    def one_step(config, reward_fn):
        policy = load_model(ModelConfig(spec=str(tiny_model_dir), device="cpu", dtype="fp32"))
        run = PPORun(config, policy, reward_fn, PROMPTS)
        return run, run.trainable_state, run.step()

    run, plain_state, plain = one_step(grouped, length_reward)
    prompts = plain.rollout.prompts
    assert len(prompts) == 4 and prompts[0] == prompts[1] and prompts[2] == prompts[3] and prompts[0] != prompts[2]
    assert run.prompts_for_step(1)[0] not in prompts  # the next step goes on through the shuffled prompts
    assert len(set(plain.rollout.texts)) > 2  # sampled apart: the two answers to a prompt are not one answer twice
    _, offset_state, offset = one_step(grouped, offset_reward)
    assert offset.rollout.texts == plain.rollout.texts  # same seed, same answers
    assert not torch.allclose(offset.rollout.scores, plain.rollout.scores)
    plain_weights, offset_weights = plain_state(), offset_state()
    assert all(torch.allclose(plain_weights[n], offset_weights[n], atol=1e-5) for n in plain_weights)
    # the reported gain is the raw score (no prompt_baseline), not the always-zero gain over the group
    assert plain.metrics["objective/score_gain"] == pytest.approx(float(plain.rollout.scores.mean()))
    # one answer per prompt (the default): the offsets do change the update
    _, single_state, _ = one_step(dataclasses.replace(grouped, answers_per_prompt=1), offset_reward)
    _, single_plain_state, _ = one_step(dataclasses.replace(grouped, answers_per_prompt=1), length_reward)
    single, single_plain = single_state(), single_plain_state()
    assert not all(torch.allclose(single[n], single_plain[n], atol=1e-5) for n in single)


def test_resume_gives_the_same_state_as_an_uninterrupted_run(tiny_model_dir):
    from rlhf.store import Store

    straight_store = Store.open("straight", create=True)
    straight = train_ppo(straight_store, dataclasses.replace(SMALL, steps=4), str(tiny_model_dir), RewardSource(length_reward, "function:length"), prompts=PROMPTS, device="cpu")
    split_store = Store.open("split", create=True)
    stop = threading.Event()
    first = train_ppo(split_store, dataclasses.replace(SMALL, steps=4), str(tiny_model_dir), RewardSource(length_reward, "function:length"), prompts=PROMPTS, device="cpu",
                      on_step=lambda result: result.step == 2 and stop.set(), stop=stop)  # stopped half-way
    assert first["steps_done"] == 2
    resumed = train_ppo(split_store, dataclasses.replace(SMALL, steps=4), str(tiny_model_dir), RewardSource(length_reward, "function:length"), prompts=PROMPTS, resume=first["id"], device="cpu")
    assert resumed["id"] == first["id"] and resumed["steps_done"] == 4
    from safetensors.torch import load_file

    a = load_file(f"{straight['path']}/adapter/adapter_model.safetensors")
    b = load_file(f"{resumed['path']}/adapter/adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state_a = torch.load(f"{straight['path']}/trainer_state.pt", weights_only=False)
    state_b = torch.load(f"{resumed['path']}/trainer_state.pt", weights_only=False)
    assert torch.equal(state_a["value_head"]["weight"], state_b["value_head"]["weight"])
    log_a = [line for line in open(f"{straight['path']}/metrics.jsonl")]
    log_b = [line for line in open(f"{resumed['path']}/metrics.jsonl")]
    assert len(log_a) == len(log_b) == 4


def test_checkpoint_is_a_model_spec_that_samples(tiny_model_dir):
    from rlhf.config import SamplingConfig
    from rlhf.generate import encode_prompts, sample_batch
    from rlhf.store import Store

    meta = train_ppo(Store.open("p", create=True), dataclasses.replace(SMALL, steps=1), str(tiny_model_dir),
                     RewardSource(length_reward, "function:length"), prompts=PROMPTS, device="cpu")
    assert meta["kind"] == "ppo" and meta["base_model"] == str(tiny_model_dir) and meta["reward"] == "function:length"
    tuned = load_model(ModelConfig(spec=meta["path"], device="cpu", dtype="fp32"))
    assert tuned.checkpoint_id == meta["id"]
    [sample] = sample_batch(tuned, encode_prompts(tuned, ["Hi"], 4), SamplingConfig(max_new_tokens=4))
    assert sample.num_tokens == 4


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_model_dir):
    from rlhf.checkpoints import list_checkpoints
    from rlhf.store import Store

    calls = []

    def reward_that_breaks(prompts, responses):
        calls.append(1)
        return torch.full((len(prompts),), float("nan") if len(calls) > 1 else 1.0)

    store = Store.open("nan", create=True)
    with pytest.raises(RLHFError, match="loss became nan at step 2"):
        train_ppo(store, dataclasses.replace(SMALL, steps=3, save_every=1), str(tiny_model_dir), RewardSource(reward_that_breaks, "function:breaks"), prompts=PROMPTS, device="cpu")
    [kept] = list_checkpoints(store, ("ppo",))
    assert kept["steps_done"] == 1  # the last good state, loadable as a model spec
    assert load_model(ModelConfig(spec=kept["path"], device="cpu", dtype="fp32")).checkpoint_id == kept["id"]


def test_a_kl_guard_stop_publishes_the_newest_step_within_the_guard_even_without_selection(tiny_model_dir):
    """select_best=False publishes the last step of a run that ends normally; a run the KL guard stops is rolled
    back all the same, and its meta names the step it published."""
    from safetensors.torch import load_file

    from rlhf.store import Store

    # A budget no update can keep: the first step's answers come from the untouched policy (KL 0, within the
    # guard); the next step's come from updated weights, over a guard of 2.5 * 1e-6 nats, and one step over stops it.
    config = dataclasses.replace(SMALL, steps=4, lr=1e-2, target_kl=1e-6, kl_guard_steps=1, select_best=False)
    meta = train_ppo(Store.open("guard", create=True), config, str(tiny_model_dir),
                     RewardSource(length_reward, "function:length"), prompts=PROMPTS, device="cpu")
    assert meta["kl_guard"] is not None and meta["kl_guard"]["step"] == meta["steps_done"] == 2
    assert meta["kl_guard"]["rolled_back_to"] == meta["selected_step"] == 0
    assert meta["selected_by"].startswith("newest step within the KL guard")
    from rlhf.hub import run_health

    assert "The KL guard stopped the run at step 2" in run_health(meta) and "rolled back to step 0" in run_health(meta)
    published = load_file(f"{meta['path']}/adapter/adapter_model.safetensors")
    lora_b = [tensor for name, tensor in published.items() if "lora_B" in name]
    assert lora_b and all(torch.count_nonzero(tensor) == 0 for tensor in lora_b)  # step 0: LoRA's B starts at zero
    state = torch.load(f"{meta['path']}/trainer_state.pt", map_location="cpu", weights_only=True)
    assert any(torch.count_nonzero(t) for n, t in state["last_trainable"].items() if "lora_B" in n)  # kept for resume
    # without a guard stop, select_best=False publishes the last step
    plain = train_ppo(Store.open("plain", create=True), dataclasses.replace(config, target_kl=None),
                      str(tiny_model_dir), RewardSource(length_reward, "function:length"), prompts=PROMPTS,
                      device="cpu")
    assert plain["kl_guard"] is None and plain["selected_step"] == plain["steps_done"] == 4
    assert plain["selected_by"] == "last step"
