"""flows/stages.py: one stage through `dvc repro --single-item`, timeouts, DVC lock contention."""

from __future__ import annotations

import os
import sys
import threading
import time

import psutil
import pytest
import yaml

from flows.stages import StageFailed, repro, run_command, stage_env
from tests.flows_repo import make_repo


def test_timeout_ends_the_whole_process_group(tmp_path):
    code = (
        "import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
        "print(p.pid, flush=True); time.sleep(60)"
    )
    start = time.monotonic()
    rc, tail = run_command(
        [sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ), timeout_s=2,
        on_line=lambda line: None,
    )  # fmt: skip
    assert rc is None and time.monotonic() - start < 20
    grandchild = int(tail[0])
    time.sleep(0.5)
    # gone, or a zombie nobody reaped (it was orphaned when its parent died)
    assert not psutil.pid_exists(grandchild) or (
        psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    )


@pytest.mark.slow
def test_repro_reports_ran_then_up_to_date_and_failures_name_the_stage(tmp_path):
    root = make_repo(tmp_path / "repo")
    env = stage_env(root, parent_run_id="abc")
    assert env["PIPELINE_PARENT_RUN_ID"] == "abc"
    lines: list[str] = []
    assert repro("a", root=root, env=env, timeout_s=120, on_line=lines.append) == "ran"
    assert "Running stage 'a':" in lines
    assert repro("a", root=root, env=env, timeout_s=120, on_line=lines.append) == "up to date"

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["b"]["fail"] = "disk full"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(StageFailed) as err:
        repro("b", root=root, env=env, timeout_s=120, on_line=lines.append)
    assert err.value.stage == "b"
    assert str(err.value).startswith("stage 'b' failed (exit code")
    assert "b: permanent failure: disk full" in str(err.value)


@pytest.mark.slow
def test_without_run_cache_a_stale_stage_runs_instead_of_being_restored(tmp_path):
    """A warm-started stage (flows/config.py `warm_started`) must run: DVC's run cache does not
    know its start model, only its deps and params."""
    root = make_repo(tmp_path / "repo")
    env = stage_env(root, None)
    params_file = root / "params.yaml"
    first = params_file.read_text()

    def run_a(**kw) -> str:
        return repro("a", root=root, env=env, timeout_s=120, on_line=lambda line: None, **kw)

    assert run_a() == "ran"
    params = yaml.safe_load(first)
    params["a"]["value"] += 1
    params_file.write_text(yaml.safe_dump(params))
    assert run_a() == "ran"
    params_file.write_text(first)  # back to params the run cache has seen
    assert run_a(run_cache=False) == "ran"
    params_file.write_text(yaml.safe_dump(params))
    assert run_a() == "restored"  # the same, with the run cache allowed


@pytest.mark.slow
def test_dvc_lock_contention_is_retried(tmp_path):
    """Hold DVC's own rwlock on b's input for a moment: repro b fails 'busy', then succeeds."""
    from dvc.fs import localfs
    from dvc.rwlock import rwlock

    root = make_repo(tmp_path / "repo")
    env = stage_env(root, None)
    repro("a", root=root, env=env, timeout_s=120, on_line=lambda line: None)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with rwlock(str(root / ".dvc" / "tmp"), localfs, "test", [], [str(root / "out" / "a.txt")],
                    False):  # fmt: skip
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        if "is busy, it is being blocked by" in line:
            release.set()  # the first attempt saw the lock: let the retry through

    assert repro("b", root=root, env=env, timeout_s=120, on_line=on_line) == "ran"
    holder.join()
    assert release.is_set()
    assert any("DVC lock held by another process; retrying" in line for line in lines)
