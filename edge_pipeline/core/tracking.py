"""MLflow tracking shared by the stages: one run per stage, nested under the flow's parent run.

- Tracking store: `MLFLOW_TRACKING_URI` if set, else a local SQLite file `mlruns.db` with
  artifacts in `mlartifacts/` at the repository root (both git-ignored, independent of DVC),
  recorded relative to it (core/artifact_location.py): a copied or moved project keeps its links.
- `PIPELINE_PARENT_RUN_ID` (set by flows/retrain.py) nests stage runs under the flow's run;
  without it (plain `dvc repro`) each stage logs a standalone run.
- A run that raises, or whose process gets SIGTERM, ends FAILED/KILLED. A process killed with
  SIGKILL cannot end its run, so every run is tagged with its `host` and `pid`, and the next flow
  run marks runs left RUNNING by a dead process KILLED (`kill_orphaned_runs`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from edge_pipeline.core import artifact_location
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.core.machine import cpu_description

log = logging.getLogger(__name__)
EXPERIMENT = os.environ.get("MLFLOW_EXPERIMENT_NAME", "edge-pipeline")
PARENT_ENV = "PIPELINE_PARENT_RUN_ID"
REPO_ROOT = Path(__file__).resolve().parents[2]


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO_ROOT / 'mlruns.db'}"


def project_db() -> Path | None:
    """The project's own `mlruns.db` when the tracking URI is it, else None (another store)."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return db if db == REPO_ROOT / "mlruns.db" else None


def configure() -> Any:
    """Point mlflow at the store and experiment; returns the mlflow module (imported lazily).

    Artifacts of a new experiment go to `MLFLOW_ARTIFACT_ROOT` if set; else, on the project's
    `mlruns.db`, to `mlartifacts/` recorded relative to the project root (artifact_location.py;
    older absolute locations into this project, or into a moved one, are rewritten); on an
    http(s) tracking server, where the server puts them (proxied `mlflow-artifacts:/` with
    `mlflow server`'s defaults); on another database, to `<project>/mlartifacts` (absolute).

    Raises ConfigError when the project's relative artifacts would be resolved against another
    working directory than the project root.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    db = project_db()
    chosen = os.environ.get("MLFLOW_ARTIFACT_ROOT")
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        artifacts = chosen
        if not chosen and not tracking_uri().startswith(("http://", "https://")):
            artifacts = (REPO_ROOT / artifact_location.ARTIFACT_DIR).as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)
    if db is not None and not chosen:
        for old, n in artifact_location.relativize(db, REPO_ROOT).items():
            log.info("MLflow: %d artifact URIs under %s made relative to the project", n, old)
    exp = mlflow.set_experiment(EXPERIMENT)
    relative = db is not None and artifact_location.is_relative(exp.artifact_location)
    if relative and Path.cwd().resolve() != REPO_ROOT:
        raise ConfigError(
            f"MLflow artifacts of {db} are at {artifact_location.ARTIFACT_DIR}/ relative to "
            f"the project root, but the working directory is {Path.cwd()}: run from "
            f"{REPO_ROOT} (cd there), or set MLFLOW_TRACKING_URI to another store"
        )
    return mlflow


def process_tags() -> dict[str, str]:
    """Tags naming the process that owns a run, for `kill_orphaned_runs`."""
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def _process_alive(pid: int, run_start_ms: int) -> bool:
    """Whether `pid` is the process that started a run at `run_start_ms` (not a reused pid)."""
    import psutil

    try:
        return psutil.Process(pid).create_time() <= run_start_ms / 1000 + 1
    except psutil.Error:
        return False


def kill_orphaned_runs() -> list[str]:
    """Mark RUNNING runs whose process (on this host) is gone KILLED; returns their names."""
    mlflow = configure()
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    host = socket.gethostname()
    killed = []
    for run in client.search_runs(
        [exp.experiment_id], "attributes.status = 'RUNNING'", max_results=1000
    ):
        tags = run.data.tags
        pid = tags.get("pid", "")
        if tags.get("host") != host or not pid.isdigit():
            continue  # another machine's run, or one from before these tags: cannot tell
        if not _process_alive(int(pid), run.info.start_time):
            client.set_terminated(run.info.run_id, status="KILLED")
            killed.append(run.info.run_name or run.info.run_id)
    return killed


def flatten(
    d: Mapping[str, Any], prefix: str = "", *, max_items: int | None = None
) -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: MLflow params, metrics tables in the Prefect UI.

    A list becomes its string form (MLflow params are strings), or `[N items]` when it has more
    than `max_items` items.
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}.", max_items=max_items))
        elif isinstance(v, list) and max_items is not None and len(v) > max_items:
            out[key] = f"[{len(v)} items]"
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=REPO_ROOT
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def deps_hash(stage: str, lock_path: Path = Path("dvc.lock")) -> str:
    """Hash of the stage's deps and params as recorded in dvc.lock ('' when not locked yet).

    DVC writes dvc.lock after the stage command ends, so this is the hash of the previous run's
    inputs for the stage; together with the git commit it pins what the run saw.
    """
    import yaml

    if not lock_path.exists():
        return ""
    lock = yaml.safe_load(lock_path.read_text()) or {}
    entry = (lock.get("stages") or {}).get(stage)
    if not entry:
        return ""
    blob = repr((entry.get("deps"), entry.get("params"))).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


_last_end_ms = 0  # end of the previous stage run in this process (tests run several)


def stage_start_ms() -> int:
    """When the stage began, in ms since the epoch: its process's start (the DVC stage command),
    so a run covers imports, data loading and outputs, not only the block inside `stage_run`
    (runs opened at the end of a stage showed 298 ms for a 199 s stage); a later run in the
    same process starts where the previous one ended."""
    import psutil

    return max(int(1000 * psutil.Process().create_time()), _last_end_ms)


@contextlib.contextmanager
def stage_run(stage: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """Start the stage's MLflow run (nested under PIPELINE_PARENT_RUN_ID if set) and yield mlflow.

    The run's start time is `stage_start_ms()`, its end time the end of the block.

    Logs the flattened params and the tags stage / git_commit / dvc_deps_hash / cpu. The run ends
    FINISHED on success, FAILED on an exception and KILLED on SIGTERM.
    """
    mlflow = configure()
    parent = os.environ.get(PARENT_ENV)
    tags = {"stage": stage, "git_commit": git_commit(), "dvc_deps_hash": deps_hash(stage)}
    tags.update(process_tags(), cpu=cpu_description())
    if parent:
        tags["mlflow.parentRunId"] = parent
    from mlflow import MlflowClient

    client = MlflowClient()
    run_id: str | None = None
    ended = False

    def end(status: str) -> None:
        nonlocal ended
        if ended or run_id is None:
            return
        ended = True
        if mlflow.active_run() is not None:
            mlflow.end_run(status=status)
        else:  # created, not yet started: a SIGTERM or error in between must not leave it RUNNING
            client.set_terminated(run_id, status=status)

    def on_sigterm(signum: int, frame: Any) -> None:
        end("KILLED")
        raise SystemExit(128 + signum)

    # The handler comes first: the run is RUNNING in the store from create_run on.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main else None
    try:
        experiment = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
        created = client.create_run(
            experiment, start_time=stage_start_ms(), tags=tags, run_name=stage
        )
        run_id = created.info.run_id
        mlflow.start_run(run_id=run_id)
        if params:
            mlflow.log_params(flatten(params, f"{stage}."))
        yield mlflow
    except BaseException:
        end("FAILED")
        raise
    else:
        end("FINISHED")
    finally:
        global _last_end_ms
        _last_end_ms = int(1000 * time.time())
        if in_main:
            signal.signal(signal.SIGTERM, previous)
