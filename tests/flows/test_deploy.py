"""flows/deploy.py and prefect.yaml: the two deployments, their schedule and concurrency."""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import yaml

from flows.deploy import build_deployments, server_healthy

REPO = Path(__file__).resolve().parents[2]


def _params(**orchestration):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["orchestration"] = {**params.get("orchestration", {}), **orchestration}
    return params


def test_nightly_takes_cron_and_timezone_from_params_and_on_demand_has_no_schedule():
    nightly, on_demand = build_deployments(
        _params(schedule={"cron": "30 3 * * 1-5", "timezone": "Europe/Berlin"})
    )
    assert (nightly.name, on_demand.name) == ("nightly", "on-demand")
    [schedule] = nightly.schedules
    assert schedule.schedule.cron == "30 3 * * 1-5"
    assert schedule.schedule.timezone == "Europe/Berlin"
    assert on_demand.schedules == []
    for d in (nightly, on_demand):
        assert d.entrypoint == "flows/retrain.py:retrain"
        assert d.concurrency_limit == 1
        assert d.concurrency_options.collision_strategy.value == "ENQUEUE"
        # the UI's Run form edits these
        props = d._parameter_openapi_schema.properties
        assert {"overrides", "source", "approval", "workspace"} <= set(props)


def test_prefect_yaml_declares_the_same_deployments_as_params():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    cfg = yaml.safe_load((REPO / "params.yaml").read_text())["orchestration"]["schedule"]
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert set(deployments) == {"nightly", "on-demand"}
    assert deployments["nightly"]["schedules"] == [
        {"cron": cfg["cron"], "timezone": cfg["timezone"]}
    ]
    assert deployments["on-demand"]["schedules"] == []
    for d in deployments.values():
        assert d["entrypoint"] == "flows/retrain.py:retrain"
        assert d["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
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
