"""Served deployments for real (as `make serve`): an approval outlives the concurrency lease, and
an alert reaches a webhook.

A real Prefect server (flows/deploy.py `start_server`, SQLite, a free port) and the `on-demand`
deployment served by tests/serve_on_demand.py over the tiny pipeline of tests/flows_repo.py.

Approval: Prefect 3.9 released a deployment's concurrency slot when its run paused, and the paused
run's client was cancelled at its next lease renewal (410 Gone): the renewal comes 0.75 x 300 s
after the run started (prefect/concurrency/_leases.py; 300 s is fixed in the flow engine). The
flow engine only renews a lease when the run holds one (`deployment_concurrency_lease_id`), which
it does only under a deployment `concurrency_limit`: the test asserts that the served deployment
has none and that the run holds no lease, so that kill cannot come, then stays paused for PAUSE_S
= 45 s, longer than the server's lease (shortened to its minimum, 30 s) plus its repossessor's
5 s loop, the time in which a leased slot would have been taken back. `EDGE_TEST_PAUSE_S=240`
pauses past the renewal too (4 more minutes of CI). Then the run is approved and completes; a
second run (an override makes the gated stage run again) is rejected and fails.

Alert: a stage whose metrics say `alert: true` (as register's do) makes the flow emit an
`edge-pipeline.alert` event; the automation set up by serve (flows/alerts.py) sends it through a
webhook block to a listener on 127.0.0.1, and the server lists the event.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.deploy import start_server
from flows.local_server import free_port
from tests.flows_repo import SCHEMA, make_repo

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ALERT_EVENT = "edge-pipeline.alert"
PAUSE_S = float(os.environ.get("EDGE_TEST_PAUSE_S", "45"))
SERVER_SETTINGS = {
    "PREFECT_SERVER_CONCURRENCY_INITIAL_DEPLOYMENT_LEASE_DURATION": "30",  # Prefect's minimum
    "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "5",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    home = tmp_path_factory.mktemp("prefect-home")
    api = f"http://127.0.0.1:{free_port()}/api"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**SERVER_SETTINGS, "DVC_NO_ANALYTICS": "1"}.items():
            mp.setenv(key, value)
        proc = start_server(api, home=home, wait_s=240)
    try:
        yield api, home
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


class Served:
    """`on-demand` served for one tiny workspace; a Prefect client on the test's server."""

    def __init__(self, api: str, home: Path, workspace: Path, log: Path) -> None:
        self.api, self.home, self.workspace, self.log = api, home, workspace, log

    def client(self) -> Any:
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api)

    def deployment(self) -> Any:
        """The served `retrain/on-demand` deployment (waits up to 2 minutes for it)."""
        deadline = time.monotonic() + 120
        with self.client() as client:
            while True:
                try:
                    return client.read_deployment_by_name("retrain/on-demand")
                except Exception:
                    if time.monotonic() > deadline:
                        raise AssertionError("on-demand was not served\n" + self.logs()) from None
                    time.sleep(1.0)

    def start_run(self, **parameters: Any) -> str:
        deployment = self.deployment()
        with self.client() as client:
            run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        return str(run.id)

    def wait_for(self, run_id: str, states: set[str], timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        with self.client() as client:
            while time.monotonic() < deadline:
                run = client.read_flow_run(run_id)
                if run.state and run.state.type.value in states:
                    return run
                time.sleep(1.0)
        state = run.state.name if run.state else None
        raise AssertionError(f"run {run.name} is {state}, not {states}\n" + self.logs())

    def resume(self, run_id: str, decision: str) -> None:
        from prefect.flow_runs import resume_flow_run
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api}):
            resume_flow_run(run_id, run_input={"decision": decision, "comment": "by the test"})

    def logs(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "--- serve log ---\n" + "\n".join(text.splitlines()[-60:])


@pytest.fixture
def serve(server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Factory: serve `on-demand` for a tiny repo made with these params (stopped at teardown)."""
    api, home = server
    procs: list[subprocess.Popen[bytes]] = []
    monkeypatch.setenv("PREFECT_API_URL", api)

    def start(**params: dict[str, Any]) -> Served:
        workspace = make_repo(tmp_path / "repo", params)
        log = tmp_path / "serve.log"
        env = {
            **os.environ,
            "PREFECT_API_URL": api,
            "PREFECT_HOME": str(home),
            "PREFECT_RUNNER_POLL_FREQUENCY": "2",
            "PYTHONPATH": str(REPO),
            "PIPELINE_PARAMS_SCHEMA": SCHEMA,
            "DVC_NO_ANALYTICS": "1",
        }
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.serve_on_demand", str(workspace)],
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            )
        return Served(api, home, workspace, log)

    yield start
    for proc in procs:
        _stop(proc)


def test_an_approval_outlives_the_lease_then_approve_and_reject(serve, listener):
    gated = {"policy": "approval", "gate": "needs_approval"}
    timeout = int(PAUSE_S) + 600
    alerts = {"webhook_url": listener}
    served = serve(a=gated, orchestration={"approval_timeout_seconds": timeout, "alerts": alerts})

    first = served.start_run()
    run = served.wait_for(first, {"PAUSED"}, timeout_s=300)
    paused_at = time.monotonic()
    notice = wait_for_notices(1, served)[0]  # the approver hears of it
    assert notice["subject"] == "edge-pipeline alert: a"
    assert f"gate failed (metrics/a.json): the run waits up to {timeout} s" in notice["body"]
    assert run.name in notice["body"]
    # no deployment slot, no lease: the flow engine's lease renewal (the 410 kill) never starts
    assert served.deployment().concurrency_limit is None
    with served.client() as client:
        states = client.read_flow_run_states(first)
    assert {s.type.value for s in states} >= {"PENDING", "RUNNING", "PAUSED"}, states
    assert [s.state_details.deployment_concurrency_lease_id for s in states] == [None] * len(states)
    while time.monotonic() - paused_at < PAUSE_S:  # a crash would show up here
        run = served.wait_for(first, {"PAUSED", "CRASHED", "FAILED", "CANCELLED"}, 60)
        assert run.state.type.value == "PAUSED", f"{run.state.name}: {run.state.message}"
        time.sleep(10)
    served.resume(first, "approve")
    done = served.wait_for(first, {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, 300)
    assert done.state.type.value == "COMPLETED", f"{done.state.message}\n{served.logs()}"
    assert (served.workspace / "out" / "d.txt").exists()

    second = served.start_run(overrides={"a.value": 7})  # stage a runs again: its gate fails
    served.wait_for(second, {"PAUSED"}, timeout_s=300)
    served.resume(second, "reject")
    done = served.wait_for(second, {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, 300)
    assert done.state.type.value == "FAILED"
    assert "stage 'a' gate rejected: by the test" in (done.state.message or "")
    notices = wait_for_notices(3, served)  # approval needed twice, then the stopped run
    assert notices[-1]["subject"] == "edge-pipeline alert: a"
    assert "run stopped: stage 'a' gate rejected: by the test" in notices[-1]["body"]


@pytest.fixture
def listener() -> Iterator[str]:
    """A webhook on 127.0.0.1 that keeps what it receives in Listener.received; its URL."""
    Listener.received = []
    httpd = http.server.HTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/alert"
    finally:
        httpd.shutdown()


def wait_for_notices(count: int, served: Served, timeout_s: float = 120) -> list[dict[str, Any]]:
    """The webhook's messages once `count` arrived (fails after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while len(Listener.received) < count and time.monotonic() < deadline:
        time.sleep(1.0)
    assert len(Listener.received) >= count, f"{Listener.received}\n{served.logs()}"
    return list(Listener.received)


class Listener(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Listener.received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_an_alert_reaches_the_webhook_and_the_event_is_listed(serve, listener):
    served = serve(orchestration={"alerts": {"webhook_url": listener}})
    reason = "accuracy 0.71 is 12.3% below the champion's 0.81, alert threshold 5%"
    run_id = served.start_run(overrides={"d.alert": reason})
    done = served.wait_for(run_id, {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, 300)
    assert done.state.type.value == "COMPLETED", f"{done.state.message}\n{served.logs()}"

    message = wait_for_notices(1, served)[0]
    time.sleep(5)  # a second notification would have come by now
    print("received:", Listener.received)
    assert message["subject"] == "edge-pipeline alert: d"
    assert reason in message["body"] and done.name in message["body"]

    from prefect.events.filters import EventFilter, EventNameFilter

    with served.client() as client:
        wanted = EventFilter(event=EventNameFilter(name=[ALERT_EVENT]))
        page = client.read_events(wanted, limit=50)  # the server allows at most 50
    mine = [e for e in page.events if e.payload.get("flow_run") == done.name]  # server is shared
    assert [e.payload["reason"] for e in mine] == [reason], page.events
    assert len(Listener.received) == 1, Listener.received
    assert mine[0].resource.get("prefect.resource.name") == "d"

    # a night that fails is told too: stage b fails for good (bad params: no retry)
    failed = served.start_run(overrides={"b.exit_code": 78})
    done = served.wait_for(failed, {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, 300)
    assert done.state.type.value == "FAILED", f"{done.state.message}\n{served.logs()}"
    message = wait_for_notices(2, served)[1]
    assert message["subject"] == "edge-pipeline alert: b"
    assert "run stopped: stage 'b' failed on bad params (exit 78, no retry)" in message["body"]
    assert done.name in message["body"]

    # and a night whose committed params.yaml is wrong (nobody started it by hand)
    params = served.workspace / "params.yaml"
    params.write_text(params.read_text().replace("value: 1", "value: one", 1))
    broken = served.start_run()
    done = served.wait_for(broken, {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, 300)
    assert done.state.type.value == "FAILED", f"{done.state.message}\n{served.logs()}"
    message = wait_for_notices(3, served)[2]
    assert message["subject"] == "edge-pipeline alert: retrain"
    assert "run stopped:" in message["body"] and "a.value" in message["body"], message
