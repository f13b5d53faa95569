"""Take README's screenshots: serve the app on the bundled model, use each tab in Chromium, save PNGs to docs/.

Run with `make screenshots` (needs Debian's chromium). Uses a temporary data directory.
"""

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["RLHF_HOME"] = tempfile.mkdtemp(prefix="rlhf-screenshots-")
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from playwright.sync_api import sync_playwright  # noqa: E402
from conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

from rlhf.ui import build_demo  # noqa: E402

DOCS = REPO / "docs"


def main() -> None:
    demo = build_demo()
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=7861, prevent_thread_lock=True, quiet=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.get_by_role("tab", name="Generate").click()  # the app opens on "Start here"
        page.fill("#prompts textarea", "What is an opossum?\nWrite a haiku about the first snow of winter.")
        page.fill("#max-new-tokens input[type=number]", "64")
        page.press("#max-new-tokens input[type=number]", "Enter")
        page.click("#generate")
        page.wait_for_selector("#generate-status:has-text('Stored')", timeout=300_000)
        page.screenshot(path=str(DOCS / "generate.png"), full_page=True)
        page.get_by_role("tab", name="Chat").click()
        page.fill("#system-prompt textarea", "You are a biology tutor.")
        page.fill("#chat-message textarea", "What is an opossum?")
        page.press("#chat-message textarea", "Enter")
        page.wait_for_selector("#chatbot .bot", timeout=300_000)
        page.wait_for_timeout(8000)
        page.screenshot(path=str(DOCS / "chat.png"), full_page=True)
        browser.close()
    demo.close()
    print(f"wrote {DOCS / 'generate.png'} and {DOCS / 'chat.png'}")


if __name__ == "__main__":
    main()
