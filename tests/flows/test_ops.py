"""Everyday operation, fast parts: stage log levels, alerts in metrics, the ingest source check,
the run's record on a branch (flows/stages.py, alerts.py, retrain.py, record.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import pytest

from edge_pipeline.core.errors import InputError
from flows.alerts import alert_reasons, failure_reason
from flows.parent_run import reproduce_note
from flows.record import commit_on_branch, record_run
from flows.retrain import check_source
from flows.scheduler import PipelineError
from flows.stages import line_level, stage_logger


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("2025-01-02 03:04:05,678 ingest WARNING 3 images quarantined", logging.WARNING),
        ("2025-01-02 03:04:05,678 train ERROR loss is NaN", logging.ERROR),
        ("2025-01-02 03:04:05,678 train INFO epoch 1", logging.INFO),
        ("WARNING: params.yaml changed", logging.WARNING),
        ("ERROR: failed to reproduce 'train'", logging.ERROR),
        ("/x/site.py:12: UserWarning: deprecated", logging.WARNING),
        ("Running stage 'a':", logging.INFO),
        ("a WARNING in the middle of a line", logging.INFO),
    ],
)
def test_stage_lines_keep_their_level(line, level):
    assert line_level(line) == level


def test_dvc_push_advice_is_dropped_and_warnings_are_warnings():
    seen: list[tuple[int, str]] = []

    class Capture(logging.LoggerAdapter):
        def log(self, level, msg, *args, **kwargs):
            seen.append((level, msg % args))

    on_line = stage_logger(Capture(logging.getLogger("t"), {}), "clean")
    for line in ["Use `dvc push` to send your updates to remote storage.",
                 "2025-01-02 03:04:05,678 clean WARNING 2 label issues", "done"]:  # fmt: skip
        on_line(line)
    assert seen == [
        (logging.WARNING, "clean | 2025-01-02 03:04:05,678 clean WARNING 2 label issues"),
        (logging.INFO, "clean | done"),
    ]


@pytest.mark.parametrize(
    ("metrics", "reasons"),
    [
        ({"alert": True, "alert_reason": "gate failed: p95; accuracy 9.1% below"},
         ["gate failed: p95", "accuracy 9.1% below"]),
        ({"alert": "True", "alert_reason": "x"}, ["x"]),  # MLflow-style string
        ({"alert": False, "alert_reason": ""}, []),
        ({"alerts": ["a", {"reason": "b"}]}, ["a", "b"]),
        ({"accuracy": 0.9}, []),
    ],
)  # fmt: skip
def test_alert_reasons(metrics, reasons):
    assert alert_reasons(metrics) == reasons


def test_special_entries_in_the_ingest_source_fail_before_dvc_without_hanging(tmp_path):
    source = tmp_path / "data" / "new"
    source.mkdir(parents=True)
    (source / "ok.png").write_bytes(b"png")
    os.mkfifo(source / "pipe.png")
    (source / "gone.png").symlink_to(tmp_path / "missing.png")
    start = time.monotonic()
    with pytest.raises(InputError) as err:
        check_source(tmp_path, {"ingest": {"source": "data/new"}})
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "ingest.source=data/new: 2 entries" in message
    assert "pipe.png (special_file)" in message and "gone.png (dangling_link)" in message
    assert "nothing was run" in message
    check_source(tmp_path, {"ingest": {"source": "missing"}})  # ingest reports a missing source
    check_source(tmp_path, {})  # a workspace without ingest


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_record_is_a_commit_on_a_branch_and_the_workspace_is_untouched(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    for name in ("params.yaml", "dvc.lock", "code.py"):
        (root / name).write_text(f"{name} v1\n")
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "base")
    head = _git(root, "rev-parse", "HEAD")
    assert commit_on_branch(root, branch="runs/x", message="m", paths=["params.yaml"]) == ""

    (root / "dvc.lock").write_text("dvc.lock v2\n")
    (root / "code.py").write_text("code.py edited\n")  # uncommitted code is recorded too
    (root / "metrics").mkdir()
    (root / "metrics" / "a.json").write_text("{}")
    (root / "scratch.txt").write_text("not recorded")
    (root / ".gitignore").write_text("/cache\n")  # e.g. a persisted, uncached decode cache
    (root / "cache").mkdir()
    (root / "cache" / "pixels.npy").write_text("workspace only")
    commit = commit_on_branch(
        root, branch="runs/night-1", message="retrain run night-1",
        paths=["metrics/a.json", "cache"],
    )  # fmt: skip
    assert _git(root, "rev-parse", "runs/night-1") == commit
    assert _git(root, "rev-parse", f"{commit}^") == head
    files = set(_git(root, "ls-tree", "-r", "--name-only", commit).split())
    assert files == {"params.yaml", "dvc.lock", "code.py", "metrics/a.json"}  # not the cache
    assert _git(root, "show", f"{commit}:dvc.lock") == "dvc.lock v2"
    # HEAD, the branch, the index and the files are as they were
    assert _git(root, "rev-parse", "HEAD") == head
    assert _git(root, "branch", "--show-current") == "main"
    assert _git(root, "diff", "--cached", "--name-only") == ""
    assert (root / "dvc.lock").read_text() == "dvc.lock v2\n"

    record = record_run(root, branch="runs/night-2", message="m", uncached=[])
    assert "not pushed: no default DVC remote" in record.pushed


def test_the_note_reproduces_the_recorded_commit():
    note = reproduce_note("c0ffee" * 6 + "abcd", "exp-1", True, branch="runs/r",
                          pushed="outputs pushed to the DVC remote 'local'")  # fmt: skip
    assert "git checkout c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeeabcd && dvc pull && dvc repro" in note
    assert "branch `runs/r`" in note and "dvc exp apply exp-1" in note
    assert "recorded in that commit" in note


def test_a_failed_run_is_alerted_with_the_stage_error_that_names_the_fix():
    error = PipelineError(
        "pipeline stopped: stage 'train' failed on bad input (exit 65, no retry)\n"
        "--- last output of train ---\nRunning stage 'train':\n> python -m tasks.train\n"
        "15:29:48 train WARNING the champion is old\n"
        "15:29:48 train ERROR input error: MLflow run 1e8 (champion v2) has no usable warm_start/ "
        "artifacts; set train.init to scratch\n"
        "ERROR: failed to reproduce 'train': failed to run: python -m tasks.train, exited with 65",
        stage="train",
    )
    assert failure_reason(error) == (
        "run stopped: stage 'train' failed on bad input (exit 65, no retry) (input error: MLflow "
        "run 1e8 (champion v2) has no usable warm_start/ artifacts; set train.init to scratch)"
    )
    assert failure_reason(ValueError("bad\nmore")) == "run stopped: bad"
