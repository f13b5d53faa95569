"""The app's API through gradio_client against a real Gradio server (in-process, tiny model)."""

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from rlhf.store import Store


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_api_lists_generate_and_chat(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/generate", "/chat"} <= set(endpoints)


def test_generate_endpoint_stores_and_returns_candidates(client, tiny_model_dir):
    Store.open("api", create=True)
    table, status = client.predict(
        "api", "What is an opossum?\nWhy is the sky blue?", str(tiny_model_dir), 2, 8, 0.8, 0.95, 7,
        api_name="/generate",
    )
    assert table["headers"] == ["prompt", "candidate", "answer", "tokens", "finish"]
    assert [(row[0], row[1]) for row in table["data"]] == [
        ("What is an opossum?", 1), ("What is an opossum?", 2), ("Why is the sky blue?", 1),
        ("Why is the sky blue?", 2)]
    assert "Stored 4 candidates for 2 of 2 prompts" in status
    assert [c.text for c in Store.open("api").completions()] == [row[2] for row in table["data"]]


def test_generate_endpoint_reports_bad_input_and_stores_nothing(client, tiny_model_dir):
    Store.open("api", create=True)
    with pytest.raises(AppError, match="none given"):
        client.predict("api", "  \n ", str(tiny_model_dir), 2, 8, 0.8, 0.95, None, api_name="/generate")
    with pytest.raises(AppError, match="less than minimum value 0.05"):  # the slider's own bounds check
        client.predict("api", "Hi", str(tiny_model_dir), 2, 8, 0.0, 0.95, None, api_name="/generate")
    with pytest.raises(AppError, match="not a valid name"):
        client.predict("../etc", "Hi", str(tiny_model_dir), 2, 8, 0.8, 0.95, None, api_name="/generate")
    assert Store.open("api").counts()["completions"] == 0


def test_chat_endpoint_streams(client, tiny_model_dir):
    job = client.submit("Hi!", [], str(tiny_model_dir), "You are terse.", 24, 0.7, 0.95, api_name="/chat")
    answers = [history[-1]["content"][0]["text"] for _, history in job]
    assert len(answers) >= 2 and answers[-1].startswith(answers[0]) and len(answers[-1]) > len(answers[0])


def test_tuned_checkpoints_join_the_model_list_and_chat(client, tiny_model_dir):
    import dataclasses

    import torch

    from rlhf.config import PPOConfig
    from rlhf.ppo import RewardSource, train_ppo
    from rlhf.ui.common import model_choices

    store = Store.open("tuned", create=True)
    config = PPOConfig(steps=1, batch_size=2, mini_batch_size=2, max_new_tokens=4)
    meta = train_ppo(store, dataclasses.replace(config), str(tiny_model_dir),
                     RewardSource(lambda prompts, responses: torch.zeros(len(prompts)), "function:zero"), prompts=["Hi", "Yo"],
                     device="cpu")
    choices = model_choices("tuned")
    assert choices[-1] == (f"{meta['id']} (ppo)", meta["path"])
    job = client.submit("Hi!", [], meta["path"], "", 8, 0.7, 0.95, api_name="/chat")
    assert list(job)[-1][1][-1]["content"][0]["text"]  # the tuned policy answers


def test_serving_waits_for_a_slow_first_page_instead_of_exiting():
    """Gradio's localhost check gives up at the first request over 3 s, and `launch` then exits ("a shareable link
    must be created"): on a loaded machine the app's first page can take that long. `serve` asks again."""
    import http.server
    import threading
    import time

    from conftest import free_port
    from rlhf.ui import GRADIO_URL_OK, patient_url_ok

    started = time.monotonic()

    class SlowAtFirst(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            if time.monotonic() - started < 5:
                time.sleep(4)  # over Gradio's 3 s timeout
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), SlowAtFirst)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        assert GRADIO_URL_OK(url) is False  # Gradio's own check: the crash this guards against
        assert patient_url_ok(url, within_s=30) is True
        assert time.monotonic() - started >= 5
    finally:
        server.shutdown()
        server.server_close()
    # nothing listening: the check still fails, after the wait
    assert patient_url_ok(url, within_s=1) is False
