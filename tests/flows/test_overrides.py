"""flows/overrides.py: override validation, params.yaml edits, the workspace snapshot."""

from __future__ import annotations

import subprocess

import pytest

from edge_pipeline.core.errors import ConfigError
from flows.overrides import (
    WorkspaceSnapshot,
    param_keys,
    parse_set_args,
    validate_overrides,
    with_overrides,
    write_overrides,
)
from tests.flows_repo import dvc, make_repo

PARAMS = {"train": {"epochs": 10, "lr": 0.1, "arch": {"width": 8}}, "ingest": {"source": "d"}}


def test_param_keys_lists_sections_and_leaves():
    assert param_keys(PARAMS) == [
        "train", "train.epochs", "train.lr", "train.arch", "train.arch.width",
        "ingest", "ingest.source",
    ]  # fmt: skip


def test_set_args_parse_like_dvc_dash_s():
    assert parse_set_args(["train.epochs=3", "ingest.annotations=null", "a.b=[1, 2]", "x=hi"]) == {
        "train.epochs": 3, "ingest.annotations": None, "a.b": [1, 2], "x": "hi",
    }  # fmt: skip
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        parse_set_args(["train.epochs"])


def test_unknown_keys_are_rejected_with_close_matches():
    assert validate_overrides({"train.epochs": 1, "train.arch.width": 4}, PARAMS)
    with pytest.raises(ConfigError) as err:
        validate_overrides({"train.epoch": 1, "trian.lr": 2, "zzz": 0}, PARAMS)
    msg = str(err.value)
    assert "'train.epoch' (did you mean train.epochs" in msg
    assert "'trian.lr' (did you mean train.lr" in msg
    assert "'zzz' (no similar key)" in msg and "nothing was run" in msg


def test_with_overrides_copies(tmp_path):
    out = with_overrides(PARAMS, {"train.arch.width": 16, "train.lr": 0.5})
    assert out["train"] == {"epochs": 10, "lr": 0.5, "arch": {"width": 16}}
    assert PARAMS["train"]["lr"] == 0.1


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
