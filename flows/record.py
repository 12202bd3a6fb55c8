"""Record a run that changed something, so that its MLflow description reproduces it anywhere.

Why a commit on a branch (and not only a DVC experiment): a DVC experiment is a ref under
`refs/exps`, which `git clone` does not fetch, so `git checkout <commit>` of it fails in a fresh
clone until someone runs `dvc exp push`. A plain commit on the branch `runs/<flow run name>` is
fetched by every clone, and `git checkout <commit> && dvc pull && dvc repro` then works as the
MLflow run says. The commit is written with git plumbing into a temporary index (`read-tree
HEAD`, add, `write-tree`, `commit-tree -p HEAD`, `update-ref`), so the workspace's branch, index
and files are untouched: a nightly run still leaves `dvc.lock` updated in the workspace for a
person to commit.

What the commit holds: HEAD plus the workspace's tracked changes (`git add -u`: code edited but
not committed is recorded too) plus params.yaml, dvc.lock and the `cache: false` outputs
(metrics, plots). Then `dvc push` uploads the outputs to the default DVC remote (params
`.dvc/config`: the local `dvc-remote/` that `make demo` creates, or shared storage).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IDENTITY = {"GIT_AUTHOR_NAME": "edge-pipeline", "GIT_AUTHOR_EMAIL": "edge-pipeline@localhost"}


@dataclass(frozen=True)
class Record:
    commit: str  # the recorded commit ("" when the run changed nothing git tracks)
    branch: str
    pushed: str  # what `dvc push` did, one line


def _git(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, env=env or None)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:3])} failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip()


def _identity(root: Path) -> dict[str, str]:
    """GIT_* identity for commit-tree: the repository's own, else `edge-pipeline`."""
    env = {}
    for key, git_key in (("NAME", "user.name"), ("EMAIL", "user.email")):
        probe = subprocess.run(["git", "config", git_key], cwd=root, capture_output=True, text=True)
        if probe.returncode != 0 or not probe.stdout.strip():
            value = IDENTITY[f"GIT_AUTHOR_{key}"]
            env[f"GIT_AUTHOR_{key}"] = env[f"GIT_COMMITTER_{key}"] = value
    return env


def _ignored(root: Path, path: str) -> bool:
    """Whether git ignores `path` (e.g. a persisted, uncached DVC output such as a decode cache):
    it is the workspace's, not the run's record."""
    return (
        subprocess.run(
            ["git", "check-ignore", "-q", "--", path], cwd=root, capture_output=True
        ).returncode
        == 0
    )


def commit_on_branch(root: Path, *, branch: str, message: str, paths: Iterable[str]) -> str:
    """Commit HEAD + tracked changes + `paths` on `branch` without touching HEAD, index or files.

    Returns the commit, or "" when the tree equals HEAD's (nothing to record).
    """
    root = Path(root)
    with tempfile.TemporaryDirectory(prefix="record-index-") as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index"), **_identity(root)}
        _git(root, "read-tree", "HEAD", env=env)
        _git(root, "add", "-u", env=env)
        present = [p for p in paths if (root / p).exists() and not _ignored(root, p)]
        if present:
            _git(root, "add", "--", *present, env=env)
        tree = _git(root, "write-tree", env=env)
        if tree == _git(root, "rev-parse", "HEAD^{tree}"):
            return ""
        commit = _git(root, "commit-tree", tree, "-p", "HEAD", "-m", message, env=env)
    _git(root, "update-ref", f"refs/heads/{branch}", commit)
    return commit


def dvc_push(root: Path) -> str:
    """`dvc push` to the default remote; one line saying what happened (never raises)."""
    default = subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "default"], cwd=root, capture_output=True, text=True
    )
    remote = default.stdout.strip()
    if default.returncode != 0 or not remote:
        return (
            "not pushed: no default DVC remote (`dvc remote add -d local ../dvc-remote`, "
            "or `make demo`); the outputs are only in this machine's DVC cache"
        )
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "push", "--quiet"], cwd=root, capture_output=True, text=True
    )
    if proc.returncode != 0:
        error = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
        return f"dvc push to {remote!r} failed: {error[0]}"
    return f"outputs pushed to the DVC remote {remote!r}"


def record_run(root: Path, *, branch: str, message: str, uncached: Iterable[str]) -> Record:
    """Commit the run on `branch` (params.yaml, dvc.lock, metrics, plots), then `dvc push`."""
    paths = ["params.yaml", "dvc.lock", *uncached]
    commit = commit_on_branch(root, branch=branch, message=message, paths=paths)
    return Record(commit, branch if commit else "", dvc_push(root))
