"""Issue 15's orchestration faults, injected for real: `python -m flows.retrain` processes on the
tiny pipeline (tests/flows_repo.py), each with Prefect's temporary server, SIGKILLed, Ctrl-C'd,
run twice at once with different PREFECT_HOME; and a cross-origin POST to a served API."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from flows.config import SCHEMA_ENV
from tests.flows_repo import SCHEMA, dvc, make_repo

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def env_for(tmp_path: Path, home: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        SCHEMA_ENV: SCHEMA,
        "PREFECT_HOME": str(tmp_path / home),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}",
        "MLFLOW_ARTIFACT_ROOT": (tmp_path / "mlartifacts").as_uri(),
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def start_flow(root: Path, env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.retrain", "--workspace", str(root), *args],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def stage_procs(name: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if "stage.py" in " ".join(cmd) and name in cmd and p.info["status"] != "zombie":
            found.append(p)
    return found


def wait_for_stage(name: str, flow: subprocess.Popen[bytes], log: Path, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stage_procs(name):
            return
        assert flow.poll() is None, f"flow ended early:\n{log.read_text()[-3000:]}"
        time.sleep(0.3)
    raise AssertionError(f"stage {name} never started:\n{log.read_text()[-3000:]}")


def running_runs(tmp_path: Path) -> list[str]:
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlruns.db'}"
    from edge_pipeline.core.tracking import configure

    mlflow = configure()
    exp = mlflow.get_experiment_by_name("edge-pipeline")
    runs = mlflow.MlflowClient().search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    return [r.info.run_name for r in runs]


def test_sigkilled_run_leaves_nothing_running_and_never_blocks_the_next(tmp_path, monkeypatch):
    root = make_repo(tmp_path / "repo", {"b": {"sleep": 300, "mlflow": True}})
    env = env_for(tmp_path, "prefect-home")
    first = start_flow(root, env, log=tmp_path / "first.log")
    wait_for_stage("b", first, tmp_path / "first.log")
    children = psutil.Process(first.pid).children(recursive=True)  # server, dvc, stage
    assert any("uvicorn" in " ".join(c.cmdline()) for c in children)
    (root / "reports" / "b" / ".report.md.tmp-killed").mkdir(parents=True)  # a stage's leftover
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    _, alive = psutil.wait_procs(children, timeout=45)
    assert not alive, f"outlived the killed flow: {[p.cmdline() for p in alive]}"

    start = time.monotonic()
    second = start_flow(root, env, "-S", "b.sleep=0", log=tmp_path / "second.log")
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    out = (tmp_path / "second.log").read_text()
    waited = float(re.search(r"wait for workspace ([\d.]+) s", out).group(1))
    assert waited < 2, "the second run waited for the killed one"
    assert "freed 1 slot(s) of the concurrency limit 'tiny-workspace'" in out
    assert "marked 1 MLflow run(s) of dead processes KILLED" in out  # the killed flow's parent
    assert not (root / "reports" / "b" / ".report.md.tmp-killed").exists()
    assert time.monotonic() - start < 240
    assert running_runs(tmp_path) == []


def test_ctrl_c_stops_the_run_promptly_without_retrying(tmp_path):
    root = make_repo(
        tmp_path / "repo",
        {"b": {"sleep": 300},
         "orchestration": {"defaults": {"retries": 2, "retry_delay_seconds": 0, "backoff": 1,
                                        "timeout_seconds": 600}}},
    )  # fmt: skip
    log = tmp_path / "flow.log"
    flow = start_flow(root, env_for(tmp_path, "home"), log=log)
    wait_for_stage("b", flow, log)
    time.sleep(1)
    os.killpg(flow.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
    start = time.monotonic()
    try:
        flow.wait(timeout=60)
    finally:
        if flow.poll() is None:
            os.killpg(flow.pid, signal.SIGKILL)
    assert time.monotonic() - start < 45
    assert log.read_text().count("b | b: started") == 1, "b was retried after Ctrl-C"
    _, alive = psutil.wait_procs(stage_procs("b"), timeout=40)
    assert not alive


def test_two_runs_with_different_prefect_homes_never_overlap(tmp_path):
    root = make_repo(tmp_path / "repo", {"b": {"sleep": 3}})
    dvc(root, "repro", "-q")  # both runs then re-run b and d only
    runs = {
        value: start_flow(root, env_for(tmp_path, f"home-{value}"), "-S", f"b.value={value}",
                          log=tmp_path / f"run-{value}.log")
        for value in (21, 22)
    }  # fmt: skip
    for value, proc in runs.items():
        log = (tmp_path / f"run-{value}.log").read_text
        assert proc.wait(timeout=400) == 0, log()[-3000:]
    logs = [(tmp_path / f"run-{v}.log").read_text() for v in runs]
    assert sum("waiting for the workspace" in log for log in logs) == 1
    baseline = json.loads(dvc(root, "exp", "show", "--json"))[1]
    values = sorted(
        e["revs"][0]["data"]["params"]["params.yaml"]["data"]["b"]["value"]
        for e in baseline["experiments"]
    )
    assert values == [21, 22]  # each experiment recorded its own run's override
    metrics = [e["revs"][0]["data"]["metrics"]["metrics/b.json"]["data"]["value"]
               for e in baseline["experiments"]]  # fmt: skip
    assert sorted(metrics) == [21, 22]
    assert yaml.safe_load((root / "params.yaml").read_text())["b"]["value"] == 2


def test_served_api_refuses_cross_origin_posts(tmp_path, monkeypatch):
    from flows.deploy import start_server
    from flows.local_server import free_port

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = start_server(api, home=tmp_path / "home", wait_s=180)
    try:
        evil = {"Origin": "http://evil.example"}
        r = httpx.post(f"{api}/flows/", json={"name": "pwned"}, headers=evil, timeout=30)
        assert r.status_code == 403, r.text  # no CSRF token: refused
        pre = httpx.options(
            f"{api}/flows/", timeout=30,
            headers={**evil, "Access-Control-Request-Method": "POST"},
        )  # fmt: skip
        assert pre.headers.get("access-control-allow-origin") not in ("*", "http://evil.example")
        own = httpx.options(
            f"{api}/flows/", timeout=30,
            headers={"Origin": f"http://127.0.0.1:{port}", "Access-Control-Request-Method": "POST"},
        )  # fmt: skip
        assert own.headers.get("access-control-allow-origin") == f"http://127.0.0.1:{port}"
        # Prefect's own client fetches a CSRF token and works
        monkeypatch.setenv("PREFECT_API_URL", api)
        from prefect import flow
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with (
            temporary_settings(updates={PREFECT_API_URL: api}),
            get_client(sync_client=True) as client,
        ):
            assert client.create_flow(flow(lambda: None, name="fine"))
    finally:
        server.terminate()
        server.wait(timeout=30)
