"""The walkthrough, timed: a first-time visitor's path on the bundled SmolLM2-135M, in a real Chromium, on this CPU.

Start here -> create the two opossum projects -> Generate (walkthrough prompts, 3 candidates) -> Prefer (every pair,
with the keyboard, by a scripted annotator that follows the tutor's "short and clear" guideline) -> Train the reward
model (defaults) -> PPO (10 steps, the walkthrough's setting; other settings the Train tab's defaults) and its
before/after evaluation -> the arena (base vs tuned, one vote). The same clicks as the end-to-end browser test
(tests/browser_loop.py), on the real model.

What it measures is the app's time: a person also reads each pair; `--seconds-per-vote` (default 8) adds an estimate
of that to the total, reported separately. Prints figures and writes benchmarks/results/walkthrough.json.

    flock /tmp/rlhf-bench.lock .venv/bin/python benchmarks/walkthrough.py
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ["RLHF_HOME"] = tempfile.mkdtemp(prefix="rlhf-bench-walkthrough-")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("RLHF_MODEL", None)  # the bundled model, as a visitor gets it
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ppo-steps", type=int, default=10, help="PPO steps (the walkthrough says 10)")
    parser.add_argument("--seconds-per-vote", type=float, default=8.0, help="a person's reading time per pair")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "walkthrough.json")
    args = parser.parse_args()

    import torch
    from playwright.sync_api import sync_playwright

    from browser_loop import LoopSizes, RoundTimes, arena, generate, label_all, prefer_longer_or_shorter, train
    from conftest import CHROMIUM, CHROMIUM_ARGS, free_port
    from rlhf.config import PPOConfig
    from rlhf.models import ensure_bundled_cache
    from rlhf.store import Store
    from rlhf.ui import build_demo
    from rlhf.walkthrough import CANDIDATES, PROMPTS

    ensure_bundled_cache()  # a Space converts the GGUF once at its first start; not part of a visitor's time
    ppo = PPOConfig()
    sizes = LoopSizes(prompts=PROMPTS, max_new_tokens=128, num_candidates=CANDIDATES, load_walkthrough=True,
                      ppo_steps=args.ppo_steps, ppo_batch=ppo.batch_size, ppo_mini=ppo.mini_batch_size,
                      ppo_tokens=ppo.max_new_tokens, timeout_ms=600_000)
    demo = build_demo()
    demo.queue()
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    times = RoundTimes()
    started = time.perf_counter()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(demo.local_url)
        page.click("#create-walkthrough")
        page.wait_for_function("() => document.querySelector('#project input').value === 'opossum-tutor'")
        generate(page, sizes, times)
        label_all(page, "walker", prefer_longer_or_shorter("shorter"), times, sizes.timeout_ms)
        reward_id = train(page, "reward", sizes, times)
        policy_id = train(page, "ppo", sizes, times)
        train_status = page.inner_text("#train-status")
        store = Store.open("opossum-tutor")
        arena(page, str(store.folder / "checkpoints" / policy_id), None, "What is an opossum?", times,
              sizes.timeout_ms)
        browser.close()
    app_seconds = time.perf_counter() - started
    demo.close()

    reading = times.votes * args.seconds_per_vote
    result = {
        "model": "bundled SmolLM2-135M-Instruct", "device": "cpu", "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "steps_seconds": times.seconds, "votes": times.votes, "app_seconds": round(app_seconds, 1),
        "assumed_seconds_per_vote": args.seconds_per_vote, "assumed_reading_seconds": reading,
        "total_minutes_with_reading": round((app_seconds + reading) / 60, 1),
        "reward_model": reward_id, "policy": policy_id, "ppo_steps": args.ppo_steps,
        "train_status": train_status,
    }
    print(json.dumps(result, indent=2))
    print(f"walkthrough: app time {app_seconds / 60:.1f} min for {times.votes} votes; with {args.seconds_per_vote:g} s "
          f"of reading a vote: {result['total_minutes_with_reading']} min")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
