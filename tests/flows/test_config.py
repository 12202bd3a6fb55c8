"""The `orchestration` section (edge_pipeline/config/orchestration.py) and flows/config.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge_pipeline.config import load_params
from edge_pipeline.config.orchestration import Orchestration
from edge_pipeline.core.errors import ConfigError
from flows.config import SCHEMA_ENV, committed_alerts, run_params, schema, warm_started

REPO = Path(__file__).resolve().parents[2]


def orchestration(section: dict) -> Orchestration:
    return load_params(raw={"orchestration": section}).orchestration


def test_repository_params_give_io_stages_two_retries_and_training_stages_one():
    _, cfg = run_params(REPO / "params.yaml", {})
    assert cfg.policy("ingest").retries == 2 and cfg.policy("train").retries == 1
    assert cfg.policy("train").timeout_seconds > cfg.policy("ingest").timeout_seconds
    assert cfg.policy("train").backoff == cfg.defaults.backoff  # unset keys from defaults
    assert cfg.schedule.cron == "0 2 * * *" and cfg.schedule.timezone
    assert cfg.task_runner == "threads" and cfg.dask_address is None


def test_params_yaml_stage_policies_name_dvc_yaml_stages():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    Orchestration().check_stages(stages)
    with pytest.raises(
        ConfigError, match=r"stages\.trian: not a dvc.yaml stage; did you mean train"
    ):
        orchestration({"stages": {"trian": {"retries": 1}}}).check_stages(stages)


def test_backoff_delays_and_foreach_fallback():
    cfg = orchestration({
        "defaults": {"retries": 3, "retry_delay_seconds": 2, "backoff": 3},
        "stages": {"bench": {"retries": 1}, "bench@onnx": {"timeout_seconds": 5}},
    })  # fmt: skip
    assert cfg.policy("ingest").delays() == [2, 6, 18]
    assert cfg.policy("bench@tflite").retries == 1  # group entry, unset keys from defaults
    assert cfg.policy("bench@tflite").retry_delay_seconds == 2
    assert cfg.policy("bench@onnx").timeout_seconds == 5 and cfg.policy("bench@onnx").retries == 3
    cfg.check_stages(["ingest", "bench@onnx", "bench@tflite"])


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"defaults": {"retries": -1}}, r"defaults\.retries=-1: Input should be greater than"),
        ({"defaults": {"retry": 1}}, r"defaults\.retry: not an option; did you mean retries\?"),
        ({"stages": {"train": {"timeout_seconds": "soon"}}}, r"stages\.train\.timeout_seconds"),
        ({"task_runner": "ray"}, r"task_runner='ray': Input should be 'threads' or 'dask'"),
        ({"schedule": {"cron": "every night"}}, r"schedule\.cron='every night': .*five cron"),
        ({"schedule": {"timezone": "Mars/Olympus"}}, r"timezone='Mars/Olympus': .*IANA"),
        ({"max_parallel_stages": 0}, r"max_parallel_stages=0"),
        ({"shedule": {}}, r"orchestration\.shedule: not an option; did you mean schedule\?"),
    ],
)
def test_bad_values_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        orchestration(section)


def test_overrides_are_validated_by_the_schema(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"orchestration": {"max_parallel_stages": 3}}))
    effective, cfg = run_params(path, {"orchestration.max_parallel_stages": 4})
    assert cfg.max_parallel_stages == 4 and effective["orchestration"]["max_parallel_stages"] == 4
    assert yaml.safe_load(path.read_text())["orchestration"]["max_parallel_stages"] == 3
    with pytest.raises(ConfigError, match=r"trian: not an option; did you mean train\?"):
        run_params(path, {"trian.epochs": 3})
    with pytest.raises(ConfigError, match="nothing was run"):
        run_params(path, {"orchestration.max_parallel_stages": "many"})


def test_schema_can_be_named_for_another_workspace(monkeypatch):
    from tests.flows_repo import SCHEMA, TinyParams

    monkeypatch.setenv(SCHEMA_ENV, SCHEMA)
    assert schema() is TinyParams
    monkeypatch.setenv(SCHEMA_ENV, "tests.flows_repo:Nope")
    with pytest.raises(ConfigError, match="use module:Class"):
        schema()


def test_overrides_equal_to_params_yaml_are_no_overrides(tmp_path):
    from flows.config import changed_only

    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: 8\n  hflip: false\nagreement:\n  policy: warn\n")
    sent = {"train.epochs": 8, "train.hflip": False, "agreement.policy": "approval", "x.y": 1}
    assert changed_only(params, sent) == {"agreement.policy": "approval", "x.y": 1}


def test_warm_started_sections_follow_init_and_its_schema_default():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert warm_started(raw) == {"train", "distill", "prune"}
    raw["train"]["init"] = "scratch"
    raw["distill"]["init"] = "previous"
    del raw["prune"]["init"]  # the schema's default (champion) applies
    assert warm_started(raw) == {"distill", "prune"}
    raw["distill"]["init"] = "runs:/" + "0a" * 16  # a pin is in the params DVC hashes
    assert warm_started(raw) == {"prune"}


def test_committed_alerts_survive_a_params_file_broken_elsewhere(tmp_path):
    params = tmp_path / "params.yaml"
    url = "http://127.0.0.1:9/alert"
    alerts = f"orchestration:\n  alerts: {{webhook_url: '{url}'}}\n"
    params.write_text("train: {epochs: -3}\n" + alerts)
    with pytest.raises(ConfigError):
        run_params(params, {})
    assert committed_alerts(params).webhook_url == url
    params.write_text("train: [unclosed\n")
    assert committed_alerts(params).webhook_url is None  # unreadable: events only
