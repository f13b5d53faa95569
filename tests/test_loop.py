"""The whole CLI loop on the tiny model, as a user runs it: generate -> annotate -> export -> train-reward -> ppo
-> evaluate -> dpo."""

import json

from conftest import run_cli

from rlhf.checkpoints import list_checkpoints
from rlhf.store import Store


def test_full_cli_loop(tmp_path, tiny_model_dir):
    model = ["--model", str(tiny_model_dir)]
    assert run_cli("projects", "--create", "loop").returncode == 0
    prompts = "\n".join(f"Question number {i}?" for i in range(6))
    done = run_cli("generate", "--project", "loop", "--prompts", "-", "--num-candidates", "3", "--max-new-tokens",
                   "8", "--seed", "0", *model, stdin=prompts)
    assert done.returncode == 0, done.stderr
    judge = tmp_path / "judges.py"
    judge.write_text(
        "def shorter(prompt, a, b):\n    return 'a' if len(a) <= len(b) else 'b'\n\n"
        "def longer_wins(prompt, a, b):\n    return 'a' if len(a) > len(b) else 'b'\n"
    )
    assert run_cli("annotate", "--project", "loop", "--judge", f"{judge}:shorter", "--seed", "0").returncode == 0
    assert run_cli("export", "--project", "loop", "--out", str(tmp_path / "export")).returncode == 0

    reward = run_cli("train-reward", "--project", "loop", "--epochs", "1", *model)
    assert reward.returncode == 0, reward.stderr
    assert "held-out accuracy" in reward.stdout

    ppo = run_cli("ppo", "--project", "loop", "--steps", "2", "--batch-size", "4", "--mini-batch-size", "2",
                  "--max-new-tokens", "6", "--save-every", "1", *model)
    assert ppo.returncode == 0, ppo.stderr
    assert "step 2/2" in ppo.stderr
    store = Store.open("loop")
    [policy] = list_checkpoints(store, ("ppo",))
    [reward_meta] = list_checkpoints(store, ("reward",))
    assert policy["reward"] == reward_meta["id"] and policy["steps_done"] == 2  # lineage: which reward model
    lines = [json.loads(line) for line in open(f"{policy['path']}/metrics.jsonl")]
    assert [line["step"] for line in lines] == [1, 2] and "objective/kl" in lines[0] and lines[0]["samples"]

    report_file = tmp_path / "eval.json"
    evaluated = run_cli("evaluate", "--project", "loop", "--policy", "latest", "--max-new-tokens", "6",
                        "--out", str(report_file))
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report == json.loads(report_file.read_text())
    assert report["win_rate"] + report["tie_rate"] + report["loss_rate"] == 1.0
    for key in ("reward_tuned", "reward_reference", "kl", "length_tuned", "length_reference"):
        assert isinstance(report[key], float)
    judged = run_cli("evaluate", "--project", "loop", "--judge", f"{judge}:longer_wins", "--max-new-tokens", "6")
    assert judged.returncode == 0 and json.loads(judged.stdout)["judge"] == "function"

    dpo = run_cli("dpo", "--project", "loop", "--epochs", "1", *model)
    assert dpo.returncode == 0, dpo.stderr
    assert len(list_checkpoints(store, ("dpo",))) == 1


def test_training_refuses_too_few_pairs(tiny_model_dir):
    run_cli("projects", "--create", "tiny")
    for command in (["train-reward"], ["dpo"]):
        result = run_cli(*command, "--project", "tiny", "--model", str(tiny_model_dir))
        assert result.returncode == 2 and "at least 8 are needed" in result.stderr, result.stderr
    result = run_cli("ppo", "--project", "tiny", "--model", str(tiny_model_dir))
    assert result.returncode == 2 and "no reward checkpoint yet" in result.stderr, result.stderr


def test_ctrl_c_saves_a_checkpoint_before_exiting(tmp_path, tiny_model_dir):
    import signal
    import subprocess
    import sys

    from conftest import REPO

    run_cli("projects", "--create", "interrupted")
    rewards = tmp_path / "rewards.py"
    rewards.write_text("def short(prompt, response):\n    return -len(response) / 10\n")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a\nb\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "rlhf", "ppo", "--project", "interrupted", "--model", str(tiny_model_dir),
         "--reward", f"{rewards}:short", "--prompts", str(prompts), "--steps", "500", "--batch-size", "2",
         "--mini-batch-size", "2", "--max-new-tokens", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    for line in process.stderr:
        if "step 2/500" in line:
            process.send_signal(signal.SIGINT)  # Ctrl-C
            break
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0 and "ppo checkpoint" in out
    [meta] = list_checkpoints(Store.open("interrupted"), ("ppo",))
    assert 2 <= meta["steps_done"] < 500
