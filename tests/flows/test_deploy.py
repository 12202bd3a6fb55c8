"""flows/deploy.py and prefect.yaml: the two deployments, their schedule and concurrency."""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import yaml

from edge_pipeline.config import load_params
from flows.deploy import (
    build_deployments,
    committed_orchestration,
    server_healthy,
    work_pool_commands,
)

REPO = Path(__file__).resolve().parents[2]


def _orchestration(**section):
    return load_params(raw={"orchestration": section}).orchestration


def test_nightly_takes_cron_and_timezone_from_params_and_on_demand_has_no_schedule():
    nightly, on_demand = build_deployments(
        _orchestration(schedule={"cron": "30 3 * * 1-5", "timezone": "Europe/Berlin"})
    )
    assert (nightly.name, on_demand.name) == ("nightly", "on-demand")
    [schedule] = nightly.schedules
    assert schedule.schedule.cron == "30 3 * * 1-5"
    assert schedule.schedule.timezone == "Europe/Berlin"
    assert on_demand.schedules == []
    for d in (nightly, on_demand):
        assert d.entrypoint == "flows/retrain.py:retrain"
        # no deployment concurrency limit: Prefect frees its slot when a run pauses for approval
        # and then kills the paused run (410 Gone); the workspace file lock keeps runs apart
        assert d.concurrency_limit is None
        # the UI's Run form edits these
        props = d._parameter_openapi_schema.properties
        assert {"overrides", "source", "approval"} == set(props)
        assert "workspace" not in props  # a run from the UI/API cannot pick another directory


def test_prefect_yaml_declares_the_same_deployments_and_no_second_schedule():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert set(deployments) == {"nightly", "on-demand"}
    # the schedule is stated once, in params.yaml; `make deploy` passes it to `prefect deploy`
    assert deployments["nightly"]["schedules"] == deployments["on-demand"]["schedules"] == []
    cfg = committed_orchestration()
    nightly, on_demand = work_pool_commands(_orchestration(schedule={"cron": "5 4 * * *"}))
    assert nightly[-6:] == ["--name", "nightly", "--cron", "5 4 * * *", "--timezone", "UTC"]
    assert on_demand[-2:] == ["--name", "on-demand"] and "--cron" not in on_demand
    assert cfg.schedule.cron == yaml.safe_load((REPO / "params.yaml").read_text())[
        "orchestration"]["schedule"]["cron"]  # fmt: skip
    for d in deployments.values():
        assert d["entrypoint"] == "flows/retrain.py:retrain"
        assert "concurrency_limit" not in d
        assert d["work_pool"]["name"] == "edge-pipeline"


def test_server_health_check(tmp_path):
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()
            self.wfile.write(b"true")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert server_healthy(f"http://127.0.0.1:{server.server_port}/api")
    finally:
        server.shutdown()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert not server_healthy(f"http://127.0.0.1:{free}/api", timeout_s=0.5)


def test_the_run_form_lists_every_params_key_with_its_comment_and_plain_selects():
    from edge_pipeline.config import Params

    _, on_demand = build_deployments(committed_orchestration())
    props = on_demand._parameter_openapi_schema.model_dump()["properties"]
    overrides = props["overrides"]
    keys = overrides["properties"]
    assert overrides["additionalProperties"] is False and overrides["default"] == {}
    assert len(keys) > 150 and {"train.epochs", "orchestration.alerts.webhook_url"} <= set(keys)
    assert all("." in k for k in keys)  # leaves only, as dotted keys
    epochs = keys["train.epochs"]
    assert epochs["type"] == "integer" and epochs["minimum"] == 1
    assert "params.yaml: 8" in epochs["description"] and "default" not in epochs
    assert keys["agreement.policy"]["enum"] == ["fail", "warn", "approval"]
    assert all(k.split(".")[0] in Params.model_fields for k in keys)
    # approval: a plain select whose first choice changes nothing; source: a plain text
    assert props["approval"]["enum"] == ["params.yaml", "fail", "warn", "approval"]
    assert props["approval"]["default"] == "params.yaml" and "anyOf" not in props["approval"]
    assert props["source"] == {**props["source"], "type": "string", "default": ""}
