"""Warm start of the student (edge_pipeline/student/warm_start.py)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from edge_pipeline.config.student import Distill
from edge_pipeline.core.lineage import Scratch
from edge_pipeline.student import warm_start
from edge_pipeline.student.model import build_student, student_config


def test_head_columns_follow_class_names():
    old = [np.arange(6.0).reshape(2, 3), np.array([0.0, 1.0, 2.0])]
    fresh = [np.full((2, 3), -1.0), np.full(3, -1.0)]
    kernel, bias = warm_start.remap_columns(old, fresh, ["a", "b", "c"], ["c", "new", "a"])
    assert kernel.tolist() == [[2.0, -1.0, 0.0], [5.0, -1.0, 3.0]]
    assert bias.tolist() == [2.0, -1.0, 0.0]


def test_initial_weights_copy_every_layer_and_grow_the_head():
    small = dict(width=0.5, blocks=[[1, 8, 1, 1]], stem_channels=8, head_channels=16)
    old = build_student(**student_config((8, 8, 1), 2, seed=1, **small))
    config = student_config((8, 8, 1), 3, seed=2, **small)
    model = build_student(**config)
    weights = warm_start.initial_weights(model, old, old_classes=["a", "b"],
                                         classes=["b", "a", "c"])  # fmt: skip
    fresh = build_student(**config)
    fresh.set_weights(weights)
    for layer in fresh.layers:
        if layer.name != "logits" and layer.weights:
            theirs = old.get_layer(layer.name).get_weights()
            assert all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), theirs,
                                                              strict=True))  # fmt: skip
    k_new, k_old = (
        fresh.get_layer("logits").get_weights()[0],
        old.get_layer("logits").get_weights()[0],
    )
    assert np.array_equal(k_new[:, 0], k_old[:, 1]) and np.array_equal(k_new[:, 1], k_old[:, 0])


def test_no_champion_yet_means_scratch(caplog):
    config = student_config((8, 8, 1), 2)
    with caplog.at_level(logging.WARNING):
        init, source = warm_start.load_start(Distill(init="champion"), config, ["a", "b"],
                                             model_name="none-yet")  # fmt: skip
    assert init is None and source == Scratch("no champion of 'none-yet' yet")
    assert "starts from scratch" in caplog.text


@pytest.mark.slow
def test_previous_student_warm_starts_the_next_night(prepared_workspace):
    """Night 1 (scratch: no previous distill run), then night 2 with a new class from it."""
    import shutil

    import mlflow

    from tasks import distill
    from tests.student.test_distill import TINY, _teacher_outputs

    cfg = TINY | {"init": "previous", "warm": {"epochs": 1, "lr": 0.001}}
    info = prepared_workspace(n_classes=2, per_class=15, params={"distill": cfg})
    root = info["root"]
    _teacher_outputs(root, info)
    distill.main()
    meta1 = json.loads((root / "data" / "distill" / "meta.json").read_text())
    assert meta1["init_from"] == "scratch" and meta1["mlflow_run_id"]
    assert (root / "data" / "distill" / "baseline.keras").exists()  # scratch: KD's gain measured

    shutil.rmtree(root / "data" / "train")
    # another distill.seed tonight: it draws initial weights only, so the warm start stays
    reseeded = cfg | {"seed": 3}
    info = prepared_workspace(n_classes=3, per_class=15, params={"distill": reseeded})
    _teacher_outputs(root, info)
    distill.main()
    meta2 = json.loads((root / "data" / "distill" / "meta.json").read_text())
    assert meta2["init_from"] == "previous run"
    # warm: the student only (distill.baseline: scratch), and the outputs say so
    assert not (root / "data" / "distill" / "baseline.keras").exists()
    metrics = json.loads((root / "metrics" / "distill.json").read_text())
    assert metrics["baseline_trained"] is False and metrics["kd_gain_pts"] is None
    history = (root / "plots" / "distill" / "history_baseline.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and len(history) == 1  # dvc.yaml's plot: no epochs
    assert meta2["init_from_run_id"] == meta1["mlflow_run_id"]
    run = mlflow.get_run(meta2["mlflow_run_id"])
    assert run.data.tags["init_from_run_id"] == meta1["mlflow_run_id"]
    assert run.data.params["distill.warm.epochs"] == "1"
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "warm_start")}
    assert files == {"warm_start/student.keras", "warm_start/meta.json"}
