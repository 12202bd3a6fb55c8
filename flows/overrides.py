"""Parameter overrides for a flow run, recorded as a DVC experiment.

Design (why not `dvc exp run`): `dvc exp run` reproduces the whole pipeline in one process, one
stage at a time, which would take the stages away from their Prefect tasks. Instead a run with
overrides

0. validates the overrides against the schema (flows/config.py), before anything runs;
1. snapshots the files a run rewrites that DVC's cache cannot restore: params.yaml, dvc.lock and
   the `cache: false` outputs (metrics, plots), plus their git index entries (DVC's autostage);
2. writes the overrides into params.yaml exactly as `dvc exp run -S key=value` does (comments kept);
3. runs the stages as usual (`dvc repro --single-item`, so DVC still decides what is stale);
4. on success, `dvc exp save --name <flow run name>` records the workspace as an experiment
   (`dvc exp show`, `dvc exp apply <name>`);
5. always restores the snapshot and runs `dvc checkout`, so the workspace is back on the committed
   params whatever happened. The outputs of the experiment stay in DVC's cache and run cache.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from edge_pipeline.core.errors import ConfigError


def parse_set_args(items: Iterable[str]) -> dict[str, Any]:
    """`["train.epochs=3", "ingest.annotations=null"]` -> values parsed as YAML, like DVC's -S."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. train.epochs=3)")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def write_overrides(path: Path, overrides: Mapping[str, Any]) -> None:
    """Set the overrides in params.yaml in place, keeping comments and order (DVC's YAML editor)."""
    from dvc.utils.serialize import modify_yaml

    with modify_yaml(path) as data:
        for key, value in overrides.items():
            *parents, leaf = key.split(".")
            node = data
            for part in parents:
                node = node[part]
            node[leaf] = value


def _git(root: Path, *args: str, input: str | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, input=input, capture_output=True, text=True, check=True
    ).stdout


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True
    )


class WorkspaceSnapshot:
    """Copies of what a run rewrites and DVC's cache cannot restore, with their index entries."""

    def __init__(self, root: Path, paths: Iterable[str]) -> None:
        self.root = Path(root)
        self.paths = sorted(set(paths))
        self._dir = Path(tempfile.mkdtemp(prefix="retrain-snapshot-"))
        self._present: set[str] = set()
        for rel in self.paths:
            src = self.root / rel
            if src.is_dir():
                shutil.copytree(src, self._dir / rel, symlinks=True)
            elif src.exists():
                (self._dir / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, self._dir / rel)
            else:
                continue
            self._present.add(rel)
        self._index = _git(self.root, "ls-files", "-s", "--", *self.paths)
        self._indexed = {line.split("\t", 1)[1] for line in self._index.splitlines()}

    def restore(self) -> list[str]:
        """Put files and index entries back, then `dvc checkout` the cached outputs.

        Returns warnings (e.g. an output whose cache is missing) instead of raising, so a failed
        run still ends with the committed params in place.
        """
        warnings = []
        for rel in self.paths:
            dst = self.root / rel
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst)
            elif dst.exists() or dst.is_symlink():
                dst.unlink()
            if rel in self._present:
                src = self._dir / rel
                if src.is_dir():
                    shutil.copytree(src, dst, symlinks=True)
                else:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst)
        # DVC's autostage may have `git add`-ed files during the run; undo exactly that.
        now_indexed = _git(self.root, "ls-files", "--", *self.paths).splitlines()
        gone = [p for p in now_indexed if p not in self._indexed]
        if gone:
            _git(self.root, "update-index", "--force-remove", "--", *gone)
        if self._index:
            _git(self.root, "update-index", "--index-info", input=self._index)
        shutil.rmtree(self._dir, ignore_errors=True)
        proc = _dvc(self.root, "checkout", "--force")
        if proc.returncode != 0:
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")] or [""]
            warnings.append(
                f"dvc checkout after restoring the workspace: {errors[0]} (outputs that were "
                "never cached before this run cannot come back; `dvc repro` rebuilds them)"
            )
        return warnings


def save_experiment(root: Path, name: str, uncached: Iterable[str]) -> None:
    """`dvc exp save --name <name>` the workspace, including untracked metrics and plots files."""
    untracked = _git(
        Path(root), "ls-files", "--others", "--exclude-standard", "--", *uncached
    ).splitlines()
    include = [arg for path in untracked for arg in ("-I", path)]
    proc = _dvc(Path(root), "exp", "save", "--force", "--name", name, *include)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc exp save --name {name} failed: {proc.stderr.strip()[-2000:]}")
