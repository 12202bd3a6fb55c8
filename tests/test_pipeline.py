"""End to end: `dvc repro` of the data-quality stages on a tiny demo in a fresh git+DVC repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DATA_STAGES = ["demo", "ingest", "agreement", "clean", "split", "resample"]
# Small enough for seconds per stage; the demo keeps its flaws (noise, corrupt files, long tail).
TINY = {"demo": {"max_per_class": 24}, "clean": {"folds": 3}}


def make_repo(root: Path, overrides: dict) -> Path:
    """A fresh git + DVC repository holding the project's code, dvc.yaml and (overridden) params."""
    for name in ["tasks", "edge_pipeline", "dvc.yaml", "pyproject.toml"]:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, root / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], root)
    return root


def run(cmd: list[str], cwd: Path) -> str:
    # Stages run as `python -m tasks.<stage>`: that `python` must be this environment's.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout + proc.stderr


def dvc(root: Path, *args: str) -> str:
    return run([sys.executable, "-m", "dvc", *args], root)


@pytest.mark.slow
def test_dvc_repro_data_stages_then_noop(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", TINY)
    out = dvc(root, "repro", "resample")
    for stage in DATA_STAGES:
        assert f"Running stage '{stage}'" in out
        assert (root / "metrics" / f"{stage}.json").is_file()

    manifest = pd.read_csv(root / "data/ingest/manifest.csv")
    quarantine = pd.read_csv(root / "reports/ingest/quarantine.csv")
    assert len(manifest) > 0
    assert {"zero_byte", "truncated", "undecodable"} <= set(quarantine["reason"])

    agreement = json.loads((root / "metrics/agreement.json").read_text())
    assert -1.0 <= agreement["fleiss_kappa"] <= 1.0

    split = pd.read_csv(root / "data/split/split.csv")
    assert set(split["split"]) == {"train", "val", "test"}
    assert not set(split["id"]) - set(manifest["id"])

    # DVC decides staleness: nothing changed, so nothing runs again.
    again = dvc(root, "repro", "resample")
    assert "Running stage" not in again
    assert "up to date" in again or "didn't change" in again

    # The user-facing inspection commands work on the result.
    assert "fleiss_kappa" in dvc(root, "metrics", "show")
    dvc(root, "params", "diff")
    dvc(root, "plots", "show", "--out", str(tmp_path / "plots_html"))
