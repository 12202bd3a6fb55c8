"""The distill stage: params validation before any training, and main() end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge_pipeline.config import load_section
from edge_pipeline.core.errors import ConfigError
from tasks import distill
from tests.train_set_fixtures import add_synthetic_rows

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "blocks": [[1, 8, 1, 1], [2, 16, 1, 2]],
    "stem_channels": 8,
    "head_channels": 16,
    "epochs": 2,
    "patience": 2,
    "batch_size": 16,
}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"temperature": 0}, r"distill.temperature=0: Input should be greater than 0"),
        ({"temperature": -1.0}, r"distill.temperature=-1.0: Input should be greater than 0"),
        ({"alpha": 1.5}, r"distill.alpha=1.5: Input should be less than or equal to 1"),
        ({"width": 0}, r"distill.width=0: Input should be greater than 0"),
        ({"temprature": 2.0}, r"distill.temprature: not an option; did you mean temperature\?"),
        ({"blocks": [[4, 24, 2]]}, r"distill.blocks.0.3=\[4, 24, 2\]: Field required"),
        ({"blocks": [[4, 24, 2, 3]]}, r"distill.blocks.0.3=3: Input should be 1 or 2"),
        ({"blocks": []}, r"distill.blocks=\[\]: .*at least 1 item"),
        ({"augment": {"flip": True}}, r"distill.augment.flip: not an option; did you mean hflip\?"),
        ({"use_class_weights": "yes"}, r"distill.use_class_weights='yes': .*valid boolean"),
        ({"sampler": "weighted"}, r"distill.sampler='weighted': .*'shuffle' or 'balanced'"),
        ({"use_class_weights": True}, r"sampler: balanced already balances the classes"),
    ],
)
def test_bad_params_name_the_key_and_the_allowed_values(override, message, tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"distill": override}))
    with pytest.raises(ConfigError, match=message):
        load_section("distill", path)


def _teacher_outputs(root: Path, info: dict, *, test_macro_f1: float | None = 0.95) -> None:
    """data/train/logits_{train,val}.npy (one-hot * 5 + noise) and metrics/train.json."""
    from edge_pipeline.artifacts import datasets as data

    rng = np.random.default_rng(0)
    k = len(info["classes"])
    out = root / "data" / "train"
    out.mkdir(parents=True)
    _, y_train, _, _ = data.load_train()
    _, y_val, _ = data.load_split("val")
    for name, y in (("train", y_train), ("val", y_val)):
        logits = np.eye(k)[y] * 5 + rng.normal(size=(len(y), k))
        np.save(out / f"logits_{name}.npy", logits.astype(np.float32))
    (out / "models.json").write_text(json.dumps([{"name": "teacher_fp32"}]))
    if test_macro_f1 is not None:
        (root / "metrics").mkdir(exist_ok=True)
        (root / "metrics" / "train.json").write_text(
            json.dumps({"test_macro_f1": test_macro_f1, "test_accuracy": 0.96})
        )


def test_main_stops_on_a_bad_param_before_reading_data_or_training(prepared_workspace, monkeypatch):
    info = prepared_workspace(params={"distill": TINY | {"temperature": 0.0}})
    monkeypatch.setattr(distill, "load_kd_sets", lambda **_: pytest.fail("read data first"))
    with pytest.raises(ConfigError, match="distill.temperature=0.0"):
        distill.main()
    assert not (info["root"] / "data" / "distill").exists()


def test_main_names_misaligned_teacher_logits(prepared_workspace):
    info = prepared_workspace(params={"distill": TINY})
    _teacher_outputs(info["root"], info)
    path = info["root"] / "data" / "train" / "logits_train.npy"
    np.save(path, np.load(path)[:-1])
    with pytest.raises(ValueError, match=r"logits_train.npy: shape \(53, 3\), expected \(54, 3\)"):
        distill.main()


@pytest.mark.slow
def test_main_end_to_end_writes_every_output_and_an_mlflow_run(prepared_workspace):
    import mlflow

    info = prepared_workspace(params={"distill": TINY})
    root = info["root"]
    add_synthetic_rows(root, 6)  # balanced draws: an epoch is the 54 real rows, not 60
    _teacher_outputs(root, info)
    distill.main()

    data_dir = root / "data" / "distill"
    assert {p.name for p in data_dir.iterdir()} == {
        "student.keras", "baseline.keras", "meta.json", "models.json",
    }  # fmt: skip
    metrics = json.loads((root / "metrics" / "distill.json").read_text())
    assert 0.0 <= metrics["test_macro_f1"] <= 1.0 and metrics["n_test"] == 18
    assert metrics["gap_to_teacher_pts"] == pytest.approx(
        round(100 * (0.95 - metrics["test_macro_f1"]), 2)
    )
    assert metrics["kd_gain_pts"] == pytest.approx(
        round(100 * (metrics["test_macro_f1"] - metrics["baseline_test_macro_f1"]), 2)
    )
    assert set(metrics["test_recall"]) == set(info["classes"])
    assert metrics["epochs_run"] == 2 and metrics["train_seconds"] > 0
    assert metrics["train_rows_per_epoch"] == info["n_train"] == 54

    meta = json.loads((data_dir / "meta.json").read_text())
    models = json.loads((data_dir / "models.json").read_text())
    assert models == [
        {
            "name": "student_keras", "file": "student.keras", "runtime": "keras",
            "layout": "NHWC", "dtype": "float32", "source": "teacher_fp32",
            "params": metrics["params"], "macs": metrics["macs"],
            "description": models[0]["description"],
        }
    ]  # fmt: skip

    # The saved student reloads, and meta's config rebuilds the same architecture.
    import tf_keras

    from edge_pipeline.artifacts import datasets as data
    from edge_pipeline.student.kd_training import evaluate
    from edge_pipeline.student.model import build_student

    student = tf_keras.models.load_model(data_dir / "student.keras", compile=False)
    rebuilt = build_student(**meta["student_config"])
    assert rebuilt.count_params() == student.count_params() == metrics["params"]
    x_test, y_test, _ = data.load_split("test")
    assert evaluate(student, x_test, y_test)["macro_f1"] == pytest.approx(metrics["test_macro_f1"])

    report = (root / "reports" / "distill" / "report.md").read_text()
    assert "gap to the teacher" in report and "baseline (alpha = 1)" in report
    plots = {p.name for p in (root / "plots" / "distill").iterdir()}
    assert {"history_student.csv", "history_baseline.csv", "test_predictions.csv"} <= plots
    assert {"confusion_matrix.png", "training_curves.png"} <= plots

    runs = mlflow.search_runs(experiment_names=["edge-pipeline"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "distill"
    assert run.data.params["distill.temperature"] == "4.0"
    assert run.data.metrics["test/macro_f1"] == pytest.approx(metrics["test_macro_f1"])
    assert "baseline/test/macro_f1" in run.data.metrics
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/macro_f1")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "report.md"} <= artifacts
    assert mlflow.search_logged_models(output_format="list")  # the keras-flavour student


def _run(f1: float, val_f1: float) -> dict:
    fit = {"best_val_macro_f1": val_f1, "best_epoch": 2, "epochs_run": 3, "train_seconds": 1.0,
           "images_per_s": 100.0, "rows_per_epoch": 20,
           "history": {"loss": [1.0, 0.8, 0.7], "val_loss": [1.0, 0.9, 0.9],
           "val_accuracy": [0.5, 0.6, 0.6], "val_macro_f1": [0.4, val_f1, 0.5],
           "epoch_seconds": [0.4, 0.3, 0.3]}}  # fmt: skip
    test = {"accuracy": f1 + 0.01, "macro_f1": f1, "precision": [0.9, 0.8], "recall": [0.7, 0.9],
            "n": 20, "confusion": [[7, 3], [1, 9]]}  # fmt: skip
    return {"fit": fit, "test": test}


def test_metrics_and_report_compare_student_baseline_and_teacher():
    from edge_pipeline.student import outputs as distill_report

    runs = {"student": _run(0.9012, 0.88), "baseline": _run(0.8756, 0.86)}
    teacher = {"test_macro_f1": 0.95, "val_macro_f1": 0.9, "test_accuracy": 0.96}
    m = distill_report.build_metrics(runs, teacher, ["a", "b"], params=1000, macs=5000) | {
        "threads": 2
    }
    assert m["gap_to_teacher_pts"] == 4.88 and m["val_gap_to_teacher_pts"] == 2.0
    assert m["kd_gain_pts"] == 2.56 and m["train_seconds"] == 2.0
    assert m["test_recall"] == {"a": 0.7, "b": 0.9} and m["test_support"] == {"a": 10, "b": 10}
    tables = {name: distill_report.history_table(runs[name]["fit"]) for name in runs}
    report = distill_report.render_report(m, tables, ["a", "b"])
    assert "gap to the teacher **+4.88** points" in report and "**+2.56** macro-F1" in report

    unknown = distill_report.build_metrics(
        runs, teacher | {"test_macro_f1": None}, ["a", "b"], params=1000, macs=5000
    ) | {"threads": 2}
    assert unknown["gap_to_teacher_pts"] is None and unknown["val_gap_to_teacher_pts"] == 2.0
    assert "gap to the teacher **unknown**" in distill_report.render_report(
        unknown, tables, ["a", "b"]
    )


def test_a_warm_night_skips_the_baseline_and_says_so():
    from edge_pipeline.config.student import Distill
    from edge_pipeline.student import outputs as distill_report

    assert Distill().trains_baseline(warm=False) and not Distill().trains_baseline(warm=True)
    assert Distill(baseline="always").trains_baseline(warm=True)
    assert not Distill(baseline="never").trains_baseline(warm=False)

    runs = {"student": _run(0.9012, 0.88)}
    teacher = {"test_macro_f1": 0.95, "val_macro_f1": 0.9, "test_accuracy": 0.96}
    m = distill_report.build_metrics(runs, teacher, ["a", "b"], params=1000, macs=5000) | {
        "threads": 2
    }
    assert not m["baseline_trained"] and m["kd_gain_pts"] is None
    assert m["baseline_test_macro_f1"] is None and m["train_seconds"] == 1.0
    tables = {name: distill_report.history_table(run["fit"]) for name, run in runs.items()}
    report = distill_report.render_report(m, tables, ["a", "b"])
    assert "Distillation gain: not measured tonight" in report
    assert "## Epochs: baseline" not in report and "best epoch 2 of 3." in report
