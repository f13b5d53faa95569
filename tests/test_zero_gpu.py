"""ZeroGPU: the app's handlers under the real `spaces` package (tests/zero_gpu_harness.py says what is emulated),
and the process-level pieces they rely on (a lock inherited across fork, a stop signal seen across fork).

What only a ZeroGPU Space shows: that the worker really gets a GPU (here it computes on the CPU), the quota and
queueing of the device API, and timings.
"""

import importlib.util
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading

import pytest
from conftest import REPO

from rlhf.ui.common import StopSignals

FORK = multiprocessing.get_context("fork")  # how `spaces` starts its workers


def _get_in_child(registry, config, results) -> None:
    results.put(registry.get(config).spec)


def test_a_worker_forked_while_the_registry_is_busy_still_loads_models(tiny_model_dir):
    from rlhf.config import ModelConfig
    from rlhf.models import ModelRegistry

    registry = ModelRegistry()
    held, release = threading.Event(), threading.Event()

    def busy():  # another thread of the server, in the middle of a load
        with registry._lock:
            held.set()
            release.wait()

    thread = threading.Thread(target=busy)
    thread.start()
    held.wait()
    results = FORK.Queue()
    child = FORK.Process(target=_get_in_child,
                         args=(registry, ModelConfig(spec=str(tiny_model_dir), device="cpu", dtype="fp32"), results))
    child.start()
    try:
        assert results.get(timeout=120) == str(tiny_model_dir)  # with the parent's lock inherited held: forever
    finally:
        release.set()
        thread.join()
        child.join(10)
        if child.is_alive():
            child.kill()


def _wait_for_stop(signal, results) -> None:
    for _ in range(6000):
        if signal.is_set():
            results.put("stopped")
            return
        threading.Event().wait(0.01)
    results.put("never stopped")


def test_a_stop_click_in_the_server_reaches_a_forked_worker():
    signals = StopSignals()
    signal = signals.start("session", "generate")  # the handler, in the worker, takes its signal...
    results = FORK.Queue()
    worker = FORK.Process(target=_wait_for_stop, args=(signal, results))
    worker.start()
    signals.stop("session", "generate")  # ...and the click is handled in the server process
    assert results.get(timeout=120) == "stopped"
    worker.join(10)
    assert not signals.start("session", "generate").is_set()  # the next run starts unstopped
    signals.stop("../../outside", "chat")  # a session id is the client's to choose: it names no path
    assert all(path.parent == signals.folder for path in signals.folder.iterdir())


@pytest.fixture(scope="module")
def reward_project(tiny_model_dir, tmp_path_factory):
    """The opossum project with a tiny reward model and three fresh pairs (tests/test_prefer.py builds it)."""
    from test_prefer import OPOSSUM_ANSWERS
    from test_reward import TOY_CONFIG, opossum_project

    from rlhf.reward import train_reward_model
    from rlhf.store import Store

    root = tmp_path_factory.mktemp("zero-gpu-reward")
    store = opossum_project(Store.open("ranked", create=True, root=root))
    train_reward_model(store, TOY_CONFIG, str(tiny_model_dir))
    run = store.start_generation_run("base-model", None, {})
    store.add_completions(run, [(prompt, j, text, 5, "stop") for prompt, answers in OPOSSUM_ANSWERS.items()
                                for j, text in enumerate(answers)], source="test")
    return root / "ranked"


@pytest.fixture(scope="module")
def zero_gpu_run(tiny_model_dir, reward_project, tmp_path_factory):
    if importlib.util.find_spec("spaces") is None:
        pytest.skip("needs the `spaces` package (pip install -r requirements-dev.txt)")
    home = tmp_path_factory.mktemp("zero-gpu-home")
    shutil.copytree(reward_project, home / reward_project.name)
    env = {**os.environ, "RLHF_HOME": str(home), "RLHF_MODEL": str(tiny_model_dir), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(REPO / "tests" / "zero_gpu_harness.py"), str(tiny_model_dir),
                           reward_project.name], capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_zero_gpu_warm_up_touches_no_cuda_and_holds_no_model(zero_gpu_run):
    assert zero_gpu_run["cuda_reported"]  # spaces fakes CUDA in the server process: `auto` means cuda there
    assert zero_gpu_run["warm_up"] == {"warnings": [], "thread_errors": [], "models_in_registry": 0}


def test_zero_gpu_generate_runs_in_a_worker_and_cancel_reaches_it(zero_gpu_run):
    seen = zero_gpu_run["generate"]
    assert seen["error"] is None
    assert seen["worker_pids"] and zero_gpu_run["server_pid"] not in seen["worker_pids"]
    assert seen["status"].startswith("Cancelled.")
    assert 0 < seen["completions"] < 2 * seen["prompts"]  # finished prompts kept, the rest never sampled


def test_zero_gpu_chat_streams_from_a_worker_and_stop_reaches_it(zero_gpu_run):
    seen = zero_gpu_run["chat"]
    assert seen["error"] is None
    assert seen["worker_pids"] and zero_gpu_run["server_pid"] not in seen["worker_pids"]
    assert seen["pieces"] < seen["max_new_tokens"] // 2  # stopped soon after the first piece, not run to the end


def test_zero_gpu_least_certain_first_scores_in_a_gpu_call(zero_gpu_run):
    seen = zero_gpu_run["prefer"]
    assert seen["error"] is None, seen["error"]
    assert seen["worker_pids"] and zero_gpu_run["server_pid"] not in seen["worker_pids"]
    assert seen["scores_cached"] == 6  # three fresh pairs, both answers, written by the server process
    assert "least certain first" in seen["status"]


def test_zero_gpu_errors_from_the_worker_keep_their_message(zero_gpu_run):
    seen = zero_gpu_run["bad_model"]
    assert seen["is_gradio_error"] and "neither an existing directory nor a Hub id" in seen["message"]
