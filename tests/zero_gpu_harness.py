"""The app's ZeroGPU path under the real `spaces` package, on this CPU (run by tests/test_zero_gpu.py in a subprocess).

With SPACES_ZERO_GPU set, `import spaces` patches torch in the server process (CUDA reported available; `.to("cuda")`
recorded on fake tensors, in the main thread only) and each @spaces.GPU call runs in a worker process forked from the
server, arguments and results pickled across, while the server asks a device API for a GPU. What is real here: all of
`spaces` 0.51 (the patching, the fork, the queues, the generator protocol), the app's handlers, the store. What
stands in for what this machine lacks:
- the device API (schedule / allow / release / startup-report) is a local HTTP server that always lends "a GPU";
- a CPU build of torch lacks three things `spaces` reads at import (`torch.version.cuda`, `torch._C._cuda_init`, a
  picklable `torch.cuda._is_in_bad_fork`): given stand-ins; touching real CUDA still fails as on a CPU;
- in the worker, the two steps that need a real GPU (`spaces.zero.torch.init` selects it, `move` copies the packed
  tensors onto it) do nothing, so the worker computes on the CPU.

Handlers run in threads other than the main one, as Gradio runs them. Prints one JSON line of observations.

    python tests/zero_gpu_harness.py MODEL_DIR PROJECT_WITH_REWARD_MODEL
"""

import json
import logging
import multiprocessing
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
LENT_TO: list[int] = []  # pids the device API was asked to let use "the GPU" (the workers)


class DeviceAPI(BaseHTTPRequestHandler):
    def do_POST(self):
        url = urlparse(self.path)
        body = b""
        if url.path == "/schedule":
            body = json.dumps({"idle": False, "nvidiaIndex": 0, "nvidiaUUID": "GPU-test", "allowToken": "t"}).encode()
        if url.path == "/allow":
            LENT_TO.append(int(parse_qs(url.query)["pid"][0]))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def emulate_zero_gpu() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), DeviceAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ.update(SPACES_ZERO_GPU="true", SPACES_ZERO_DEVICE_API_URL=f"http://127.0.0.1:{server.server_port}")
    import torch

    if torch.version.cuda is None:  # a CPU build: what `spaces` reads at import
        torch.version.cuda = "12.8"
    if not hasattr(torch._C, "_cuda_init"):
        def cuda_init():
            raise AssertionError("Torch not compiled with CUDA enabled")

        torch._C._cuda_init = cuda_init
    torch.cuda._is_in_bad_fork = _not_in_bad_fork
    import spaces  # noqa: F401  (patches torch in this process)
    import spaces.zero.torch as zero_torch

    zero_torch.init = lambda nvidia_uuid: None
    zero_torch.move = lambda callback=None: None


def _not_in_bad_fork() -> bool:
    return False


def in_thread(fn):
    """Run fn() in a fresh thread, as Gradio runs a handler; returns (value, exception)."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as error:  # noqa: BLE001  (reported to the test)
            box["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(600)
    return box.get("value"), box.get("error")


def describe(error) -> str | None:
    return None if error is None else f"{type(error).__name__}: {error}"


def main() -> None:
    model_dir, reward_project = sys.argv[1], sys.argv[2]
    emulate_zero_gpu()
    import gradio as gr
    import torch

    from rlhf.models import registry
    from rlhf.prefer import newest_reward_model
    from rlhf.store import Store
    from rlhf.ui import chat_tab, generate_tab, prefer_tab, warm_up_default_model

    seen: dict = {"server_pid": os.getpid(), "cuda_reported": torch.cuda.is_available()}

    # 1. the warm-up thread at start: nothing on CUDA, nothing in the registry, no error
    warnings, thread_errors = [], []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("rlhf.ui").addHandler(handler)
    threading.excepthook = lambda args: thread_errors.append(describe(args.exc_value))
    warm_up_default_model().join()
    seen["warm_up"] = {"warnings": warnings, "thread_errors": thread_errors,
                       "models_in_registry": len(registry._models)}

    # 2. Generate, cancelled from the server process while the worker samples
    store = Store.open("zero", create=True)
    request = SimpleNamespace(session_hash="visitor-1")
    prompts = "\n".join(f"Prompt number {i}, tell me about opossums." for i in range(60))
    lent_before = len(LENT_TO)
    finished = threading.Event()

    def generate():
        try:
            return generate_tab.generate("zero", prompts, model_dir, 2, 64, 1.0, 1.0, 0, None, request)
        finally:
            finished.set()

    def cancel_once_sampling():
        while store.counts()["completions"] == 0 and not finished.is_set():
            time.sleep(0.02)
        generate_tab.cancel(request)

    canceller = threading.Thread(target=cancel_once_sampling)
    canceller.start()
    value, error = in_thread(generate)
    canceller.join()
    seen["generate"] = {"error": describe(error), "status": value[1] if value else None,
                        "completions": store.counts()["completions"], "prompts": 60,
                        "worker_pids": LENT_TO[lent_before:]}

    # 3. Chat, stopped from the server process after the first streamed piece
    request = SimpleNamespace(session_hash="visitor-2")
    lent_before = len(LENT_TO)

    def chat():
        pieces = 0
        text = ""
        for _, history in chat_tab.chat("Tell me a long story about opossums.", [], model_dir, "", 200, 1.0, 1.0,
                                        None, request):
            pieces += 1
            text = history[-1]["content"]
            if pieces == 1:
                chat_tab.stop_chat(request)
        return pieces, text

    value, error = in_thread(chat)
    seen["chat"] = {"error": describe(error), "pieces": value[0] if value else None, "max_new_tokens": 200,
                    "worker_pids": LENT_TO[lent_before:]}

    # 4. Prefer, least certain first: the reward model scores the queue inside a GPU call
    project = Store.open(reward_project)
    lent_before = len(LENT_TO)
    value, error = in_thread(lambda: prefer_tab.show_next(reward_project, "alice", None, 0.0, 0.0, "uncertain", None,
                                                                   SimpleNamespace(session_hash="visitor-3")))
    checkpoint = newest_reward_model(project)["id"]
    seen["prefer"] = {"error": describe(error), "status": value[4] if value else None,
                      "scores_cached": len(project.reward_scores(checkpoint)), "worker_pids": LENT_TO[lent_before:]}

    # 5. An RLHFError raised in the worker reaches the visitor with its message
    value, error = in_thread(lambda: generate_tab.generate("zero", "Hi", "./no-such-model", 2, 8, 1.0, 1.0, 0, None,
                                                           request))
    seen["bad_model"] = {"error_type": type(error).__name__ if error else None,
                         "message": getattr(error, "message", str(error)) if error else None,
                         "is_gradio_error": isinstance(error, gr.Error)}
    print(json.dumps(seen), flush=True)
    for worker in multiprocessing.active_children():  # spaces keeps its workers for the next call: end them,
        worker.kill()  # or they hold this process's stdout open and the test waits on it


if __name__ == "__main__":
    main()
