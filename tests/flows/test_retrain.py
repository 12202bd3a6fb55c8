"""The retrain flow end to end on a tiny diamond pipeline (tests/flows_repo.py), on a temporary
Prefect server (prefect_test_harness) and a temporary MLflow store."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from flows.config import SCHEMA_ENV
from tests.flows_repo import SCHEMA, dvc, make_repo, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
        mp.setenv("DVC_NO_ANALYTICS", "1")
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            yield


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow-flows")


@pytest.fixture
def tiny(
    prefect_server: None, mlflow_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Path]:
    """Factory: a fresh tiny repo in tmp_path; one MLflow store for the module (created once)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_store / 'mlruns.db'}")
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", (mlflow_store / "artifacts").as_uri())
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    monkeypatch.setenv(SCHEMA_ENV, SCHEMA)

    def make(**params: dict[str, Any]) -> Path:
        return make_repo(tmp_path / "repo", params)

    return make


def retrain(root: Path, **kwargs: Any) -> Any:
    """Run the flow in `root` (the process's PIPELINE_WORKSPACE: the workspace is no parameter)."""
    from flows.retrain import WORKSPACE_ENV
    from flows.retrain import retrain as flow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(WORKSPACE_ENV, str(root))
        return flow(**kwargs)


def run_git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()


def metrics(root: Path, stage: str) -> dict[str, Any]:
    return json.loads((root / "metrics" / f"{stage}.json").read_text())


def mlflow_runs(filter_string: str) -> list[Any]:
    from edge_pipeline.core.tracking import configure

    mlflow = configure()
    exp = mlflow.get_experiment_by_name("edge-pipeline")
    return mlflow.MlflowClient().search_runs([exp.experiment_id], filter_string=filter_string)


def test_diamond_runs_in_dvc_order_concurrently_and_noop_rerun_starts_nothing(tiny):
    root = tiny(b={"sleep": 1.5}, c={"sleep": 1.5})
    out = retrain(root)

    assert [s["stage"] for s in out["stages"]] == ["a", "b", "c", "d"]
    assert {s["status"] for s in out["stages"]} == {"ran"}
    assert {s["worker"].rsplit("/", 1)[1] for s in out["stages"]} == {str(os.getpid())}
    assert (root / "out" / "d.txt").read_text() == "a=1;b=2;a=1;c=3;d=4;"
    b, c = metrics(root, "b"), metrics(root, "c")
    assert metrics(root, "a")["end"] <= min(b["start"], c["start"])
    assert max(b["start"], c["start"]) < min(b["end"], c["end"]), "b and c did not overlap"
    assert max(b["end"], c["end"]) <= metrics(root, "d")["start"]
    assert "Data and pipelines are up to date" in dvc(root, "status")

    before = {p: p.stat().st_mtime_ns for p in (root / "out").iterdir()}
    again = retrain(root)
    assert {s["status"] for s in again["stages"]} == {"up to date"}
    assert again["stage_busy_s"] == 0.0
    # a run that changed outputs has its MLflow parent run; a no-op run creates none
    assert out["mlflow_run_id"] and again["mlflow_run_id"] is None
    assert {p: p.stat().st_mtime_ns for p in (root / "out").iterdir()} == before


def test_transient_failure_is_retried_and_the_run_completes(tiny, tmp_path):
    marker = tmp_path / "c-failed-once"
    root = tiny(
        c={"fail_once": str(marker)},
        orchestration={"stages": {"c": {"retries": 2, "retry_delay_seconds": 0}}},
    )
    out = retrain(root)
    assert marker.exists()
    c = next(s for s in out["stages"] if s["stage"] == "c")
    assert c["attempts"] == 2 and c["status"] == "ran"
    assert (root / "out" / "d.txt").exists()


def test_permanent_failure_fails_the_run_naming_the_stage(tiny):
    root = tiny(b={"fail": "boom"}, a={"mlflow": True})
    state = retrain(root, return_state=True)

    assert state.is_failed()
    assert "stage 'b' failed (exit code" in state.message
    assert "b: permanent failure: boom" in state.message  # the tail of the stage's output
    assert not (root / "out" / "d.txt").exists()
    assert (root / "out" / "c.txt").exists()  # the independent branch finished
    [parent] = mlflow_runs(f"tags.prefect_flow_run_id = '{state.state_details.flow_run_id}'")
    assert parent.info.status == "FAILED"
    [child] = mlflow_runs(f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert child.info.run_name == "a" and child.info.status == "FINISHED"


def test_stage_timeout_kills_the_stage_and_fails_the_run(tiny):
    root = tiny(b={"sleep": 60}, orchestration={"stages": {"b": {"timeout_seconds": 2}}})
    start = time.monotonic()
    state = retrain(root, return_state=True)
    assert state.is_failed() and "stage 'b' timed out after 2 s" in state.message
    assert time.monotonic() - start < 45


def test_unknown_override_key_is_rejected_before_anything_runs(tiny):
    from edge_pipeline.core.errors import ConfigError

    root = tiny()
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"b\.valeu: not an option; did you mean value\?"):
        retrain(root, overrides={"b.valeu": 7})
    with pytest.raises(ConfigError, match=r"b\.value='x': Input should be a valid integer"):
        retrain(root, overrides={"b.value": "x"})
    assert time.monotonic() - start < 20
    assert not (root / "out").exists() and not (root / "dvc.lock").exists()


def test_misspelt_key_in_params_yaml_fails_the_run_before_any_stage(tiny):
    from edge_pipeline.core.errors import ConfigError

    root = tiny(orchestration={"defaults": {"retries": 2, "retry_dealy_seconds": 1}})
    with pytest.raises(ConfigError, match=r"defaults\.retry_dealy_seconds: not an option; "
                       r"did you mean retry_delay_seconds\?"):  # fmt: skip
        retrain(root)
    root = make_repo(root.parent / "repo2", {"orchestration": {"stages": {"bb": {"retries": 1}}}})
    with pytest.raises(ConfigError, match=r"orchestration\.stages\.bb: not a dvc.yaml stage; "
                       r"did you mean b\?"):  # fmt: skip
        retrain(root)
    assert not (root / "out").exists()


@pytest.mark.parametrize("code", [78, 65])
def test_stage_exiting_on_bad_params_or_input_fails_at_once_without_retry(tiny, code):
    root = tiny(
        b={"exit_code": code},
        orchestration={"defaults": {"retries": 3, "retry_delay_seconds": 30, "backoff": 1,
                                    "timeout_seconds": 120}},
    )  # fmt: skip
    start = time.monotonic()
    state = retrain(root, return_state=True)
    elapsed = time.monotonic() - start

    assert state.is_failed()
    what = "params" if code == 78 else "input"
    assert f"stage 'b' failed on bad {what} (exit {code}, no retry)" in state.message
    assert "b: params error: b.value is wrong" in state.message  # the stage's own message
    assert elapsed < 30, f"took {elapsed:.0f} s: was it retried?"  # one retry would wait 30 s
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    this_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=this_run)
    [b] = [t for t in tasks if t.name == "b"]
    assert b.run_count == 1 and b.state.is_failed()


def test_overrides_are_recorded_as_a_dvc_experiment_and_committed_params_stay(tiny):
    root = tiny()
    retrain(root)
    params_before = (root / "params.yaml").read_bytes()
    lock_before = (root / "dvc.lock").read_bytes()

    out = retrain(root, overrides={"b.value": 20})

    name = out["experiment"]
    assert name and name in dvc(root, "exp", "list", "--name-only").split()
    baseline = json.loads(dvc(root, "exp", "show", "--json"))[1]
    [exp] = [e for e in baseline["experiments"] if e["name"] == name]
    exp_data = exp["revs"][0]["data"]
    assert exp_data["params"]["params.yaml"]["data"]["b"]["value"] == 20
    assert exp_data["metrics"]["metrics/d.json"]["data"]["value"] == 4
    statuses = {s["stage"]: s["status"] for s in out["stages"]}
    assert statuses == {"a": "up to date", "b": "ran", "c": "up to date", "d": "ran"}
    # the workspace is back on the committed params, outputs included
    assert (root / "params.yaml").read_bytes() == params_before
    assert (root / "dvc.lock").read_bytes() == lock_before
    assert (root / "out" / "d.txt").read_text() == "a=1;b=2;a=1;c=3;d=4;"
    assert metrics(root, "b")["value"] == 2
    assert "Data and pipelines are up to date" in dvc(root, "status")

    [parent] = mlflow_runs(f"attributes.run_id = '{out['mlflow_run_id']}'")
    tags = parent.data.tags
    assert parent.info.status == "FINISHED" and tags["dvc_experiment"] == name
    assert len(tags["git_commit"]) == 40 and tags["prefect_flow_run_id"]
    assert f"dvc exp apply {name}" in tags["mlflow.note.content"]
    assert parent.data.params["override.b.value"] == "20"


def _resume_when_paused(decision: str, found: list[str]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    paused = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    deadline = time.monotonic() + 90
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=paused)
            if runs:
                found.append(str(runs[0].id))
                # What the UI's Resume form sends: the run input of the ApprovalInput model.
                resume_flow_run(runs[0].id, run_input={"decision": decision, "comment": "ok by QA"})
                return
            time.sleep(0.5)


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_approval_gate_pauses_and_resumes_with_the_decision(tiny, decision):
    root = tiny(b={"policy": "approval", "gate": "needs_approval"})
    found: list[str] = []
    resumer = threading.Thread(target=_resume_when_paused, args=(decision, found))
    resumer.start()
    state = retrain(root, return_state=True)
    resumer.join()

    assert found, "the flow run never paused"
    if decision == "approve":
        assert state.is_completed()
        assert (root / "out" / "d.txt").exists()
    else:
        assert state.is_failed() and "stage 'b' gate rejected: ok by QA" in state.message
        assert not (root / "out" / "d.txt").exists()


def test_passed_gate_does_not_pause(tiny):
    root = tiny(b={"policy": "approval", "gate": "pass"})
    assert retrain(root)["stages"][-1]["status"] == "ran"


def test_sigterm_kills_stage_processes_and_ends_mlflow_runs_killed(tiny):
    from prefect.exceptions import TerminationSignal

    root = tiny(b={"sleep": 120, "mlflow": True})
    commit = run_git(root, "rev-parse", "HEAD")
    got_term: list[int] = []

    def terminate_once_b_tracks() -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if mlflow_runs("attributes.run_name = 'b' and attributes.status = 'RUNNING'"):
                os.kill(os.getpid(), signal.SIGTERM)  # what `prefect` cancellation / systemd send
                return
            time.sleep(0.5)

    # Prefect turns SIGTERM into TerminationSignal in the flow, then re-sends it to the previous
    # handler: a harmless one here, so pytest survives.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got_term.append(signum))
    killer = threading.Thread(target=terminate_once_b_tracks)
    start = time.monotonic()
    try:
        killer.start()
        with pytest.raises(TerminationSignal):
            retrain(root)
    finally:
        killer.join()
        signal.signal(signal.SIGTERM, previous)
    assert time.monotonic() - start < 90  # b's 120 s sleep did not run out
    [parent] = mlflow_runs(f"tags.git_commit = '{commit}'")
    assert parent.info.status == "KILLED"
    [child] = mlflow_runs(f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert child.info.run_name == "b" and child.info.status == "KILLED"
    alive = [p for p in psutil.process_iter(["cmdline"]) if "stage.py" in (p.info["cmdline"] or [])]
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def test_dask_task_runner_runs_the_stages_on_a_local_cluster(tiny):
    from prefect_dask import DaskTaskRunner

    from flows.config import run_params
    from flows.retrain import build_flow

    root = tiny(orchestration={"task_runner": "dask"})
    _, cfg = run_params(root / "params.yaml", {})
    flow = build_flow(cfg)
    assert isinstance(flow.task_runner, DaskTaskRunner)
    assert flow.task_runner.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1}

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_WORKSPACE", str(root))
        out = flow()
    assert [s["status"] for s in out["stages"]] == ["ran"] * 4
    # every task ran in a Dask worker process, none in this (the flow's) process
    assert all(int(s["worker"].rsplit("/", 1)[1]) != os.getpid() for s in out["stages"])
    assert (root / "out" / "d.txt").read_text() == "a=1;b=2;a=1;c=3;d=4;"


def test_concurrent_runs_take_turns_on_the_workspace(tiny):
    """Two runs at once (e.g. nightly + on-demand): the global limit makes the second one wait."""
    root = tiny(b={"sleep": 1})
    outs: dict[int, dict[str, Any]] = {}

    def start(value: int) -> None:
        outs[value] = retrain(root, overrides={"b.value": value})

    threads = [threading.Thread(target=start, args=(v,)) for v in (21, 22)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    first, second = sorted(outs.values(), key=lambda o: o["waited_for_workspace_s"])
    assert second["waited_for_workspace_s"] > 1.0
    baseline = json.loads(dvc(root, "exp", "show", "--json"))[1]
    values = {
        e["name"]: e["revs"][0]["data"]["params"]["params.yaml"]["data"]["b"]["value"]
        for e in baseline["experiments"]
    }
    assert values == {outs[21]["experiment"]: 21, outs[22]["experiment"]: 22}
    assert yaml.safe_load((root / "params.yaml").read_text())["b"]["value"] == 2


def test_a_fifo_in_the_ingest_source_fails_the_run_before_dvc_hangs(tiny):
    root = tiny(ingest={"source": "src"})
    os.mkfifo(root / "src" / "pipe.png")

    def unblock_a_hung_reader() -> None:  # keeps the test bounded if DVC reads the FIFO after all
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not done.is_set():
            time.sleep(0.5)
        if not done.is_set():
            with contextlib.suppress(OSError):
                os.close(os.open(root / "src" / "pipe.png", os.O_WRONLY | os.O_NONBLOCK))

    done = threading.Event()
    guard = threading.Thread(target=unblock_a_hung_reader, daemon=True)
    guard.start()
    start = time.monotonic()
    try:
        state = retrain(root, return_state=True)
    finally:
        done.set()
    assert time.monotonic() - start < 60, "the flow waited for the FIFO"
    assert state.is_failed()
    assert "ingest.source=src: 1 entries that DVC cannot hash" in state.message
    assert "pipe.png (special_file)" in state.message
    assert not (root / "out").exists()  # no stage ran


def test_a_recorded_run_is_reproduced_in_a_fresh_clone_from_its_mlflow_description(tiny, tmp_path):
    tiny()  # the environment: Prefect server, MLflow store, the tiny schema
    remote = tmp_path / "dvc-remote"
    root = make_repo(tmp_path / "recorded", remote=remote)
    out = retrain(root, overrides={"b.value": 20})
    [parent] = mlflow_runs(f"attributes.run_id = '{out['mlflow_run_id']}'")
    note = parent.data.tags["mlflow.note.content"]
    command = re.search(r"git checkout (\w+) && dvc pull && dvc repro", note)
    assert command, note
    commit = command.group(1)
    assert parent.data.tags["run_commit"] == commit
    assert run_git(root, "rev-parse", parent.data.tags["run_branch"]) == commit
    assert "outputs pushed to the DVC remote 'local'" in note
    # the workspace itself is back on the committed params
    assert yaml.safe_load((root / "params.yaml").read_text())["b"]["value"] == 2

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(root), str(clone))
    run(clone, "git", "checkout", "-q", commit)
    dvc(clone, "pull")
    assert "Data and pipelines are up to date" in dvc(clone, "repro")  # all restored by the pull
    assert (clone / "out" / "d.txt").read_text() == "a=1;b=20;a=1;c=3;d=4;"
    recorded = {s: metrics(clone, s)["value"] for s in "abcd"}
    assert recorded == {"a": 1, "b": 20, "c": 3, "d": 4}
    dvc(clone, "repro", "--force")  # and computing it again gives the same figures
    assert {s: metrics(clone, s)["value"] for s in "abcd"} == recorded
    assert (clone / "out" / "d.txt").read_text() == "a=1;b=20;a=1;c=3;d=4;"


def test_the_flow_waits_for_a_slow_temporary_server_unless_told_otherwise(monkeypatch):
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as timeout
    from prefect.settings import temporary_settings

    from flows.local_server import STARTUP_TIMEOUT_S, patient_temporary_server

    monkeypatch.delenv(timeout.name, raising=False)
    # Prefect's own default (this module's test harness changes the process's value)
    with temporary_settings(updates={timeout: 20}):
        with patient_temporary_server():
            assert timeout.value() == STARTUP_TIMEOUT_S > 20
        assert timeout.value() == 20
        monkeypatch.setenv(timeout.name, "7")  # the user chose: left alone
        with patient_temporary_server():
            assert timeout.value() == 20
