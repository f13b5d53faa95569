"""Background training jobs: one at a time, progress, stop, before-and-after evaluation, run deletion."""

import time

import pytest

from rlhf.checkpoints import delete_checkpoint, list_checkpoints
from rlhf.config import PPOConfig, RewardTrainConfig, RLHFError
from rlhf.jobs import Busy, command_line, delete_run, runner, start_training
from rlhf.judges import annotate
from rlhf.reward import train_reward_model
from test_prefer import add_candidates


def wait(job, timeout=120):
    deadline = time.time() + timeout
    while job.status == "running" and time.time() < deadline:
        time.sleep(0.2)
    return job


def test_ppo_job_reports_progress_evaluates_and_refuses_a_second_start(store, tiny_model_dir):
    add_candidates(store, prompts=[f"prompt {i}" for i in range(6)], k=3)
    annotate(store, lambda prompt, a, b: "a" if len(a) < len(b) else "b", "judge:short", seed=0)
    train_reward_model(store, RewardTrainConfig(epochs=1), str(tiny_model_dir))
    config = PPOConfig(steps=3, batch_size=4, mini_batch_size=2, max_new_tokens=6)
    job = start_training("ppo", store.name, str(tiny_model_dir), config)
    with pytest.raises(Busy, match="ppo on project 'test-project'"):
        start_training("ppo", store.name, str(tiny_model_dir), config)
    with pytest.raises(RLHFError, match="a run is going in project 'test-project'; stop it first"):
        delete_run(store, "anything")  # nothing is deleted under a running job
    wait(job)
    assert job.status == "done", job.error
    assert [m["step"] for m in job.metrics] == [1, 2, 3] and job.samples
    assert job.command == command_line("ppo", store.name, str(tiny_model_dir), config)
    assert "--steps 3 --batch-size 4 --mini-batch-size 2 --max-new-tokens 6" in job.command
    report = job.evaluation
    assert report["num_prompts"] == 6 and report["judge"].startswith("reward_model:")
    assert report["win_rate"] + report["tie_rate"] + report["loss_rate"] == pytest.approx(1.0)
    assert len(report["examples"]) == 5 and {"prompt", "reference", "tuned"} <= set(report["examples"][0])
    [policy] = list_checkpoints(store, ("ppo",))
    assert (store.folder / "checkpoints" / policy["id"] / "evaluation.json").is_file()

    with pytest.raises(RLHFError, match="by its id"):
        delete_checkpoint(store, "latest")
    delete_run(store, policy["id"])
    assert list_checkpoints(store, ("ppo",)) == []
    assert runner.busy() is None


def test_a_failing_job_says_why(store, tiny_model_dir):
    with pytest.raises(RLHFError, match="no reward checkpoint yet"):
        start_training("ppo", store.name, str(tiny_model_dir), PPOConfig(steps=1, batch_size=2, mini_batch_size=2))
    job = start_training("reward", store.name, str(tiny_model_dir), RewardTrainConfig())
    wait(job)
    assert job.status == "failed" and "at least 8 are needed" in job.error


def test_reward_and_dpo_jobs_and_generation_share_the_one_slot(store, tiny_model_dir):
    from rlhf.config import DPOTrainConfig
    from rlhf.jobs import Job

    add_candidates(store, prompts=[f"prompt {i}" for i in range(6)], k=3)
    annotate(store, lambda prompt, a, b: "a" if len(a) < len(b) else "b", "judge:short", seed=0)
    unlabelled = add_candidates(store, prompts=["later 1", "later 2"])
    for kind, config, key in [("reward", RewardTrainConfig(epochs=1), "reward/loss"),
                              ("dpo", DPOTrainConfig(epochs=1), "dpo/loss")]:
        job = wait(start_training(kind, store.name, str(tiny_model_dir), config))
        assert job.status == "done", job.error
        trained = [row for row in job.metrics if key in row]
        assert trained and trained[-1]["step"] == job.steps_done == job.total_steps
        if kind == "dpo":  # the KL budget's checks report through the same progress: before step 1, after the last
            assert [row["step"] for row in job.metrics if "check/kl" in row] == [0, job.steps_done]
        if kind == "reward":  # the Prefer queue was scored as part of the job: the first request does not wait
            assert set(store.reward_scores(job.result["id"])) == set(unlabelled)
    generation = Job(kind="generate", project=store.name, total_steps=2, command="python -m rlhf generate ...")
    with runner.hold(generation):
        with pytest.raises(Busy, match="generate on project"):
            start_training("reward", store.name, str(tiny_model_dir), RewardTrainConfig(epochs=1))
    assert generation.status == "done" and runner.busy() is None


def test_a_finished_run_is_re_plotted_from_its_log(store, tiny_model_dir):
    from rlhf.ppo import RewardSource, train_ppo
    from rlhf.ui.train_tab import run_curves

    import torch

    meta = train_ppo(store, PPOConfig(steps=2, batch_size=2, mini_batch_size=2, max_new_tokens=4),
                     str(tiny_model_dir), RewardSource(lambda p, r: torch.ones(len(p)), "function:one"), prompts=["a", "b"],
                     device="cpu")
    frame = run_curves(store.name, meta["id"])["value"]
    assert sorted(set(frame["metric"])) == ["objective/kl", "objective/rlhf_reward", "objective/scores"]
    assert sorted(set(frame["step"])) == [1, 2]


def test_on_zero_gpu_training_is_refused_with_the_hardware_it_needs(store, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    with pytest.raises(RLHFError, match="Training cannot run on ZeroGPU.*T4 small or L4"):
        start_training("reward", store.name, str(tiny_model_dir), RewardTrainConfig(epochs=1))
    assert runner.busy() is None  # nothing started


def test_zero_gpu_wraps_only_on_zero_gpu(monkeypatch):
    import importlib.util

    from rlhf.models import zero_gpu

    def answer():
        return 42

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert zero_gpu(60)(answer) is answer  # a CPU or dedicated-GPU Space: the plain function
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    if importlib.util.find_spec("spaces") is None:
        with pytest.raises(RLHFError, match="pip install spaces"):
            zero_gpu(60)(answer)


def test_delete_takes_only_this_projects_runs_and_keeps_the_policies_others_started_from(store, tiny_model_dir,
                                                                                         tmp_path):
    import torch

    from rlhf.ppo import RewardSource, train_ppo
    from rlhf.store import Store

    def ppo(project, start):
        return train_ppo(project, PPOConfig(steps=1, batch_size=2, mini_batch_size=2, max_new_tokens=4), start,
                         RewardSource(lambda p, r: torch.zeros(len(p)), "function:zero"), prompts=["a", "b"],
                         device="cpu")

    first = ppo(store, str(tiny_model_dir))
    second = ppo(store, first["path"])  # round 2 starts from round 1
    other = Store.open("other-project", create=True)
    elsewhere = ppo(other, str(tiny_model_dir))
    outside = tmp_path / "not-a-run"
    outside.mkdir()
    (outside / "meta.json").write_text('{"id": "x", "kind": "ppo"}')
    for reference in (elsewhere["path"], str(outside), "../other-project/checkpoints/" + elsewhere["id"], "", "."):
        with pytest.raises(RLHFError, match="is not a run of project 'test-project'"):
            delete_checkpoint(store, reference)
    assert outside.is_dir() and len(list_checkpoints(other)) == 1
    with pytest.raises(RLHFError, match=f"{first['id']} is where {second['id']} started from"):
        delete_checkpoint(store, first["id"])
    delete_checkpoint(store, second["id"])  # newest first, then its parent
    delete_checkpoint(store, first["path"])  # by its folder, inside this project: fine
    assert list_checkpoints(store) == []


@pytest.mark.parametrize("kind", ["ppo", "dpo"])
def test_no_kl_budget_in_the_train_tab_is_no_budget_on_the_command_line(kind):
    """A budget of 0 in the form must come back as 0 from the CLI equivalent, not as the default budget (a None was
    left out of the flags, so the command line ran with a budget of 8)."""
    import shlex

    from rlhf.__main__ import build_parser
    from rlhf.config import DPOTrainConfig, from_arguments
    from rlhf.ui.train_tab import make_config

    form = dict(rm_epochs=2, rm_lr=5e-4, rm_lora=True, rm_eval=0.2, rm_ties=1.0, rm_pooling="last", steps=40, batch=16,
                mini=8, epochs=2, lr=1e-3, tokens=0, kl_coef=0.1, target_kl=0, dpo_epochs=4, dpo_lr=2e-4, dpo_beta=0.1,
                dpo_lora=True, dpo_target_kl=0)
    config = make_config(kind, **form).validate()
    with pytest.raises(RLHFError, match="a setting is not a number"):  # what a caller of the public endpoint may send
        make_config("reward", **{**form, "rm_ties": "lots"})
    with pytest.raises(RLHFError, match="tie_weight: 5.0 is out of range"):
        make_config("reward", **{**form, "rm_ties": 5}).validate()
    with pytest.raises(RLHFError, match="pooling: 'first' is not one of last, mean"):
        make_config("reward", **{**form, "rm_pooling": "first"}).validate()
    line = command_line(kind, "p", "bundled", config)
    assert "--target-kl 0.0" in line
    args = build_parser().parse_args(shlex.split(line)[3:])
    again = from_arguments({"ppo": PPOConfig, "dpo": DPOTrainConfig}[kind], args)
    assert not again.target_kl and again == config
