"""The app in a real Chromium (Debian's package, driven by Playwright; never `playwright install`)."""


import pytest

from conftest import ARTIFACTS
from rlhf.store import Store

pytestmark = pytest.mark.browser


def test_generate_shows_the_candidates(page):
    page.fill("#prompts textarea", "What is an opossum?")
    page.click("#generate")
    page.wait_for_selector("#generate-status:has-text('Stored 2 candidates')", timeout=60_000)
    table = page.locator("#candidates")
    assert table.locator("text=What is an opossum?").count() >= 2
    stored = Store.open("default").completions()
    assert len(stored) == 2 and all(c.prompt == "What is an opossum?" for c in stored)
    page.screenshot(path=str(ARTIFACTS / "generate.png"), full_page=True)


def test_generate_refuses_empty_prompts_with_a_message(page):
    page.fill("#prompts textarea", "   ")
    page.click("#generate")
    page.wait_for_selector("text=none given", timeout=30_000)
    assert Store.open("default").counts()["generation_runs"] == 0


def test_chat_reply_streams(page):
    page.get_by_role("tab", name="Chat").click()
    # Record every text the assistant's bubble shows, as the page renders it.
    page.evaluate(
        """() => {
        window.seenAnswers = [];
        const chat = document.querySelector('#chatbot');
        new MutationObserver(() => {
            const bots = chat.querySelectorAll('.bot');
            if (bots.length) window.seenAnswers.push(bots[bots.length - 1].innerText);
        }).observe(chat, {subtree: true, childList: true, characterData: true});
        }"""
    )
    page.fill("#chat-message textarea", "Tell me about opossums.")
    page.press("#chat-message textarea", "Enter")
    page.wait_for_function("() => window.seenAnswers.length > 0", timeout=60_000)
    page.wait_for_selector("#chatbot .bot", timeout=60_000)
    page.wait_for_timeout(3000)
    seen = [s.strip() for s in page.evaluate("window.seenAnswers") if s.strip()]
    distinct = list(dict.fromkeys(seen))
    assert len(distinct) >= 3, distinct  # the answer grew in several steps, not all at once
    assert len(distinct[-1]) > len(distinct[0])


def test_label_five_pairs_with_the_keyboard_and_undo_one(page):
    from rlhf.prefer import to_canonical
    from test_prefer import add_candidates

    store = Store.open("default")
    add_candidates(store, prompts=[f"prompt {i}" for i in range(8)])
    page.get_by_role("tab", name="Prefer").click()
    # the walkthrough's words: type your name, press Enter, and judge the pairs with the keys (no click between)
    page.fill("#annotator textarea", "alice")
    page.press("#annotator textarea", "Enter")
    page.wait_for_function("() => document.querySelector('#pair-prompt textarea').value.startsWith('prompt')")
    page.keyboard.press("1")
    page.wait_for_selector("#vote-reveal:has-text('Vote 1 recorded (left better)')", timeout=30_000)
    assert page.input_value("#annotator textarea") == "alice"  # the key voted; it was not typed into the name
    page.keyboard.press("u")
    page.wait_for_selector("#vote-reveal:has-text('Undid vote 1')", timeout=30_000)
    page.fill("#vote-comment textarea", "typing 1 2 3 u here votes nothing")
    assert store.votes() == []
    page.locator("#guidelines").click()  # leave the text field: shortcuts work again
    shown = ["a", "b", "tie", "both_bad", "a"]
    for number, key in enumerate(["1", "2", "3", "4", "1"], start=2):
        page.keyboard.press(key)
        page.wait_for_selector(f"#vote-reveal:has-text('Vote {number} recorded')", timeout=30_000)
    page.keyboard.press("u")
    page.wait_for_selector("#vote-reveal:has-text('Undid vote 6')", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "prefer.png"), full_page=True)

    votes = store.votes(include_undone=True)[1:]  # after the first vote, undone above
    assert len(votes) == 5 and [v["undone_at"] is not None for v in votes] == [False] * 4 + [True]
    assert [v["choice"] for v in votes] == [to_canonical(c, v["swapped"]) for c, v in zip(shown, votes)]
    assert votes[0]["comment"] == "typing 1 2 3 u here votes nothing"
    assert all(v["annotator"] == "guest:alice" and v["seconds_spent"] is not None for v in votes)
    assert "4 yours today" in page.inner_text("#prefer-progress")


def test_quality_panel_and_export_button(page):
    from rlhf.prefer import next_pair, vote
    from test_prefer import add_candidates

    store = Store.open("default")
    add_candidates(store, prompts=["p1", "p2"])
    for who in ("alice", "bob"):
        vote(store, next_pair(store, who, overlap=1.0).presentation_id, "a", who)
    page.get_by_role("tab", name="Prefer").click()
    page.get_by_text("Quality", exact=True).click()
    page.click("#refresh-quality")
    page.wait_for_selector("#quality-summary:has-text('2 votes')", timeout=30_000)
    table = page.inner_text("#quality-table")
    assert "alice" in table and "bob" in table and "alpha" in table
    assert "Krippendorff's alpha" in page.inner_text("#quality-summary")  # one pair, one label: alpha undefined
    page.get_by_text("Export the preference dataset (owners)", exact=True).click()
    page.click("#export")
    page.wait_for_selector("text=Exported train 2", timeout=60_000)
    [export] = list((store.folder / "exports").iterdir())
    assert (export / "README.md").is_file()
    with page.expect_download() as download:
        page.locator("#export-file a").first.click()
    assert download.value.suggested_filename.endswith(".zip")


def test_train_tab_runs_ppo_live_stops_and_the_checkpoint_reaches_chat(page, tiny_model_dir):
    import shlex
    import subprocess
    import sys

    from rlhf.checkpoints import list_checkpoints
    from rlhf.config import RewardTrainConfig
    from rlhf.judges import annotate
    from rlhf.reward import train_reward_model
    from test_prefer import add_candidates

    store = Store.open("default")
    add_candidates(store, prompts=[f"prompt {i}" for i in range(6)], k=3)
    annotate(store, lambda prompt, a, b: "a" if len(a) < len(b) else "b", "judge:short", seed=0)
    train_reward_model(store, RewardTrainConfig(epochs=1), str(tiny_model_dir))

    page.get_by_role("tab", name="Train").click()
    page.locator("#train-kind").get_by_text("PPO", exact=True).click()
    for field, value in [("#ppo-steps", "400"), ("#ppo-batch", "4"), ("#ppo-mini", "2"), ("#ppo-tokens", "6")]:
        page.fill(f"{field} input", value)
        page.press(f"{field} input", "Tab")
    page.wait_for_function("() => document.querySelector('#cli-equivalent textarea').value.includes('--steps 400')")
    command = page.input_value("#cli-equivalent textarea")
    assert "python -m rlhf ppo --project default" in command and "--batch-size 4" in command

    page.click("#train-start")
    page.wait_for_function(  # the status line counts steps as they happen
        "() => { const m = document.querySelector('#train-status').innerText.match(/step (\\d+)\\/400/);"
        " return m && Number(m[1]) >= 3; }", timeout=60_000)
    assert page.locator("#train-samples").locator("text=prompt").count() >= 1  # the sample table fills
    page.wait_for_function("() => document.querySelector('#train-plot-1 canvas, #train-plot-1 svg') !== null")
    page.click("#train-start")  # a second start while the first runs
    page.wait_for_selector("text=Busy: ppo on project 'default'", timeout=30_000)
    page.click("#train-stop")
    page.wait_for_selector("#train-status:has-text('stopped')", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "train.png"), full_page=True)
    [checkpoint] = list_checkpoints(store, ("ppo",))
    assert 3 <= checkpoint["steps_done"] < 400

    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-model input").focus()
    page.wait_for_timeout(500)
    page.locator("#chat-model input").click()
    page.wait_for_selector(f"text={checkpoint['id']} (ppo)", timeout=10_000)

    args = shlex.split(command)
    assert args[:3] == ["python", "-m", "rlhf"]
    process = subprocess.Popen([sys.executable, *args[1:]], stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:
            if "step 1/400" in line:
                break  # the same run, from the command line
        else:
            raise AssertionError("the CLI equivalent did not start a run")
    finally:
        process.kill()
        process.wait()


def test_arena_compare_and_vote_with_the_keyboard(page, tiny_model_dir):
    import torch

    from rlhf.config import PPOConfig
    from rlhf.ppo import RewardSource, train_ppo

    store = Store.open("default")
    policy = train_ppo(store, PPOConfig(steps=1, batch_size=2, mini_batch_size=2, max_new_tokens=4), str(tiny_model_dir),
                       RewardSource(lambda p, r: torch.zeros(len(p)), "function:zero"), prompts=["a", "b"], device="cpu")
    page.get_by_role("tab", name="Chat").click()
    page.get_by_text("Compare two models (arena)", exact=False).click()
    page.locator("#arena-model-b input").fill(policy["path"])
    page.locator("#arena-model-b input").press("Enter")
    page.fill("#arena-annotator textarea", "alice")
    page.fill("#arena-prompt textarea", "What is an opossum?")
    page.click("#arena-ask")
    page.wait_for_selector("#arena-status:has-text('Which answer is better?')", timeout=60_000)
    page.locator("#arena-status").click()  # out of the text fields: the keys vote
    page.keyboard.press("2")
    page.wait_for_selector("#arena-status:has-text('Vote 1 recorded (right better)')", timeout=30_000)
    [stored] = store.votes()
    assert stored["source"] == "arena" and stored["annotator"] == "guest:alice"
    page.click("#refresh-leaderboard")
    page.wait_for_selector(f"#leaderboard:has-text('{policy['id']}')", timeout=30_000)


def test_walkthrough_creates_two_contexts_and_loads_its_prompts(page):
    page.get_by_role("tab", name="Start here").click()
    page.click("#create-walkthrough")
    page.wait_for_function("() => document.querySelector('#project input').value === 'opossum-tutor'")
    assert "biology tutor" in Store.open("opossum-tutor").guidelines()
    assert "meme bot" in Store.open("opossum-memes").guidelines()
    page.get_by_role("tab", name="Generate").click()
    page.click("#load-walkthrough")
    page.wait_for_function("() => document.querySelector('#prompts textarea').value.startsWith('What is an opossum?')")
    page.get_by_role("tab", name="Prefer").click()
    page.wait_for_selector("#guidelines:has-text('biology tutor')", timeout=30_000)  # the context is in view


def test_text_a_visitor_sends_is_shown_as_text_never_rendered(page, app_url):
    """An error quotes what it refused (here a project name) and Gradio renders a toast's message as HTML; a failed
    run's error lands in the Train tab's Markdown. Both must show the characters, not an image that makes every
    visitor's browser fetch an outside URL."""
    from rlhf.config import RLHFError
    from rlhf.jobs import Job, runner

    fetched = []
    page.on("request", lambda request: fetched.append(request.url) if "pixel" in request.url else None)
    page.get_by_role("tab", name="Prefer").click()
    project = page.locator("#project input")
    project.fill('<img src="/pixel.png" id="evil">')
    project.press("Enter")
    page.wait_for_selector("text=is not a valid name", timeout=30_000)
    assert page.locator("img#evil").count() == 0 and 'img src="/pixel.png"' in page.inner_text("body")

    def fail(job):
        raise RLHFError('prompts: prompt 1 (\'![x](/pixel.png) <img src="/pixel.png">\'...) is 9000 tokens')

    job = runner.start(Job(kind="reward", project="default", total_steps=1, command="python -m rlhf train-reward"),
                       fail)
    while job.status == "running":
        page.wait_for_timeout(100)
    page.get_by_role("tab", name="Train").click()
    page.wait_for_selector("#train-status:has-text('Failed')", timeout=30_000)
    status = page.locator("#train-status")
    assert status.locator("img").count() == 0 and "![x](/pixel.png)" in status.inner_text()
    assert fetched == []
