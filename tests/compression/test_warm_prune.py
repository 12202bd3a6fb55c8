"""Warm start of the pruned model (edge_pipeline/compression/warm_prune.py, `prune.init`)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from edge_pipeline.compression import warm_prune
from edge_pipeline.config.compression import Prune
from edge_pipeline.core.lineage import Scratch
from edge_pipeline.student.model import student_config
from tests.compression_fixtures import TINY, trained_student


def _meta(config, **changes):
    return {"student_config": config, "classes": ["a", "b"], "recipe": Prune().recipe()} | changes


def test_a_source_fits_only_the_same_student_and_recipe():
    config = student_config((8, 8, 1), 2, **TINY)
    assert warm_prune.start_problem(_meta(config), Prune(), config) == ""
    # its channels were pruned and a class may come or go: still a start
    thin = config | {"channels": {**config["channels"], "b1_expand": 12}}
    assert warm_prune.start_problem(_meta(thin), Prune(), config | {"n_classes": 3}) == ""
    # distill.seed and distill.dropout shape no weight: another value keeps the warm start
    reseeded = student_config((8, 8, 1), 2, **(TINY | {"seed": 5, "dropout": 0.3}))
    assert warm_prune.start_problem(_meta(config), Prune(), reseeded) == ""
    wider = student_config((8, 8, 1), 2, **(TINY | {"head_channels": 32}))
    assert "another student architecture" in warm_prune.start_problem(_meta(config), Prune(), wider)
    assert "another recipe" in warm_prune.start_problem(
        _meta(config), Prune(channel_fraction=0.25), config
    )
    assert "predates warm starts" in warm_prune.start_problem({"channels": {}}, Prune(), config)
    assert "no student_config" in warm_prune.start_problem(_meta(config), Prune(), None)


def test_no_champion_yet_means_scratch(caplog):
    with caplog.at_level(logging.WARNING):
        start = warm_prune.load_start(Prune(init="champion"), None, ["a"], model_name="none-yet")
    assert start == (None, None, Scratch("no champion of 'none-yet' yet"))
    assert "starts from scratch" in caplog.text


@pytest.mark.slow
def test_previous_pruned_model_warm_starts_the_next_night(prepared_workspace):
    """Night 1 prunes the student (scratch); night 2 fine-tunes night 1's pruned model: same
    channels, target sparsity kept, masks held (no ramp) for `warm.epochs`, lineage in meta and
    MLflow."""
    import mlflow

    from edge_pipeline.artifacts import datasets as d
    from edge_pipeline.student.kd_training import predict_logits
    from tasks import prune

    cfg = {
        "ramp_epochs": 2, "epochs": 2, "batch_size": 32, "calib_samples": 32, "patience": 2,
        "min_agreement": 0.3, "init": "previous", "warm": {"epochs": 1, "lr": 0.001},
    }  # fmt: skip
    ws = prepared_workspace(n_classes=3, per_class=30, size=8, params={"prune": cfg})
    root = ws["root"]
    x, y, _, _ = d.load_train()
    student = trained_student(x, y, epochs=12)
    (root / "data/distill").mkdir(parents=True)
    student.save(root / "data/distill/student.keras")
    config = student_config((8, 8, 1), 3, **TINY)
    (root / "data/distill/meta.json").write_text(json.dumps({"student_config": config}))
    (root / "data/train").mkdir(parents=True)
    np.save(root / "data/train/logits_train.npy", predict_logits(student, x))

    prune.main()
    meta1 = json.loads((root / "data/prune/meta.json").read_text())
    assert meta1["init_from"] == "scratch" and meta1["mlflow_run_id"]
    assert meta1["classes"] == [str(c) for c in ws["classes"]]

    prune.main()
    meta2 = json.loads((root / "data/prune/meta.json").read_text())
    metrics = json.loads((root / "metrics/prune.json").read_text())
    assert meta2["init_from"] == metrics["init_from"] == "previous run"
    assert meta2["init_from_run_id"] == meta1["mlflow_run_id"]
    assert meta2["conv_channels"] == meta1["conv_channels"]  # the source's channels, kept
    assert meta2["student_config"]["channels"] == meta1["student_config"]["channels"]
    assert metrics["pruned"]["sparsity"] >= 0.48
    assert metrics["rows_per_epoch"] == ws["n_train"]
    assert meta2["schedule"] == {"begin_step": 1, "end_step": 1, "frequency": 1}  # HOLD
    run = mlflow.get_run(meta2["mlflow_run_id"])
    assert run.data.tags["init_from_run_id"] == meta1["mlflow_run_id"]
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "warm_start")}
    assert files == {"warm_start/student_pruned.keras", "warm_start/meta.json"}
