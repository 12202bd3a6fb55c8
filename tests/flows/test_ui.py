"""The Prefect UI for real: trigger `on-demand` from its Custom run form in headless Chromium.

A real Prefect server (SQLite, 127.0.0.1, a free port, its own PREFECT_HOME) started by
flows/deploy.py's `start_server`, the `on-demand` deployment served by a subprocess as `make serve`
does (tests/serve_on_demand.py) over the tiny diamond pipeline of tests/flows_repo.py, and Debian's
`chromium` driven by Playwright (`make browser` installs it). The test fills the Run form with one
override, submits it, and checks that the run completed with the override applied: in the flow
run's parameters and in the DVC experiment the run recorded.

Prefect 3.9 opens its new (V2) UI at `/`; the test uses the classic UI (`/deployments`, or "Switch
to V1 UI" in the sidebar), whose Run form draws `overrides` as one field per params key (its JSON
schema comes from the params schema, flows/form.py): the test fills the field `b.value`.
On failure a screenshot is saved as ui-failure.png in the test's tmp_path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flows.deploy import start_server
from tests.flows_repo import SCHEMA, dvc, make_repo

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
INSTALL_HINT = "run `make browser` (apt-get install -y --no-install-recommends chromium)"
OVERRIDE = {"b.value": 20}  # the tiny pipeline's stage b; the committed value is 2
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
PARAMETERS = {
    "overrides",
    "source",
    "approval",
}  # the retrain flow's (no workspace: never a parameter)


@dataclass
class Served:
    ui: str
    api: str
    workspace: Path
    serve_log: Path
    server_log: Path

    def logs(self) -> str:
        tail = []
        for path in (self.serve_log, self.server_log):
            text = path.read_text(errors="replace") if path.exists() else ""
            tail.append(f"--- last output of {path} ---\n" + "\n".join(text.splitlines()[-40:]))
        return "\n".join(tail)


@pytest.fixture
def chromium() -> str:
    """Debian's chromium; a missing browser fails the test (it must not pass by skipping)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(f"chromium is not installed: {INSTALL_HINT}", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM the process group (a new session each), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout_s)


def on_demand_id(api: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        r = httpx.get(f"{api}/deployments/name/retrain/on-demand", timeout=10)
        if r.status_code == 200:
            return r.json()["id"]
        time.sleep(1.0)
    raise AssertionError("the on-demand deployment was not registered")


def wait_for_run(api: str, deployment_id: str, deadline: float) -> dict[str, Any]:
    """Poll the API until the deployment's (only) flow run is in a terminal state."""
    from prefect.client.orchestration import SyncPrefectClient

    query = {"deployments": {"id": {"any_": [deployment_id]}}}
    runs: list[dict[str, Any]] = []
    with SyncPrefectClient(api) as client:  # a POST needs the CSRF token, which it fetches
        while time.monotonic() < deadline:
            runs = client.request("POST", "/flow_runs/filter", json=query).json()
            if runs and runs[0]["state_type"] in TERMINAL:
                assert len(runs) == 1, f"{len(runs)} flow runs: one submit created more than one"
                return runs[0]
            time.sleep(1.0)
    state = runs[0]["state_type"] if runs else "no flow run at all"
    raise AssertionError(f"the flow run did not finish in time ({state})")


def parameter(page: Any, name: str) -> Any:
    """The input (a textarea: text or JSON) of one parameter of the Run form.

    The innermost block that holds this parameter's label and a textarea but no other parameter's
    label, so it resolves only once this parameter's own input is on the page.
    """
    block = page.locator("div").filter(has=page.get_by_text(f"{name} (Optional)", exact=True))
    for other in PARAMETERS - {name}:
        block = block.filter(has_not=page.get_by_text(f"{other} (Optional)", exact=True))
    return block.filter(has=page.locator("textarea")).last.locator("textarea")


def override_field(page: Any, key: str) -> Any:
    """The input of one params key inside the `overrides` form: its innermost labelled block."""
    label = page.locator(".p-label").filter(has=page.get_by_text(f"{key} (Optional)", exact=True))
    return label.last.locator("input, textarea").first


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    workspace = make_repo(tmp_path / "repo")
    home = tmp_path / "prefect-home"
    api = f"http://127.0.0.1:{free_port()}/api"
    # start_server itself points the UI at `api` (PREFECT_UI_API_URL) and turns analytics off
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    server = start_server(api, home=home, wait_s=180)
    serve_log = tmp_path / "serve.log"
    env = {
        **os.environ,
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(home),
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",  # pick the run up sooner than the default 10 s
        "PYTHONPATH": str(REPO),
        "PIPELINE_PARAMS_SCHEMA": SCHEMA,  # the tiny pipeline's params schema
    }
    try:
        with open(serve_log, "wb") as log:
            serving = subprocess.Popen(
                [sys.executable, "-m", "tests.serve_on_demand", str(workspace)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            yield Served(api.removesuffix("/api"), api, workspace, serve_log, home / "server.log")
        finally:
            stop(serving)
    finally:
        stop(server)


def submit(page: Any, failed: list[str], *, tries: int = 3) -> None:
    """Submit the Run form; a created run takes the UI back to the deployment's page.

    Prefect's SQLite server answers 503 when a write meets another writer it cannot wait out
    (SQLITE_BUSY in WAL mode; PrefectHQ/prefect #16102); its client retries, its UI shows "Oops.
    Something went wrong" and creates nothing. A person submits again: so does this, only after a
    503 of create_flow_run (a CI run met one; the test injects one). Other failures are reported.
    """
    from playwright.sync_api import expect

    on_form = re.compile(r"/run(\?|$)")
    for _ in range(tries):
        seen = len(failed)
        page.get_by_role("button", name="Submit").click()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and on_form.search(page.url):
            if any(f.startswith("503 ") and "create_flow_run" in f for f in failed[seen:]):
                print(f"submitted again after: {failed[seen:]}")
                break
            page.wait_for_timeout(500)
        else:
            break
    expect(page).not_to_have_url(on_form, timeout=1_000)


def test_on_demand_run_from_the_ui_form_applies_the_override(
    chromium: str, served: Served, tmp_path: Path
):
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: `make setup` installs the dev extra", pytrace=False)

    deadline = time.monotonic() + 420
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.set_default_navigation_timeout(120_000)
        failed: list[str] = []  # requests of the UI that failed, for the failure report
        page.on("requestfailed", lambda r: failed.append(f"{r.failure} {r.method} {r.url}"))
        page.on("response", lambda r: r.ok or failed.append(f"{r.status} {r.url}"))
        try:
            deployment_id = on_demand_id(served.api, deadline)
            page.goto(f"{served.ui}/deployments")
            page.get_by_role("link", name="on-demand").click()
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run").click()
            page.get_by_text("Validate parameters").wait_for()
            # `overrides` lists every params key as a field (flows/form.py): fill `b.value`
            field = override_field(page, "b.value")
            field.fill(str(OVERRIDE["b.value"]))
            expect(field).to_have_value(str(OVERRIDE["b.value"]))
            # the first create_flow_run gets the 503 of a busy SQLite server before it reaches the
            # server: the UI must create nothing, and a second submit one run (`submit`)
            injected: list[str] = []

            def busy_once(route: Any) -> None:
                if injected:
                    route.continue_()
                else:
                    injected.append(route.request.url)
                    route.fulfill(status=503, json={"exception_message": "Service Unavailable"})

            page.route("**/create_flow_run", busy_once)
            submit(page, failed)
            assert injected and any(f.startswith("503 ") for f in failed), failed

            run = wait_for_run(served.api, deployment_id, deadline)
            assert run["state_type"] == "COMPLETED", (
                f"flow run {run['name']} ended {run['state_type']}: {run['state_name']}\n"
                + served.logs()
            )
            page.goto(f"{served.ui}/runs/flow-run/{run['id']}")
            expect(page.get_by_text(run["name"]).first).to_be_visible()
            expect(page.get_by_text("Completed").first).to_be_visible()
        except BaseException:
            page.screenshot(path=tmp_path / "ui-failure.png", full_page=True)
            print(f"screenshot: {tmp_path / 'ui-failure.png'}", *failed, served.logs(), sep="\n")
            raise
        finally:
            browser.close()

    # the form also sends its boolean fields (false = params.yaml's value: no override)
    sent = run["parameters"]["overrides"]
    assert {k: v for k, v in sent.items() if v is not False} == OVERRIDE
    assert "workspace" not in run["parameters"]
    # the run was recorded as a DVC experiment named after it, with the override in its params
    # and in what its stages produced ...
    from flows.retrain import experiment_name

    root = served.workspace
    name = experiment_name(run["name"])
    baseline = json.loads(dvc(root, "exp", "show", "--json"))[1]
    [exp] = [e for e in baseline["experiments"] if e["name"] == name]
    data = exp["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["b"]["value"] == OVERRIDE["b.value"]
    assert data["metrics"]["metrics/b.json"]["data"]["value"] == OVERRIDE["b.value"]
    # ... and the workspace is back on the committed params
    assert yaml.safe_load((root / "params.yaml").read_text())["b"]["value"] == 2
