"""flows/config.py: the orchestration section of params.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge_pipeline.core.errors import ConfigError
from flows.config import DEFAULTS, load_orchestration

REPO = Path(__file__).resolve().parents[2]


def test_repository_params_give_io_stages_two_retries_and_training_stages_one():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = load_orchestration(params)
    assert cfg.policy("ingest").retries == 2 and cfg.policy("train").retries == 1
    assert cfg.policy("train").timeout_seconds > cfg.policy("ingest").timeout_seconds
    assert cfg.cron == "0 2 * * *" and cfg.timezone
    assert cfg.task_runner == "threads" and cfg.dask_address is None


def test_defaults_apply_without_a_section():
    cfg = load_orchestration({})
    assert cfg.defaults.retries == DEFAULTS["defaults"]["retries"]
    assert cfg.concurrency_limit == DEFAULTS["concurrency_limit"]


def test_backoff_delays_and_foreach_fallback():
    cfg = load_orchestration({"orchestration": {
        "defaults": {"retries": 3, "retry_delay_seconds": 2, "backoff": 3},
        "stages": {"bench": {"retries": 1}, "bench@onnx": {"timeout_seconds": 5}},
    }})  # fmt: skip
    assert cfg.policy("ingest").delays() == [2, 6, 18]
    assert cfg.policy("bench@tflite").retries == 1  # group entry, unset keys from defaults
    assert cfg.policy("bench@tflite").retry_delay_seconds == 2
    assert cfg.policy("bench@onnx").timeout_seconds == 5 and cfg.policy("bench@onnx").retries == 3


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"defaults": {"retries": -1}}, "retries >= 0"),
        ({"defaults": {"retry": 1}}, r"unknown key\(s\) \['retry'\]"),
        ({"stages": {"train": {"timeout_seconds": "soon"}}}, "orchestration.stages.train"),
        ({"task_runner": "ray"}, "use threads or dask"),
    ],
)
def test_bad_values_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        load_orchestration({"orchestration": section}, ["ingest", "train"])


def test_stage_names_missing_from_dvc_yaml_are_reported(caplog):
    load_orchestration({"orchestration": {"stages": {"trian": {"retries": 1}}}}, ["train@a"])
    assert "orchestration.stages names ['trian'], which dvc.yaml does not have" in caplog.text
