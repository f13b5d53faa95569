"""How fast the Prefer tab takes keyboard votes: 100 pairs labelled in a real Chromium, keys only.

Measures the app's own latency per vote (key press -> vote committed -> next pair on screen), which bounds how
fast a person can go; a person reading the answers adds their own seconds. Prints figures and writes
benchmarks/results/labelling.json.

    .venv/bin/python benchmarks/labelling.py [--pairs 100]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ["RLHF_HOME"] = tempfile.mkdtemp(prefix="rlhf-bench-labelling-")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100, help="pairs to label")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "labelling.json")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright
    from conftest import CHROMIUM, CHROMIUM_ARGS

    from rlhf.store import Store
    from rlhf.ui import build_demo

    store = Store.open("default", create=True)
    run = store.start_generation_run("bench", None, {})
    store.add_completions(run, [(f"prompt {i}", j, f"answer {j} to prompt {i}", 5, "stop")
                                for i in range(args.pairs) for j in range(2)], source="bench")
    demo = build_demo()
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=7862, prevent_thread_lock=True, quiet=True)
    latencies = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url)
        page.get_by_role("tab", name="Generate").click()  # the app opens on "Start here"
        page.get_by_role("tab", name="Prefer").click()
        page.fill("#annotator textarea", "bench")
        page.press("#annotator textarea", "Enter")
        page.wait_for_function("() => document.querySelector('#pair-prompt textarea').value.startsWith('prompt')")
        page.locator("#guidelines").click()
        started = time.perf_counter()
        for number in range(1, args.pairs + 1):
            key_at = time.perf_counter()
            page.keyboard.press("1" if number % 2 else "2")
            page.wait_for_selector(f"#vote-reveal:has-text('Vote {number} recorded')", timeout=60_000)
            latencies.append(time.perf_counter() - key_at)
        total = time.perf_counter() - started
        browser.close()
    demo.close()
    votes = len(Store.open("default").votes())
    result = {
        "pairs": args.pairs,
        "votes_stored": votes,
        "total_s": round(total, 2),
        "seconds_per_vote_median": round(statistics.median(latencies), 3),
        "seconds_per_vote_p95": round(sorted(latencies)[int(0.95 * len(latencies)) - 1], 3),
        "votes_per_minute_app_bound": round(60 * args.pairs / total, 1),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
