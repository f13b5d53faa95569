"""One round of the RLHF loop, driven through the app in a real browser as a person would take it.

Shared by the end-to-end browser test (tests/test_loop_browser.py, tiny model) and the walkthrough timing
(benchmarks/walkthrough.py, the 135M model): same clicks and keys, different sizes. Each step returns how long the
app took, so the benchmark can report where a newcomer's time goes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class LoopSizes:
    prompts: list[str]
    max_new_tokens: int
    ppo_steps: int
    ppo_batch: int
    ppo_mini: int
    ppo_tokens: int
    num_candidates: int = 2
    load_walkthrough: bool = False
    """Press *Load walkthrough prompts* (prompts and candidates) instead of typing `prompts`."""
    timeout_ms: int = 120_000
    """Per wait; the 135M model on a CPU needs minutes for training."""


@dataclass
class RoundTimes:
    seconds: dict[str, float] = field(default_factory=dict)
    votes: int = 0
    queue_line: str = ""
    """The Prefer tab's progress line when labelling started: says which order the queue is in."""
    reveals: list[str] = field(default_factory=list)
    """What the page said after each vote (models, and the reward model's guess once there is one)."""

    def step(self, name: str, started: float) -> None:
        self.seconds[name] = round(time.perf_counter() - started, 2)
        print(f"loop: {name}: {self.seconds[name]} s", flush=True)


def prefer_longer_or_shorter(prefer: str):
    """A scripted annotator: which key to press for two shown answers (1 = left, 2 = right)."""

    def choose(left: str, right: str) -> str:
        left_size, right_size = (len(left.split()), len(left)), (len(right.split()), len(right))
        if left_size == right_size:
            return "3"  # tie
        return "1" if (left_size < right_size) == (prefer == "shorter") else "2"

    return choose


def set_number(page, elem_id: str, value) -> None:
    """A gr.Number, or a gr.Slider's number box."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Tab")


def create_project(page, name: str) -> None:
    page.fill("#new-project input, #new-project textarea", name)
    page.click("#create-project")
    page.wait_for_function(f"() => document.querySelector('#project input').value === {name!r}")


def generate(page, sizes: LoopSizes, times: RoundTimes) -> None:
    page.get_by_role("tab", name="Generate").click()
    if sizes.load_walkthrough:
        page.click("#load-walkthrough")
        page.wait_for_function("(n) => document.querySelector('#num-candidates input[type=number]').value == n",
                               arg=sizes.num_candidates)
    else:
        page.fill("#prompts textarea", "\n".join(sizes.prompts))
        set_number(page, "num-candidates", sizes.num_candidates)
    page.fill("#max-new-tokens input[type=number]", str(sizes.max_new_tokens))
    page.press("#max-new-tokens input[type=number]", "Tab")
    started = time.perf_counter()
    page.click("#generate")
    expected = sizes.num_candidates * len(sizes.prompts)
    page.wait_for_selector(f"#generate-status:has-text('Stored {expected} candidates')",
                           timeout=sizes.timeout_ms)
    times.step("generate", started)


def label_all(page, annotator: str, choose, times: RoundTimes, timeout_ms: int) -> None:
    """Label every pair the queue offers, with the keyboard, until it says nothing is left."""
    page.get_by_role("tab", name="Prefer").click()
    page.fill("#annotator textarea", annotator)
    started = time.perf_counter()
    page.press("#annotator textarea", "Enter")
    # a pair on screen, and the progress line rendered (not Gradio's "processing | 0.3s" while it waits)
    page.wait_for_function("() => { const s = document.querySelector('#prefer-progress').innerText.trim();"
                           " return document.querySelector('#pair-prompt textarea').value !== ''"
                           " && /^\\d+ labelled/.test(s); }", timeout=timeout_ms)
    page.locator("#guidelines").click()  # out of the text fields: the keys vote
    times.queue_line = page.inner_text("#prefer-progress")
    today = int(times.queue_line.split(" yours today")[0].split()[-1])
    while "Nothing left" not in page.inner_text("#prefer-progress"):
        key = choose(page.input_value("#pair-left textarea"), page.input_value("#pair-right textarea"))
        page.keyboard.press(key)
        today += 1
        # the whole answer has rendered once the progress line counts this vote (it updates with the next pair)
        page.wait_for_function("(n) => document.querySelector('#prefer-progress').innerText"
                               ".includes(n + ' yours today')", arg=today, timeout=timeout_ms)
        times.votes += 1
        times.reveals.append(page.inner_text("#vote-reveal"))
    times.step("label (app time)", started)


def train(page, kind: str, sizes: LoopSizes, times: RoundTimes, start_from: str | None = None) -> str:
    """Start a reward-model or PPO run in the Train tab, wait for its checkpoint; returns the checkpoint id."""
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-kind").get_by_text("Reward model" if kind == "reward" else "PPO", exact=True).click()
    if kind == "ppo":
        for elem_id, value in [("ppo-steps", sizes.ppo_steps), ("ppo-batch", sizes.ppo_batch),
                               ("ppo-mini", sizes.ppo_mini), ("ppo-tokens", sizes.ppo_tokens)]:
            set_number(page, elem_id, value)
        if start_from:
            page.locator("#train-model input").fill(start_from)
            page.locator("#train-model input").press("Enter")
        page.wait_for_function("(steps) => document.querySelector('#cli-equivalent textarea').value"
                               ".includes('--steps ' + steps)", arg=str(sizes.ppo_steps))
    started = time.perf_counter()
    page.click("#train-start")
    page.wait_for_selector(f"#train-status:has-text('{kind} on project')", timeout=sizes.timeout_ms)
    done = "Before and after" if kind == "ppo" else "saved"
    page.wait_for_selector(f"#train-status:has-text('{done}'), #train-status:has-text('Failed')",
                           timeout=sizes.timeout_ms * 5)
    times.step("train reward model" if kind == "reward" else "PPO + evaluation", started)
    status = page.inner_text("#train-status")
    assert "Failed" not in status, status
    if kind == "ppo":  # the drift line and the verdict in words, as the CLI prints them
        from rlhf.evaluate import VERDICTS

        assert "drift detector" in status or "Drift" in status, status
        assert any(text.split(":")[0] in status for text in VERDICTS.values()), status
    return status.split("Checkpoint ")[1].split(" saved")[0].strip("`")


def arena(page, policy_path: str, opponent: str | None, prompt: str, times: RoundTimes, timeout_ms: int) -> None:
    """Ask the newest policy and an opponent (default: the base model) one prompt, vote with the keyboard."""
    page.get_by_role("tab", name="Chat").click()
    accordion = page.get_by_text("Compare two models (arena)", exact=False)
    if not page.locator("#arena-ask").is_visible():
        accordion.click()
    if opponent:
        page.locator("#arena-model-a input").fill(opponent)
        page.locator("#arena-model-a input").press("Enter")
    page.locator("#arena-model-b input").fill(policy_path)
    page.locator("#arena-model-b input").press("Enter")
    page.fill("#arena-annotator textarea", "arena-voter")
    page.fill("#arena-prompt textarea", prompt)
    started = time.perf_counter()
    page.click("#arena-ask")
    page.wait_for_selector("#arena-status:has-text('Which answer is better?')", timeout=timeout_ms)
    page.locator("#arena-status").click()
    page.keyboard.press("1")
    page.wait_for_selector("#arena-status:has-text('recorded (left better)')", timeout=timeout_ms)
    times.step("arena", started)


def leaderboard(page, policy_id: str, timeout_ms: int) -> str:
    page.click("#refresh-leaderboard")
    page.wait_for_selector(f"#leaderboard:has-text('{policy_id}')", timeout=timeout_ms)
    return page.inner_text("#leaderboard")


def next_round(page, policy_id: str, times: RoundTimes, timeout_ms: int) -> None:
    """Start the next round; it samples from the newest policy, `policy_id`."""
    page.get_by_role("tab", name="Train").click()
    accordion = page.get_by_text("Rounds: generate", exact=False)
    if not page.locator("#next-round").is_visible():
        accordion.click()
    started = time.perf_counter()
    page.click("#next-round")
    page.wait_for_function("(id) => { const s = document.querySelector('#next-round-status').innerText;"
                           " return s.includes('Round started') && s.includes(id); }", arg=policy_id,
                           timeout=timeout_ms * 5)
    times.step("next round (candidates from the new policy)", started)
    page.click("#refresh-rounds")
