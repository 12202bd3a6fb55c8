"""`make serve`: a local Prefect server (when none answers) serving the retrain flow's deployments.

    python -m flows.deploy              # UI at http://127.0.0.1:4200; Ctrl-C stops both
    python -m flows.deploy --work-pool  # `make deploy`: prefect.yaml's deployments, for a worker

- `nightly`: the cron and timezone of params.yaml `orchestration.schedule`;
- `on-demand`: no schedule; start it from the UI's Run button, whose form edits the parameters
  (overrides as JSON, source, approval policy).

At most one run mutates the workspace: the flow holds the workspace's file lock
(flows/workspace.py) for its whole run, so two runs never overlap: the second one waits, saying
who holds it. The deployments have no Prefect `concurrency_limit`: Prefect 3.9 releases a
deployment's slot when its run pauses and then kills the paused run at its next lease renewal
(410 Gone, about 3.5 minutes later), so an approval could never wait for its timeout. `make
serve` also sets up the alert automation (flows/alerts.py). The workspace is no deployment
parameter. prefect.yaml declares the same deployments for a work pool;
`--work-pool` deploys them with the schedule of params.yaml (prefect.yaml states none).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from edge_pipeline.config.orchestration import Orchestration
from flows.local_server import hardened_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_API = "http://127.0.0.1:4200/api"


def server_healthy(api_url: str, *, timeout_s: float = 2.0) -> bool:
    """Whether a Prefect server answers `GET <api_url>/health`."""
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def start_server(api_url: str, *, home: Path, wait_s: float = 120.0) -> subprocess.Popen[bytes]:
    """`prefect server start` on 127.0.0.1 (SQLite in `home`, UI on); wait until it is healthy.

    CSRF protection on and CORS for its own origin only (flows/local_server.py).
    """
    port = httpx.URL(api_url).port or 4200
    origin = api_url.rstrip("/").removesuffix("/api")
    env = {**os.environ, "PREFECT_HOME": str(home), **hardened_settings(origin)}
    # a 503 is SQLite refusing a second writer (SQLITE_BUSY; Prefect's client retries it, its UI
    # shows "Something went wrong"): server.log says which request met it
    env.setdefault("PREFECT_SERVER_LOG_RETRYABLE_ERRORS", "true")
    env.pop("PREFECT_API_URL", None)  # the server itself must not point at another server
    env["PREFECT_UI_API_URL"] = api_url  # else the UI calls :4200 whatever --port says
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "server.log", "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port), "--ui"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C stops `serve` first; then main() stops the server
    )  # fmt: skip
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}; see {log.name}")
        if server_healthy(api_url):
            return proc
        time.sleep(1.0)
    proc.terminate()
    raise RuntimeError(f"prefect server did not answer {api_url}/health in {wait_s:.0f} s")


def committed_orchestration() -> Orchestration:
    """The `orchestration` section of this repository's params.yaml (ConfigError when wrong)."""
    from flows.config import run_params

    return run_params(REPO_ROOT / "params.yaml", {})[1]


def build_deployments(cfg: Orchestration | None = None) -> list[Any]:
    """The `nightly` and `on-demand` RunnerDeployments of the retrain flow, from params.yaml."""
    from prefect.schedules import Cron

    from flows.retrain import build_flow

    cfg = cfg or committed_orchestration()
    cron, timezone = cfg.schedule.cron, cfg.schedule.timezone
    flow = build_flow(cfg)
    # No concurrency_limit: a paused run would lose its slot and be killed (module docstring);
    # the workspace file lock keeps runs apart.
    common: dict[str, Any] = {"tags": ["edge-pipeline"]}
    return [
        flow.to_deployment(
            name="nightly",
            schedules=[Cron(cron, timezone=timezone)],
            description=f"Reproduce the pipeline with the committed params ({cron}, {timezone}).",
            **common,
        ),
        flow.to_deployment(
            name="on-demand",
            description="Run the pipeline now; overrides become a DVC experiment.",
            **common,
        ),
    ]


def work_pool_commands(cfg: Orchestration) -> list[list[str]]:
    """`prefect deploy` of prefect.yaml's two deployments, the schedule taken from params.yaml.

    prefect.yaml states no schedule: params.yaml `orchestration.schedule` is the only one.
    """
    deploy = [sys.executable, "-m", "prefect", "--no-prompt", "deploy"]
    schedule = ["--cron", cfg.schedule.cron, "--timezone", cfg.schedule.timezone]
    return [[*deploy, "--name", "nightly", *schedule], [*deploy, "--name", "on-demand"]]


def deploy_to_work_pool() -> int:
    """`make deploy`: register the deployments of prefect.yaml with the server's work pool."""
    for argv in work_pool_commands(committed_orchestration()):
        print("+", " ".join(argv[2:]), flush=True)
        code = subprocess.call(argv, cwd=REPO_ROOT)
        if code:
            return code
    return 0


def main(argv: list[str] | None = None) -> int:
    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.alerts import ensure_alert_automation
    from flows.retrain import ensure_limit

    if (argv if argv is not None else sys.argv[1:]) == ["--work-pool"]:
        return deploy_to_work_pool()

    os.chdir(REPO_ROOT)  # stages and params.yaml are relative to the repository
    api_url = os.environ.get("PREFECT_API_URL") or DEFAULT_API
    server = None
    if server_healthy(api_url):
        print(f"using the Prefect server at {api_url}")
    else:
        home = Path(os.environ.get("PREFECT_HOME", REPO_ROOT / ".prefect"))
        print(f"starting a local Prefect server at {api_url} (SQLite in {home}) ...", flush=True)
        server = start_server(api_url, home=home)
    os.environ["PREFECT_API_URL"] = api_url  # inherited by the flow-run processes
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            cfg = committed_orchestration()
            ensure_limit(cfg.concurrency_limit)
            print(ensure_alert_automation(cfg.alerts))
            print(f"Prefect UI: {api_url.removesuffix('/api')}  (Deployments -> retrain)")
            serve(*build_deployments(cfg))
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
