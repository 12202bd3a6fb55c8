"""flows/overrides.py: `-S` parsing, params.yaml edits, the workspace snapshot.

Override validation is the schema's (edge_pipeline.config.apply_overrides):
tests/flows/test_config.py.
"""

from __future__ import annotations

import subprocess

import pytest

from edge_pipeline.core.errors import ConfigError
from flows.overrides import WorkspaceSnapshot, parse_set_args, write_overrides
from tests.flows_repo import dvc, make_repo


def test_set_args_parse_like_dvc_dash_s():
    assert parse_set_args(["train.epochs=3", "ingest.annotations=null", "a.b=[1, 2]", "x=hi"]) == {
        "train.epochs": 3, "ingest.annotations": None, "a.b": [1, 2], "x": "hi",
    }  # fmt: skip
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        parse_set_args(["train.epochs"])


def test_write_overrides_keeps_comments_and_order(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("# top\ntrain:\n  epochs: 10   # how long\n  lr: 0.1\n")
    write_overrides(path, {"train.epochs": 3})
    assert path.read_text() == "# top\ntrain:\n  epochs: 3    # how long\n  lr: 0.1\n"


@pytest.mark.slow
def test_snapshot_restores_files_index_and_outputs(tmp_path):
    root = make_repo(tmp_path / "repo")
    dvc(root, "repro", "-q")
    subprocess.run(["git", "add", "dvc.lock"], cwd=root, check=True)  # staged before the run
    params, lock = (root / "params.yaml").read_bytes(), (root / "dvc.lock").read_bytes()
    paths = ["params.yaml", "dvc.lock", *(f"metrics/{s}.json" for s in "abcd")]

    def index() -> str:
        return subprocess.run(
            ["git", "ls-files", "-s", "--", *paths], cwd=root, capture_output=True, text=True
        ).stdout

    before = index()
    assert "dvc.lock" in before and "metrics" not in before
    snap = WorkspaceSnapshot(root, paths)
    write_overrides(root / "params.yaml", {"b.value": 99})
    dvc(root, "repro", "-q")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)  # what DVC's autostage may do
    assert (root / "out" / "b.txt").read_text() == "a=1;b=99;"

    assert snap.restore() == []
    assert (root / "params.yaml").read_bytes() == params
    assert (root / "dvc.lock").read_bytes() == lock
    assert (root / "out" / "b.txt").read_text() == "a=1;b=2;"  # dvc checkout
    assert '"value": 2' in (root / "metrics" / "b.json").read_text()  # uncached: from the copy
    assert index() == before
    assert "Data and pipelines are up to date" in dvc(root, "status")
