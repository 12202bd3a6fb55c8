"""The flow run's MLflow parent run: stage runs nest under it via PIPELINE_PARENT_RUN_ID.

It never stays RUNNING: FINISHED on success, KILLED on SIGTERM/cancellation/Ctrl-C (Prefect turns
SIGTERM into `TerminationSignal` in the flow), FAILED on any other exception (timeouts included).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.exceptions import TerminationSignal

from edge_pipeline.core import tracking

_BAD_METRIC_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")


@dataclass
class ParentRun:
    run_id: str
    experiment_id: str
    client: Any

    def url(self, ui_base: str) -> str:
        """Link to the run: the tracking server itself when it is http(s), else `ui_base`."""
        uri = tracking.tracking_uri()
        base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else ui_base
        return f"{base}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def record(self, *, commit: str, branch: str, pushed: str, experiment: str | None) -> None:
        """Point the description at the run's record: the commit on `branch`, what was pushed."""
        base = self.client.get_run(self.run_id).data.tags
        dirty = base.get("git_dirty") == "true"
        note = reproduce_note(
            commit or base.get("git_commit", "unknown"), experiment, dirty,
            branch=branch, pushed=pushed,
        )  # fmt: skip
        self.client.set_tag(self.run_id, "mlflow.note.content", note)
        if commit:
            self.client.set_tag(self.run_id, "run_commit", commit)
            self.client.set_tag(self.run_id, "run_branch", branch)

    def log_stage_seconds(self, seconds: Mapping[str, float]) -> None:
        for stage, value in seconds.items():
            key = "stage_seconds." + _BAD_METRIC_CHARS.sub("_", stage)
            self.client.log_metric(self.run_id, key, float(value))


def git_state(root: Path) -> tuple[str, bool]:
    """(HEAD commit, whether tracked files differ from it) of the workspace; ('unknown', True)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    return commit, bool(dirty)


def reproduce_note(
    commit: str, experiment: str | None, dirty: bool, *, branch: str = "", pushed: str = ""
) -> str:
    """The run description: how to get this run's params, data and models back.

    `commit` is the run's record (flows/record.py: a commit on `branch`), or HEAD at run time
    while the run is going on and when it changed nothing git tracks.
    """
    lines = ["Reproduce this run:", "", f"    git checkout {commit} && dvc pull && dvc repro", ""]
    if branch:
        lines.append(
            f"(`{commit[:12]}` is branch `{branch}`: the params, dvc.lock and metrics of "
            "this run; a clone fetches it.)"
        )
    if experiment:
        lines.append(f"Also DVC experiment `{experiment}` (`dvc exp apply {experiment}`).")
    if pushed:
        lines.append(f"DVC: {pushed}.")
    if dirty:
        lines.append(
            "The workspace had uncommitted changes to tracked files at run time"
            + (" (recorded in that commit)." if branch else ".")
        )
    return "\n".join(lines).rstrip()


@contextlib.contextmanager
def parent_run(
    *, name: str, root: Path, experiment: str | None, flow_run_id: str, params: Mapping[str, Any]
) -> Iterator[ParentRun]:
    """Create the parent run with its tags and description; end it with the right status."""
    mlflow = tracking.configure()
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    commit, dirty = git_state(root)
    tags = {
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
        "dvc_experiment": experiment or "",
        "prefect_flow_run_id": flow_run_id,
        "mlflow.note.content": reproduce_note(commit, experiment, dirty),
        "pipeline": "retrain",
        **tracking.process_tags(),
    }
    run = client.create_run(exp.experiment_id, run_name=name, tags=tags)
    handle = ParentRun(run.info.run_id, exp.experiment_id, client)
    status = "FAILED"
    try:
        if params:
            entries = [mlflow.entities.Param(f"override.{k}", str(v)) for k, v in params.items()]
            client.log_batch(run.info.run_id, params=entries)
        yield handle
        status = "FINISHED"
    except (TerminationSignal, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        client.set_terminated(run.info.run_id, status=status)
