"""The workspace lock, and what a run killed earlier left behind.

- `workspace_lock`: `fcntl.flock` on `<workspace>/.dvc/tmp/pipeline.lock`, held by the flow process
  for its whole run. It lives with the workspace, whatever Prefect server or PREFECT_HOME a run
  talks to, and the kernel releases it when the process dies (SIGKILL included), so a killed run
  never blocks the next one. The file names the holder, for the message of a run that waits.
- `recover`: run once the lock is held, so no other run of this workspace is alive. It resets the
  Prefect global limit's slots (a slot left taken by a killed run), marks MLflow runs of dead
  processes KILLED, removes DVC's rwlock file if a kill left it half-written, and removes the
  temporary siblings (`.<name>.tmp-XXXX`) of killed stages.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from edge_pipeline.core import tracking
from edge_pipeline.core.io import TMP_MARK

LOCK_PATH = Path(".dvc") / "tmp" / "pipeline.lock"
POLL_S = 0.5


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@contextlib.contextmanager
def workspace_lock(
    root: Path, *, holder: str, on_wait: Callable[[str], None], poll_s: float = POLL_S
) -> Iterator[float]:
    """Hold the workspace's file lock; yields the seconds spent waiting for it.

    Waits (polling, so Ctrl-C and SIGTERM stay prompt) while another process holds it, after
    telling `on_wait` who does.
    """
    path = Path(root) / LOCK_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    start = time.monotonic()
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    who = _holder(path) or "another process"
                    on_wait(f"waiting for the workspace {root}: held by {who}")
                    told = True
                time.sleep(poll_s)
        waited = time.monotonic() - start
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder} (pid {os.getpid()} on {socket.gethostname()})\n".encode(), 0)
        yield waited
    finally:
        os.close(fd)  # releases the lock


def reset_stale_slots(limit: str) -> int:
    """Free the slots of the Prefect global limit `limit`; returns how many were taken.

    Call only while holding the workspace lock: then no live run of this workspace holds one, so
    a taken slot was left by a run that was killed (e.g. with the temporary server that held its
    lease).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            taken = client.read_global_concurrency_limit_by_name(limit).active_slots
        except ObjectNotFound:
            return 0
        if taken:
            client.update_global_concurrency_limit(
                limit, GlobalConcurrencyLimitUpdate(active_slots=0)
            )
    return taken


def remove_corrupt_dvc_rwlock(root: Path) -> bool:
    """Remove DVC's per-path lock file when it is not JSON (a `dvc repro` SIGKILLed while writing
    it): every later `dvc repro` would fail on it (RWLockFileCorruptedError), and DVC cannot read a
    live holder from it either. True when removed."""
    path = root / ".dvc" / "tmp" / "rwlock"
    try:
        json.loads(path.read_text())
    except FileNotFoundError:
        return False
    except (ValueError, UnicodeDecodeError):
        path.unlink()
        return True
    return False


def remove_stale_temps(root: Path, output_roots: Iterable[str]) -> list[Path]:
    """Remove `.<name>.tmp-XXXX` siblings (core/io.atomic_path) under the output roots."""
    removed = []
    for top in output_roots:
        base = Path(root) / top
        if not base.is_dir():
            continue
        for path in sorted(base.rglob(f".*{TMP_MARK}*")):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue  # inside a folder removed a moment ago
            removed.append(path.relative_to(root))
    return removed


def recover(
    root: Path, *, limit: str, output_roots: Iterable[str], log: Callable[[str], None]
) -> None:
    """Clean up after a run of this workspace that was killed (hold the workspace lock)."""
    slots = reset_stale_slots(limit)
    if slots:
        log(f"freed {slots} slot(s) of the concurrency limit {limit!r} left by a killed run")
    killed = tracking.kill_orphaned_runs()
    if killed:
        log(f"marked {len(killed)} MLflow run(s) of dead processes KILLED: {', '.join(killed)}")
    if remove_corrupt_dvc_rwlock(root):
        log("removed DVC's half-written .dvc/tmp/rwlock left by a killed run")
    temps = remove_stale_temps(root, output_roots)
    if temps:
        log(f"removed {len(temps)} temporary output(s) of killed stages: {temps[:5]}")
