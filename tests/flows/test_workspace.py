"""flows/workspace.py and flows/watchdog.py: the workspace lock, clean-up after a killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from flows.workspace import (
    LOCK_PATH,
    remove_corrupt_dvc_rwlock,
    remove_stale_temps,
    workspace_lock,
)

REPO = Path(__file__).resolve().parents[2]


def _python(code: str, **kwargs) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env, stdout=subprocess.PIPE, text=True, **kwargs,
    )  # fmt: skip


def test_lock_excludes_a_second_holder_and_names_the_first(tmp_path):
    told: list[str] = []
    order: list[str] = []
    with workspace_lock(tmp_path, holder="flow run first", on_wait=told.append) as waited:
        assert waited < 1

        def second() -> None:
            with workspace_lock(tmp_path, holder="second", on_wait=told.append, poll_s=0.05):
                order.append("second")

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.5)
        order.append("first done")
    t.join(timeout=10)
    assert order == ["first done", "second"]
    assert len(told) == 1 and "held by flow run first (pid" in told[0]


def test_lock_of_a_sigkilled_process_is_free_at_once(tmp_path):
    holder = _python(f"""
        from pathlib import Path
        from flows.workspace import workspace_lock
        with workspace_lock(Path({str(tmp_path)!r}), holder="doomed", on_wait=print):
            print("locked", flush=True)
            import time; time.sleep(300)
    """)  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    assert "doomed" in (tmp_path / LOCK_PATH).read_text()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    start = time.monotonic()
    with workspace_lock(tmp_path, holder="next", on_wait=print):
        pass
    assert time.monotonic() - start < 2


def test_watchdog_ends_guarded_process_groups_when_its_owner_is_sigkilled():
    owner = _python("""
        import subprocess, time
        from flows import watchdog
        child = subprocess.Popen(["sleep", "300"], start_new_session=True)
        watchdog.guard(pgid=child.pid)
        print(child.pid, flush=True)
        time.sleep(300)
    """)  # fmt: skip
    child = psutil.Process(int(owner.stdout.readline()))
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    gone, alive = psutil.wait_procs([child], timeout=10)
    assert not alive, "the guarded stage outlived its flow process"


def test_stale_temporary_outputs_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "data" / "train" / ".model.tmp-abc1" / "model").mkdir(parents=True)
    (tmp_path / "reports" / "clean").mkdir(parents=True)
    (tmp_path / "reports" / "clean" / ".report.md.tmp-x9").write_text("half")
    (tmp_path / "reports" / "clean" / "report.md").write_text("kept")
    (tmp_path / "other" / ".x.tmp-1").mkdir(parents=True)  # not an output root
    removed = remove_stale_temps(tmp_path, ["data", "reports", "metrics", "plots"])
    assert sorted(map(str, removed)) == [
        "data/train/.model.tmp-abc1", "reports/clean/.report.md.tmp-x9",
    ]  # fmt: skip
    assert (tmp_path / "reports" / "clean" / "report.md").exists()
    assert (tmp_path / "other" / ".x.tmp-1").exists()


@pytest.mark.slow
def test_runs_of_dead_processes_are_marked_killed(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", (tmp_path / "artifacts").as_uri())
    from edge_pipeline.core import tracking

    mlflow = tracking.configure()
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = client.create_run(exp, run_name="orphan", tags={**tracking.process_tags(),
                                                               "pid": str(dead.pid)})  # fmt: skip
    mine = client.create_run(exp, run_name="mine", tags=tracking.process_tags())
    other = client.create_run(exp, run_name="other-host", tags={"host": "elsewhere", "pid": "1"})

    assert tracking.kill_orphaned_runs() == ["orphan"]
    status = {r: client.get_run(r.info.run_id).info.status for r in (orphan, mine, other)}
    assert list(status.values()) == ["KILLED", "RUNNING", "RUNNING"]


def test_a_half_written_dvc_rwlock_is_removed_and_a_valid_one_kept(tmp_path):
    """A `dvc repro` SIGKILLed while writing .dvc/tmp/rwlock leaves broken JSON (seen in CI): every
    later `dvc repro` failed with RWLockFileCorruptedError until it was removed."""
    rwlock = tmp_path / ".dvc" / "tmp" / "rwlock"
    assert not remove_corrupt_dvc_rwlock(tmp_path)  # none there
    rwlock.parent.mkdir(parents=True)
    rwlock.write_text('{"read": {}, "write": {}}')
    assert not remove_corrupt_dvc_rwlock(tmp_path) and rwlock.exists()
    for broken in ('{"read": {"data/tr', ""):
        rwlock.write_text(broken)
        assert remove_corrupt_dvc_rwlock(tmp_path) and not rwlock.exists()
