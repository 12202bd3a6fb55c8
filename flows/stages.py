"""One DVC stage as one Prefect task: `dvc repro --single-item <stage>` in a child process group.

DVC decides whether the stage is stale and records it in dvc.lock; this module adds what a long
unattended run needs: live log lines in the Prefect UI, a timeout that ends the whole process group
(SIGTERM first, so the stage's MLflow run ends KILLED), retries of DVC lock contention that do
not count against the stage's own retries, and no retry at all for a stage that exited with one of
edge_pipeline.core.errors.PERMANENT_EXITS (bad params, bad input: a second try cannot pass), nor
once the run is stopping (Ctrl-C, SIGTERM, cancellation: `terminate_all`). Every stage process
group is registered with flows/watchdog.py, so it dies with the flow process even on SIGKILL.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.runtime import task_run

from edge_pipeline.core.errors import EXIT_CONFIG, PERMANENT_EXITS
from edge_pipeline.core.tracking import PARENT_ENV
from flows import watchdog
from flows.dag import Stage
from flows.publish import publish_stage

# Two `dvc repro` processes in one workspace can collide on DVC's repo lock or its per-path rwlock.
LOCK_ERRORS = ("Unable to acquire lock", "is busy, it is being blocked by")
LOCK_RETRIES = 5
KILL_GRACE_S = watchdog.GRACE_S
TAIL_LINES = 40
# A stage's log line (edge_pipeline/core/logs.py: "<time> <stage> LEVEL msg"), DVC's "WARNING: "
# and Python's "UserWarning: " lines: their level in the Prefect log.
_LEVEL = re.compile(
    r"^(?:\d{4}-\d\d-\d\d[ T][\d:,.]+ \S+ (?P<stage>WARNING|ERROR|CRITICAL) "
    r"|(?P<dvc>WARNING|ERROR): |.*\b\w*(?P<py>Warning): )"
)
# DVC's advice after every stage; the flow pushes itself (flows/record.py), so it is dropped.
BOILERPLATE = ("Use `dvc push` to send your updates to remote storage.",)
# How `dvc repro` reports the exit status of a stage command that failed (dvc/stage/exceptions.py).
_STAGE_EXIT = re.compile(r"failed to run: .*, exited with (-?\d+)")

_live: set[subprocess.Popen[str]] = set()
_live_lock = threading.Lock()
_stopping = threading.Event()  # set by terminate_all: start nothing more, retry nothing


class StageFailed(RuntimeError):
    """The stage failed; the message names the stage and ends with its last output lines."""

    def __init__(self, stage: str, reason: str, tail: list[str]) -> None:
        self.stage, self.reason, self.tail = stage, reason, tail
        text = "\n".join(tail[-TAIL_LINES:])
        super().__init__(f"stage '{stage}' {reason}\n--- last output of {stage} ---\n{text}")


class PermanentStageFailure(StageFailed):
    """The stage rejected its params (exit 78) or its input (exit 65): retrying cannot help."""


def stage_exit_code(tail: list[str]) -> int | None:
    """The stage command's own exit status as `dvc repro` reported it (None when not reported)."""
    for line in reversed(tail):
        match = _STAGE_EXIT.search(line)
        if match:
            return int(match.group(1))
    return None


def retry_unless_permanent(task: Task[..., object], task_run: TaskRun, state: State) -> bool:
    """Prefect's `retry_condition_fn`: retry any failure but a PermanentStageFailure, and nothing
    once the run is stopping."""
    return not _stopping.is_set() and not isinstance(state.data, PermanentStageFailure)


def start_accepting() -> None:
    """A new run begins: stages may start again (after an earlier run in this process stopped)."""
    _stopping.clear()


@dataclass(frozen=True)
class StageResult:
    name: str
    status: str  # ran | restored (from DVC's run cache) | up to date
    started: float  # epoch seconds of the stage process (0 when nothing was started)
    ended: float
    attempts: int
    worker: str = ""  # host/pid of the process that ran the task (a Dask worker, or the flow)

    @property
    def changed(self) -> bool:
        """Whether the stage's outputs may differ from before this run."""
        return self.status != "up to date"

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def row(self) -> dict[str, str | float | int]:
        """One row of the run's summary table."""
        return {
            "stage": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 2),
            "attempts": self.attempts,
            "worker": self.worker,
        }


def terminate_all(grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM every stage process group still running, SIGKILL what is left after `grace_s`.

    From now on no stage starts and no failed stage is retried (until `start_accepting`).
    """
    _stopping.set()
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    # `dvc repro` (the group leader) can exit before its stage process has finished ending its
    # MLflow run: wait for every member of each group, then SIGKILL what is left.
    for proc in procs:
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(proc.pid):
            _signal_group(proc, signal.SIGKILL)
            wait_until = time.monotonic() + 2.0
            while _group_alive(proc.pid) and time.monotonic() < wait_until:
                time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    """Whether process group `pgid` still has a member that is not a zombie."""
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
    return False


def _signal_group(proc: subprocess.Popen[str], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def run_command(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout_s: float,
    on_line: Callable[[str], None],
) -> tuple[int | None, list[str]]:
    """Run `argv` in its own process group; returns (exit code or None on timeout, last lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=200)
    if _stopping.is_set():
        return None, ["not started: the run is stopping"]
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        errors="replace",
    )
    with _live_lock:
        _live.add(proc)
    watchdog.guard(pgid=proc.pid)  # a session leader: its pgid is its pid

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code: int | None = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        code = None
    finally:
        with _live_lock:
            _live.discard(proc)
        watchdog.unguard(pgid=proc.pid)
    reader.join(timeout=5)
    return code, list(tail)


def line_level(line: str) -> int:
    """The logging level of a stage's output line: WARNING/ERROR lines stand out in Prefect."""
    match = _LEVEL.match(line)
    if match is None:
        return logging.INFO
    word = match.group("stage") or match.group("dvc") or "WARNING"
    return logging.WARNING if word == "WARNING" else logging.ERROR


def stage_logger(logger: logging.LoggerAdapter[Any], stage: str) -> Callable[[str], None]:
    """on_line for `repro`: each line at its level, prefixed with the stage; boilerplate dropped."""

    def on_line(line: str) -> None:
        if line.strip() not in BOILERPLATE:
            logger.log(line_level(line), "%s | %s", stage, line)

    return on_line


def stage_env(root: Path, parent_run_id: str | None) -> dict[str, str]:
    """The stage's environment: ours, this interpreter's bin first on PATH, the MLflow parent id."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    if parent_run_id:
        env[PARENT_ENV] = parent_run_id
    return env


def repro(
    stage: str,
    *,
    root: Path,
    env: dict[str, str],
    timeout_s: float,
    on_line: Callable[[str], None],
    run_cache: bool = True,
) -> str:
    """`dvc repro --single-item <stage>` -> ran / restored / up to date; raises StageFailed.

    `run_cache=False` adds `--no-run-cache`: a stale stage runs even when DVC's run cache holds
    outputs of the same deps and params (the run is still saved to the run cache).
    """
    argv = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", stage]
    if not run_cache:
        argv.append("--no-run-cache")
    for attempt in range(LOCK_RETRIES + 1):
        code, tail = run_command(argv, cwd=root, env=env, timeout_s=timeout_s, on_line=on_line)
        if _stopping.is_set():
            raise StageFailed(stage, "stopped: the flow run is stopping", tail)
        if code is None:
            raise StageFailed(
                stage, f"timed out after {timeout_s:.0f} s (process group killed)", tail
            )
        if code == 0:
            text = "\n".join(tail)
            if "Running stage" in text:
                return "ran"
            return "restored" if "is cached - skipping run" in text else "up to date"
        if attempt < LOCK_RETRIES and any(m in line for line in tail for m in LOCK_ERRORS):
            on_line(f"DVC lock held by another process; retrying in {1 + attempt} s")
            time.sleep(1 + attempt)
            continue
        own = stage_exit_code(tail)
        if own in PERMANENT_EXITS:
            what = "params" if own == EXIT_CONFIG else "input"
            raise PermanentStageFailure(stage, f"failed on bad {what} (exit {own}, no retry)", tail)
        raise StageFailed(stage, f"failed (exit code {code})", tail)
    raise AssertionError("unreachable")


@task(
    name="dvc-stage",
    cache_policy=NO_CACHE,
    log_prints=True,
    retry_condition_fn=retry_unless_permanent,
)
def run_stage(
    stage: Stage,
    workspace: str,
    needs_run: bool,
    parent_run_id: str | None,
    timeout_s: float,
    run_cache: bool = True,
) -> StageResult:
    """Bring one stage up to date through DVC, then publish its report, metrics and lineage.

    `needs_run` is False when DVC reported the stage up to date at the start of the flow run and
    none of its upstream stages changed since: then no process is started at all. `run_cache`:
    see `repro`.
    """
    logger = get_run_logger()
    root = Path(workspace)
    started = ended = 0.0
    status = "up to date"
    if needs_run:
        started = time.time()
        status = repro(
            stage.name,
            root=root,
            env=stage_env(root, parent_run_id),
            timeout_s=timeout_s,
            on_line=stage_logger(logger, stage.name),
            run_cache=run_cache,
        )
        ended = time.time()
    worker = f"{socket.gethostname()}/{os.getpid()}"
    result = StageResult(stage.name, status, started, ended, task_run.run_count or 1, worker)
    logger.info("stage %s: %s (%.1f s)", stage.name, status, result.seconds)
    publish_stage(stage, root=root, status=status, seconds=result.seconds)
    return result
