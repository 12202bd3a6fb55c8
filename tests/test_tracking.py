"""MLflow stage runs span the whole stage: start when the stage's process started, end with it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.pyfunc import PythonModel

from edge_pipeline.core.machine import cpu_description

REPO = Path(__file__).resolve().parents[1]
STAGE = """
import time
time.sleep(1.5)  # imports and data loading before the run is opened
from edge_pipeline.core.tracking import stage_run
with stage_run("late", {"a": 1}):
    time.sleep(0.3)
with stage_run("second"):
    time.sleep(0.2)
"""


def test_run_times_cover_the_stage_process_not_only_the_block() -> None:
    begin = time.time()
    subprocess.run(
        [sys.executable, "-c", STAGE], check=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    wall = time.time() - begin
    from mlflow import MlflowClient

    from edge_pipeline.core.tracking import configure

    mlflow = configure()  # this test's store: an earlier test may have pointed mlflow elsewhere
    client = MlflowClient()
    runs = client.search_runs([mlflow.get_experiment_by_name("edge-pipeline").experiment_id])
    by = {r.info.run_name: r.info for r in runs}
    late, second = by["late"], by["second"]
    seconds = (late.end_time - late.start_time) / 1000
    assert 1.8 <= seconds <= wall, (seconds, wall)  # was ~0.3 s: the block only
    assert late.start_time >= 1000 * begin - 1000 and late.status == "FINISHED"
    assert second.start_time >= late.end_time and second.end_time - second.start_time >= 200
    assert client.get_run(late.run_id).data.params == {"late.a": "1"}
    assert client.get_run(late.run_id).data.tags["cpu"] == cpu_description()  # which machine


KILLED_AT_START = """
import os, signal
import mlflow
from edge_pipeline.core.tracking import stage_run
real_start_run = mlflow.start_run

def start_run(*args, **kwargs):  # the flow's SIGTERM lands after create_run, before start_run
    os.kill(os.getpid(), signal.SIGTERM)
    return real_start_run(*args, **kwargs)

mlflow.start_run = start_run
with stage_run("early"):
    raise AssertionError("not reached")
"""


def test_a_sigterm_as_the_run_is_created_ends_it_killed() -> None:
    """The run is RUNNING in the store from create_run on: a SIGTERM right then (the flow stopping
    as the stage starts) must not leave it RUNNING."""
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_AT_START], timeout=120, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == 128 + 15, proc.stderr[-2000:]
    from mlflow import MlflowClient

    from edge_pipeline.core.tracking import configure

    mlflow = configure()
    runs = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("edge-pipeline").experiment_id],
        filter_string="attributes.run_name = 'early'",
    )
    assert [r.info.status for r in runs] == ["KILLED"]


class _Doubler(PythonModel):
    """A registered model small enough to log in a second: predict(x) = 2 x."""

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        return 2 * np.asarray(model_input)


def _log_run_and_champion(project: Path, *, legacy: bool) -> str:
    """In `project`: a run with a report artifact, its model registered as edge-test@champion.

    `legacy`: as tracking.configure() did before issue 14, an absolute file:// location."""
    from mlflow import MlflowClient

    from edge_pipeline.core import tracking

    (project / "report.md").write_text("# tonight\n")
    if legacy:
        mlflow.set_tracking_uri(tracking.tracking_uri())
        mlflow.create_experiment(tracking.EXPERIMENT, (project / "mlartifacts").as_uri())
        mlflow.set_experiment(tracking.EXPERIMENT)
    with mlflow.start_run() if legacy else tracking.stage_run("register"):
        mlflow.log_artifact(str(project / "report.md"), "reports/register")
        info = mlflow.pyfunc.log_model(name="model", python_model=_Doubler(), pip_requirements=[])
        run_id = mlflow.active_run().info.run_id
    version = mlflow.register_model(info.model_uri, "edge-test").version
    MlflowClient().set_registered_model_alias("edge-test", "champion", version)
    return run_id


def _copied_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, legacy: bool) -> str:
    """A project with a run and a champion, copied (mlruns.db + mlartifacts/) to
    tmp_path/elsewhere/copy, the working directory; the original is deleted. Returns the run id."""
    from mlflow import MlflowClient

    from edge_pipeline.core import tracking

    before, after = tmp_path / "clone", tmp_path / "elsewhere" / "copy"
    before.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("MLFLOW_ARTIFACT_ROOT")
    monkeypatch.setattr(tracking, "REPO_ROOT", before)
    monkeypatch.chdir(before)
    run_id = _log_run_and_champion(before, legacy=legacy)
    location = MlflowClient().get_experiment_by_name(tracking.EXPERIMENT).artifact_location
    assert location == ((before / "mlartifacts").as_uri() if legacy else "mlartifacts")

    shutil.copytree(before, after)  # a copy (a rename leaves this process's engine on the file)
    shutil.rmtree(before)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # mlflow.set_tracking_uri sets it: a new process
    monkeypatch.setattr(tracking, "REPO_ROOT", after)
    monkeypatch.chdir(after)
    return run_id


@pytest.mark.parametrize("legacy", [False, True], ids=["new-store", "absolute-store-of-before"])
def test_a_copied_project_keeps_its_mlflow_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool
) -> None:
    """mlruns.db + mlartifacts/ moved to another folder (the original gone): a run's artifact
    downloads, the registered model loads by alias, and no stored URI names the old folder.
    `legacy`: a database written before, with absolute file:// locations, is rewritten."""
    from mlflow import MlflowClient

    from edge_pipeline.core import tracking

    run_id = _copied_project(tmp_path, monkeypatch, legacy=legacy)
    after = Path.cwd()
    tracking.configure()
    client = MlflowClient()
    assert client.get_experiment_by_name(tracking.EXPERIMENT).artifact_location == "mlartifacts"
    assert client.get_run(run_id).info.artifact_uri == f"mlartifacts/{run_id}/artifacts"
    assert str(tmp_path / "clone") not in (after / "mlruns.db").read_bytes().decode("latin-1")
    report = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="reports/register/report.md", dst_path=str(tmp_path)
    )
    assert Path(report).read_text() == "# tonight\n"
    served = mlflow.pyfunc.load_model("models:/edge-test@champion")
    assert served.predict(np.ones((2, 3))).tolist() == [[2.0] * 3] * 2
    with tracking.stage_run("next"):  # logging goes on in the copy
        mlflow.log_text("x", "x.txt")
    assert list(after.glob("mlartifacts/*/artifacts/x.txt"))


@pytest.mark.slow
def test_the_mlflow_ui_serves_a_copied_projects_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make mlflow-ui`'s command, started in the copy, shows a run's report and the registered
    version's files (the UI resolves the relative locations against its working directory)."""
    from edge_pipeline.core import tracking

    run_id = _copied_project(tmp_path, monkeypatch, legacy=False)
    tracking.configure()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    argv = [str(mlflow_bin), "ui", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", "sqlite:///mlruns.db"]  # fmt: skip
    server = subprocess.Popen(
        argv, cwd=Path.cwd(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "mlflow ui did not start"
                time.sleep(1)
        query = f"path=reports/register/report.md&run_uuid={run_id}"
        with urllib.request.urlopen(f"{base}/get-artifact?{query}", timeout=30) as r:
            assert r.read() == b"# tonight\n"
        query = "path=MLmodel&name=edge-test&version=1"
        with urllib.request.urlopen(f"{base}/model-versions/get-artifact?{query}", timeout=30) as r:
            assert b"python_function" in r.read()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_relative_artifacts_need_the_project_root_as_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_pipeline.core import tracking
    from edge_pipeline.core.errors import ConfigError

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("MLFLOW_ARTIFACT_ROOT")
    monkeypatch.setattr(tracking, "REPO_ROOT", tmp_path)
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(ConfigError, match=r"mlartifacts/ relative to the project root.*run from"):
        tracking.configure()
