"""Reliability of vote collection against a real server: concurrent clients, double votes, a killed server, and
untrusted text in a real browser.

Servers here are real `python -m rlhf serve` subprocesses (the deployed configuration, with its queue concurrency)
on 127.0.0.1, or the in-process `app_url` server for the browser test. No mocks: every vote goes through
gradio_client (or Chromium) into SQLite, and is checked there with the library.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from gradio_client import Client

from rlhf.store import Store
from conftest import REPO, free_port

ARTIFACTS = REPO / "test-artifacts"
CHOICES = ("a", "b", "tie", "both_bad", "skip")


# helpers --------------------------------------------------------------------------------------------------------------
def seed_project(root: Path, name: str, prompts: int, candidates: int, text=None, prompt_text=None) -> Store:
    """A project with `prompts` prompts of `candidates` candidates each: prompts * C(candidates, 2) pairs."""
    store = Store.open(name, create=True, root=root)
    run_id = store.start_generation_run("test", None, {})
    text = text or (lambda p, c: f"answer {c} to question {p}")
    prompt_text = prompt_text or (lambda p: f"question {p}?")
    rows = [(prompt_text(p), c, text(p, c), 4, "stop") for p in range(prompts) for c in range(candidates)]
    store.add_completions(run_id, rows, source="test")
    store.finish_generation_run(run_id, "done")
    return store


class Server:
    """`python -m rlhf serve` in a subprocess, on its own port and data directory."""

    def __init__(self, home: Path, model_dir: Path, log: Path):
        self.home, self.model_dir, self.log = home, model_dir, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "RLHF_HOME": str(home), "RLHF_MODEL": str(model_dir), "HF_HUB_OFFLINE": "1",
               "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
        self._log_file = open(log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rlhf", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO, env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
        )
        self._wait_ready(timeout=90)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "config", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing; what was committed must survive."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log_file.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log_file.close()


@contextmanager
def serve(home: Path, model_dir: Path, log: Path):
    server = Server(home, model_dir, log)
    try:
        yield server
    finally:
        server.stop()


def client_for(url: str) -> Client:
    # Plain HTTP on 127.0.0.1: no certificates to verify. With verification on, gradio_client builds a fresh SSL
    # context (loading the CA bundle) for every request, ~40 ms of CPU each: 20 clients would measure that instead.
    return Client(url, verbose=False, ssl_verify=False)


def next_pair(client: Client, project: str, annotator: str) -> dict:
    return client.predict(project, annotator, api_name="/next_pair")


def cast(client: Client, project: str, presentation_id: int, choice: str, annotator: str, comment: str = "") -> dict:
    return client.predict(project, presentation_id, choice, annotator, comment, api_name="/vote")


def live_votes(root: Path, project: str) -> list[dict]:
    return Store.open(project, root=root).votes()


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """One real server for the burst and double-vote tests (each uses its own project)."""
    home = tmp_path_factory.mktemp("reliability-home")
    with serve(home, tiny_model_dir, home.parent / "server.log") as running:
        yield running


# 1. a burst of concurrent clients ------------------------------------------------------------------------------------
CLIENTS = 20
VOTES_EACH = 50


def test_concurrent_burst_keeps_every_acknowledged_vote(server):
    project = "burst"
    # 100 prompts x 4 candidates = 600 pairs: at most 2 annotators decide a pair, so 1,000 votes need > 500 pairs.
    seed_project(server.home, project, prompts=100, candidates=4)
    clients = [client_for(server.url) for _ in range(CLIENTS)]
    start = threading.Barrier(CLIENTS + 1)

    def annotate(index: int) -> list[tuple[dict, dict, str]]:
        client, annotator = clients[index], f"annotator-{index:02d}"
        start.wait(timeout=60)
        acknowledged = []
        for n in range(VOTES_EACH):
            shown = next_pair(client, project, annotator)
            assert shown, f"{annotator}: nothing left after {n} votes"
            choice = CHOICES[(index + n) % len(CHOICES)]
            receipt = cast(client, project, shown["presentation_id"], choice, annotator, f"c{index}-{n}")
            acknowledged.append((shown, receipt, annotator))
        return acknowledged

    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(annotate, i) for i in range(CLIENTS)]
        start.wait(timeout=60)
        began = time.perf_counter()
        results = [f.result(timeout=240) for f in futures]
        seconds = time.perf_counter() - began

    acknowledged = [item for result in results for item in result]
    total = CLIENTS * VOTES_EACH
    rate = total / seconds
    print(f"\nvote burst: {CLIENTS} clients x {VOTES_EACH} votes (next_pair + vote each) = {total} votes "
          f"in {seconds:.1f} s: {rate:.1f} votes/s")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "vote_throughput.json").write_text(json.dumps({
        "clients": CLIENTS, "votes_per_client": VOTES_EACH, "votes": total, "seconds": round(seconds, 2),
        "votes_per_second": round(rate, 1), "requests_per_vote": 2, "server": "python -m rlhf serve (subprocess)",
        "cpus": os.cpu_count(),
    }, indent=2) + "\n")

    assert len(acknowledged) == total
    assert all(receipt["created"] for _, receipt, _ in acknowledged), "a first vote on a presentation was not new"
    acked_ids = [receipt["vote_id"] for _, receipt, _ in acknowledged]
    assert len(set(acked_ids)) == total, "two acknowledged votes share an id"

    stored = live_votes(server.home, project)
    assert len(stored) == total
    by_id = {v["id"]: v for v in stored}
    assert set(by_id) == set(acked_ids)
    for shown, receipt, annotator in acknowledged:
        row = by_id[receipt["vote_id"]]
        assert row["annotator"] == f"guest:{annotator}" and row["pair_id"] == shown["pair_id"]  # a typed name: a guest
        assert row["presentation_id"] == shown["presentation_id"] and row["choice"] == receipt["stored_choice"]
    per_annotator = {}
    for v in stored:
        per_annotator.setdefault(v["annotator"], set()).add(v["pair_id"])
    assert {a: len(p) for a, p in per_annotator.items()} == {f"guest:annotator-{i:02d}": VOTES_EACH
                                                             for i in range(CLIENTS)}


# 2. double votes -----------------------------------------------------------------------------------------------------
def test_same_presentation_voted_twice_sequentially_is_one_vote(server):
    project = "double-seq"
    seed_project(server.home, project, prompts=2, candidates=2)
    client = client_for(server.url)
    shown = next_pair(client, project, "ann")
    first = cast(client, project, shown["presentation_id"], "a", "ann")
    second = cast(client, project, shown["presentation_id"], "b", "ann")  # a double click, even a different button
    assert first["created"] is True and second["created"] is False
    assert second["vote_id"] == first["vote_id"]
    stored = live_votes(server.home, project)
    assert [v["id"] for v in stored] == [first["vote_id"]]
    assert stored[0]["choice"] == first["stored_choice"]  # the first answer stands
    assert Store.open(project, root=server.home).counts()["votes"] == 1


ROUNDS = 12


def test_same_presentation_voted_concurrently_is_one_vote(server):
    """A double click's two requests vote on one presentation at the same instant (one client: one session, so one
    guest name; a second browser could not vote under it)."""
    project = "double-race"
    seed_project(server.home, project, prompts=ROUNDS, candidates=2)
    client = client_for(server.url)
    clients = [client, client]
    outcomes = []
    for round_ in range(ROUNDS):
        shown = next_pair(clients[0], project, "ann")
        assert shown
        barrier = threading.Barrier(2)

        def both(client, choice):
            barrier.wait(timeout=30)
            try:
                return cast(client, project, shown["presentation_id"], choice, "ann")
            except Exception as error:  # noqa: BLE001 - reported below, with the round
                return error

        with ThreadPoolExecutor(2) as pool:
            receipts = list(pool.map(both, clients, ["a", "b"]))
        outcomes.append((round_, shown, receipts))

    # What is stored is right either way: one live vote per presentation, and it is the acknowledged one.
    stored = live_votes(root=server.home, project=project)
    assert len(stored) == ROUNDS
    assert len({v["presentation_id"] for v in stored}) == ROUNDS
    acked = {x["vote_id"] for _, _, receipts in outcomes for x in receipts if not isinstance(x, Exception)}
    assert acked == {v["id"] for v in stored}
    # And both requests are answered with that vote, as a sequential double vote is (not with a server error).
    failures = [(r, [repr(x) for x in receipts]) for r, _, receipts in outcomes
                if any(isinstance(x, Exception) for x in receipts)]
    assert not failures, (
        f"{len(failures)} of {ROUNDS} concurrent second votes on one presentation raised instead of returning the "
        f"first vote (server log: sqlite3.IntegrityError, UNIQUE constraint failed: votes.pair_id, votes.annotator): "
        f"{failures[:2]}")
    for round_, shown, (one, two) in outcomes:
        assert one["vote_id"] == two["vote_id"], round_
        assert sorted([one["created"], two["created"]]) == [False, True], round_


# 3. SIGKILL mid-burst ------------------------------------------------------------------------------------------------
KILL_CLIENTS = 4


def test_sigkill_mid_burst_loses_no_acknowledged_vote(tiny_model_dir, tmp_path):
    home = tmp_path / "kill-home"
    project = "crash"
    seed_project(home, project, prompts=60, candidates=4)
    log = tmp_path / "server.log"
    server = Server(home, tiny_model_dir, log)
    acknowledged: list[tuple[int, str]] = []
    lock = threading.Lock()
    stop = threading.Event()
    errors_after_kill = []

    def annotate(index: int) -> None:
        annotator = f"killer-{index}"
        try:
            client = client_for(server.url)
            while not stop.is_set():
                shown = next_pair(client, project, annotator)
                receipt = cast(client, project, shown["presentation_id"], CHOICES[index % 4], annotator)
                with lock:
                    acknowledged.append((receipt["vote_id"], annotator))
        except Exception as error:  # noqa: BLE001 - the server died under us: expected after the kill
            errors_after_kill.append(repr(error))

    try:
        threads = [threading.Thread(target=annotate, args=(i,), daemon=True) for i in range(KILL_CLIENTS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 80 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(acknowledged) >= 80, f"only {len(acknowledged)} votes in 60 s:\n{log.read_text()[-3000:]}"
        server.kill()  # mid-burst: the clients are still sending
        with lock:
            acked_at_kill = list(acknowledged)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "a client hung after the server was killed"
    finally:
        server.stop()
    with lock:
        acked = list(acknowledged)
    assert len(acked) >= len(acked_at_kill)

    # Straight after the crash, before anything reopens the database: every acknowledged vote is there.
    with sqlite3.connect(home / project / "store.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    stored = {v["id"]: v for v in live_votes(home, project)}
    missing = [(vote_id, who) for vote_id, who in acked
               if vote_id not in stored or stored[vote_id]["annotator"] != f"guest:{who}"]
    assert not missing, f"{len(missing)} acknowledged votes lost: {missing[:10]}"

    with serve(home, tiny_model_dir, log) as restarted:
        client = client_for(restarted.url)
        shown = next_pair(client, project, "after-restart")
        assert shown and shown["presentation_id"] > 0
        receipt = cast(client, project, shown["presentation_id"], "a", "after-restart")
        assert receipt["created"] is True
        assert {v["id"] for v in live_votes(home, project)} >= set(stored) | {receipt["vote_id"]}
    with sqlite3.connect(home / project / "store.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    print(f"\nSIGKILL after {len(acked_at_kill)} acknowledged votes ({len(acked)} by the time clients stopped); "
          f"{len(stored)} stored; client errors after the kill: {len(errors_after_kill)}")


# 4. untrusted text in a real browser ---------------------------------------------------------------------------------
IMG = '<img src=x onerror="window.__xss=1">'
SCRIPT = "<script>window.__xss=2</script>"
# The reveal line is markdown with model names in code spans: a backtick in a name must not open a way out.
MODEL = f"model {IMG} {SCRIPT} ` <img src=y onerror=window.__xss=3> `"


@pytest.mark.browser
def test_untrusted_text_is_shown_as_text_not_run(app_url, rlhf_home):
    from playwright.sync_api import sync_playwright

    from conftest import CHROMIUM, CHROMIUM_ARGS

    Store.open("default", create=True)
    prompt = f"Explain {IMG} and {SCRIPT} please"
    texts = {0: f"left {IMG} end", 1: f"right {SCRIPT} end"}
    seed_project(rlhf_home, "default", prompts=1, candidates=2, text=lambda p, c: texts[c],
                 prompt_text=lambda p: prompt)
    # The model names are revealed after a vote: make them hostile too.
    store = Store.open("default")
    with sqlite3.connect(store.path) as conn:  # the raw database: no API renames a model
        conn.execute("UPDATE generation_runs SET model_spec = ?", (MODEL,))

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(app_url)
            page.get_by_role("tab", name="Prefer").click()
            page.fill("#annotator textarea", "xss-tester")
            page.press("#annotator textarea", "Enter")
            page.wait_for_function(
                "() => document.querySelector('#pair-prompt textarea')?.value.includes('please')", timeout=30_000)

            shown = {name: page.input_value(f"#pair-{name} textarea") for name in ("prompt", "left", "right")}
            assert shown["prompt"] == prompt
            assert sorted([shown["left"], shown["right"]]) == sorted(texts.values())
            assert page.evaluate("typeof window.__xss") == "undefined"
            for name in ("prompt", "left", "right"):
                assert page.locator(f"#pair-{name} img, #pair-{name} script").count() == 0

            page.click("#vote-a")
            page.wait_for_function(
                "() => document.querySelector('#vote-reveal')?.innerText.includes('recorded')", timeout=30_000)
            page.wait_for_timeout(500)  # let any injected image fail to load and fire its handler
            reveal = page.locator("#vote-reveal")
            assert reveal.locator("img, script, iframe").count() == 0
            assert f"model {IMG} {SCRIPT}" in reveal.inner_text()
            assert page.evaluate("typeof window.__xss") == "undefined"
            assert page.locator("img[src='x'], img[src='y']").count() == 0
            assert not dialogs
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "xss.png"), full_page=True)
        finally:
            browser.close()
    assert len(Store.open("default").votes()) == 1
