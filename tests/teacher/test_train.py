"""train stage: the `train` params schema, the fit loop (determinism, early stopping), main()."""

from __future__ import annotations

import json
import os
from typing import get_args

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.config import load_section
from edge_pipeline.config.base import Augment
from edge_pipeline.config.teacher import Arch, Train
from edge_pipeline.core.errors import EXIT_CONFIG, ConfigError
from edge_pipeline.teacher import fit as train_loop
from edge_pipeline.teacher.models import ARCHS, build_teacher, load_teacher
from tasks import train
from tests.conftest import REPO, _digits
from tests.train_set_fixtures import add_synthetic_rows


def _section(tmp_path, cfg) -> Train:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": cfg}))
    return load_section("train", path)


def test_the_schema_lists_exactly_the_architectures_the_library_adapts():
    assert set(get_args(Arch)) == set(ARCHS)


@pytest.mark.parametrize(
    ("cfg", "pattern"),
    [
        ({"arch": "resnet19"}, r"train\.arch='resnet19': .*'resnet18'"),
        ({"device": "tpu"}, r"train\.device='tpu': .*'cpu', 'cuda' or 'auto'"),
        ({"epochs": 0}, r"train\.epochs=0: .*greater than or equal to 1"),
        ({"lr": "fast"}, r"train\.lr='fast': .*valid number"),
        ({"batch_size": 1}, r"train\.batch_size=1: .*greater than or equal to 2"),
        ({"threads": 0}, r"train\.threads=0: .*greater than or equal to 1"),
        ({"use_class_weights": "yes"}, r"train\.use_class_weights='yes': .*valid boolean"),
        ({"augment": {"rotation_deg": 270}}, r"train\.augment\.rotation_deg=270: .*180"),
        ({"augment": {"flip": True}}, r"train\.augment\.flip: not an option; did you mean hflip"),
        ({"augment": [1, 2]}, r"train\.augment=\[1, 2\]: .*valid dictionary"),
        ({"epoch": 3}, r"train\.epoch: not an option; did you mean epochs\?"),
        ({"lerning_rate": 0.1}, r"train\.lerning_rate: not an option; valid keys: .*\blr\b"),
        ({"onnx_min_top1_agreement": 1.5}, r"train\.onnx_min_top1_agreement=1\.5: .*1"),
        ({"sampler": "weighted"}, r"train\.sampler='weighted': .*'shuffle' or 'balanced'"),
        ({"stem": "cifar"}, r"train\.stem='cifar': .*'stride2'"),
        ({"width": 0}, r"train\.width=0: .*greater than or equal to 0\.125"),
        ({"workers": -1}, r"train\.workers=-1: .*greater than or equal to 0"),
        (
            {"sampler": "balanced", "use_class_weights": True},
            r"train\.sampler: balanced already balances.*use_class_weights: false",
        ),
        ({"weights": "DEFAULT", "width": 0.5}, r"pretrained\) needs train\.width: 1\.0"),
    ],
)
def test_bad_params_name_the_key_and_what_is_allowed(tmp_path, cfg, pattern):
    with pytest.raises(ConfigError, match=pattern):
        _section(tmp_path, cfg)


@pytest.mark.parametrize(
    ("cfg", "pattern"),
    [
        ({"arch": "resnet19"}, r"train\.arch='resnet19'"),
        ({"weights": "IMAGENET9K"}, r"train\.weights='IMAGENET9K' is not a weights name"),
    ],
)
def test_a_params_mistake_stops_main_before_any_data_or_training(
    prepared_workspace, monkeypatch, cfg, pattern
):
    ws = prepared_workspace(params={"train": cfg})

    def fail(*args, **kwargs):
        raise AssertionError("reached past the params check")

    monkeypatch.setattr(data, "load_fit_sets", fail)
    monkeypatch.setattr(train_loop, "fit", fail)
    with pytest.raises(ConfigError, match=pattern):
        train.main()
    assert not (ws["root"] / "data" / "train").exists()


def test_run_stage_exits_78_on_a_params_mistake(prepared_workspace):
    import subprocess
    import sys

    ws = prepared_workspace(params={"train": {"epoch": 3}})
    done = subprocess.run(
        [sys.executable, "-m", "tasks.train"], cwd=ws["root"], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
    )  # fmt: skip
    assert done.returncode == EXIT_CONFIG
    assert "train.epoch: not an option; did you mean epochs?" in done.stderr + done.stdout


def test_device_choice_and_determinism_switch_are_scoped():
    assert train_loop.setup_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert train_loop.setup_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"train\.device='cuda'.*use cpu or auto"):
            train_loop.setup_device("cuda")
    before = torch.are_deterministic_algorithms_enabled()
    with train_loop.deterministic(0):
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


def test_threads_default_to_the_cores_this_process_may_use():
    before = torch.get_num_threads()
    try:
        train_loop.setup_device("cpu", threads=None)
        assert torch.get_num_threads() == len(os.sched_getaffinity(0))
        train_loop.setup_device("cpu", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_balanced_sampler_draws_the_real_row_count_evenly_and_reproducibly():
    y = np.repeat(np.arange(3), [300, 60, 20])  # long tail; 380 rows, say 200 of them real

    def draw(seed: int) -> np.ndarray:
        g = torch.Generator().manual_seed(seed)
        return np.array(list(train_loop.make_sampler(y, "balanced", num_samples=200, generator=g)))

    rows = draw(0)
    assert len(rows) == 200
    share = np.bincount(y[rows], minlength=3) / 200
    assert np.all(np.abs(share - 1 / 3) < 0.1), share
    assert np.array_equal(rows, draw(0)) and not np.array_equal(rows, draw(1))
    g = torch.Generator().manual_seed(0)
    every = list(train_loop.make_sampler(y, "shuffle", num_samples=200, generator=g))
    assert sorted(every) == list(range(len(y)))  # shuffle: each row once, whatever num_samples


def test_augment_transform_follows_the_section():
    off = Augment(rotation_deg=0, crop_padding=0)
    assert train_loop.augment_transform(off, (16, 16)) is None
    steps = train_loop.augment_transform(
        Augment(hflip=True, rotation_deg=10, crop_padding=1, color_jitter=0.2), (16, 16)
    ).transforms
    assert [type(t).__name__ for t in steps] == [
        "RandomCrop", "RandomRotation", "RandomHorizontalFlip", "ColorJitter"
    ]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_digits():
    """36 train and 12 val digits of classes 0-2, uint8 (N, 16, 16, 1)."""
    x, y = _digits(16)
    idx = np.concatenate([np.flatnonzero(y == k)[:16] for k in range(3)])
    x, y = x[idx], y[idx]
    val = np.arange(len(y)) % 4 == 0
    return x[~val], y[~val], x[val], y[val]


def _fit(data, *, seed: int, epochs: int = 1, **kwargs):
    x_tr, y_tr, x_va, y_va = data
    with train_loop.deterministic(seed):
        model = build_teacher("resnet18", num_classes=3, in_channels=1, image_size=(16, 16))
        options = {
            "epochs": epochs,
            "batch_size": 8,
            "lr": 2e-3,
            "weight_decay": 0.05,
            "patience": 3,
            "class_weights": np.array([1.0, 2.0, 1.0]),
            "augment": Augment(rotation_deg=10, crop_padding=1, color_jitter=0.2),
            "seed": seed,
            "device": torch.device("cpu"),
        } | kwargs
        result = train_loop.fit(model, x_tr, y_tr, x_va, y_va, **options)
    return model, result


def test_same_seed_same_weights_and_metrics_other_seed_differs(tiny_digits):
    model_a, a = _fit(tiny_digits, seed=3)
    model_b, b = _fit(tiny_digits, seed=3)
    _, c = _fit(tiny_digits, seed=4)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in a.history]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in b.history]
    for (name, ta), tb in zip(
        model_a.state_dict().items(), model_b.state_dict().values(), strict=True
    ):
        assert torch.equal(ta, tb), name
    assert c.history[0]["train_loss"] != a.history[0]["train_loss"]


@pytest.mark.parametrize("workers", [0, 1])
def test_balanced_sampler_and_workers_stay_deterministic(tiny_digits, workers: int):
    options = {"sampler": "balanced", "num_samples": 24, "class_weights": None, "workers": workers}
    model_a, a = _fit(tiny_digits, seed=5, **options)
    model_b, b = _fit(tiny_digits, seed=5, **options)
    assert a.images_seen == 24  # one epoch = num_samples rows, not the 36 train rows
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    for ta, tb in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True):
        assert torch.equal(ta, tb)


def test_early_stopping_restores_the_best_epochs_weights(tiny_digits, monkeypatch):
    real_f1 = train_loop.f1_score
    scores = iter([0.5, 0.9, 0.4, 0.3, 0.95, 0.99])  # epoch 2 is best, then two worse epochs

    def scripted_f1(*args, **kwargs):
        real_f1(*args, **kwargs)
        return next(scores)

    monkeypatch.setattr(train_loop, "f1_score", scripted_f1)
    states, holder = {}, {}

    def snapshot(row):
        states[row["epoch"]] = {k: v.clone() for k, v in holder["model"].state_dict().items()}

    x_tr, y_tr, x_va, y_va = tiny_digits
    with train_loop.deterministic(0):
        holder["model"] = model = build_teacher(  # the loop, not the arch, is under test
            "mobilenet_v3_small", num_classes=3, in_channels=1, image_size=(16, 16)
        )
        result = train_loop.fit(
            model, x_tr, y_tr, x_va, y_va, epochs=6, batch_size=8, lr=1e-2, weight_decay=0.0,
            patience=2, class_weights=None, augment=Augment(rotation_deg=0, crop_padding=0), seed=0,
            device=torch.device("cpu"), on_epoch=snapshot,
        )  # fmt: skip
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert (result.best_epoch, result.best_val_macro_f1) == (2, 0.9)
    assert result.images_seen == 4 * len(y_tr)
    for name, value in model.state_dict().items():
        assert torch.equal(value, states[2][name]), name
    head = "net.classifier.3.weight"  # training went on after the best epoch
    assert not torch.equal(states[4][head], states[2][head])


@pytest.mark.slow
def test_main_writes_every_output_and_tracks_the_run(prepared_workspace):
    import mlflow

    ws = prepared_workspace(params={"train": {"epochs": 2, "batch_size": 16, "threads": 1}})
    root = ws["root"]
    n_train = add_synthetic_rows(root, 5)
    train.main()

    out = root / "data" / "train"
    meta = json.loads((out / "meta.json").read_text())
    metrics = json.loads((root / "metrics" / "train.json").read_text())
    assert meta["classes"] == ["0", "1", "2"] and meta["image_size"] == [16, 16]
    assert meta["layout"] == "NCHW" and meta["n_train"] == n_train

    # The plain state_dict reproduces the saved val logits.
    state = torch.load(out / "teacher.pt", weights_only=True)
    assert isinstance(state, dict) and "net.fc.weight" in state
    logits_val = np.load(out / "logits_val.npy")
    x_val = np.load(root / "data" / "ingest" / "images.npy")[
        pd.read_csv(root / "data" / "split" / "split.csv")["split"].eq("val").to_numpy()
    ]
    model = load_teacher(out / "teacher.pt", meta)
    with torch.no_grad():
        again = model(torch.from_numpy(x_val.transpose(0, 3, 1, 2).astype(np.float32) / 255))
    np.testing.assert_allclose(again.numpy(), logits_val, atol=1e-4)
    assert np.load(out / "logits_train.npy").shape == (n_train, 3)
    assert logits_val.dtype == np.float32

    models = json.loads((out / "models.json").read_text())
    assert [(m["name"], m["file"], m["runtime"], m["layout"]) for m in models] == [
        ("teacher_fp32", "teacher.onnx", "onnxruntime", "NCHW")
    ]
    assert models[0]["params"] == sum(v.numel() for v in model.parameters())
    assert models[0]["macs"] > 10**7

    assert metrics["onnx"]["top1_agreement"] == 1.0
    assert metrics["onnx"]["max_abs_diff"] < 1e-3
    assert 0.0 <= metrics["test_macro_f1"] <= 1.0
    matrix = np.array(metrics["confusion_matrix"]["matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == metrics["n_test"] == 18
    assert np.trace(matrix) / 18 == pytest.approx(metrics["test_accuracy"])
    assert set(metrics["per_class"]) == {"0", "1", "2"}
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 2

    history = pd.read_csv(root / "plots" / "train" / "history.csv")
    assert list(history.columns[:4]) == ["epoch", "train_loss", "val_macro_f1", "val_acc"]
    assert len(history) == metrics["epochs_run"]
    preds = pd.read_csv(root / "plots" / "train" / "test_predictions.csv")
    assert len(preds) == 18 and (preds["actual"] == preds["predicted"]).mean() == pytest.approx(
        metrics["test_accuracy"]
    )
    for name in ("confusion_matrix.png", "training_curves.png"):
        assert (root / "plots" / "train" / name).read_bytes()[:4] == b"\x89PNG"
        assert (root / "reports" / "train" / name).exists()
    assert "macro-F1" in (root / "reports" / "train" / "report.md").read_text()

    client = mlflow.MlflowClient()
    [run] = client.search_runs(
        [client.get_experiment_by_name("edge-pipeline").experiment_id],
        filter_string="tags.stage = 'train'",
    )
    assert run.info.status == "FINISHED"
    assert run.data.tags["git_commit"] and "dvc_deps_hash" in run.data.tags
    assert run.data.params["train.arch"] == "resnet18"
    assert run.data.params["train.augment.hflip"] == "False"
    assert run.data.metrics["test/macro_f1"] == pytest.approx(metrics["test_macro_f1"])
    assert run.data.metrics["onnx/top1_agreement"] == 1.0
    steps = client.get_metric_history(run.info.run_id, "val/macro_f1")
    assert [m.step for m in steps] == list(range(1, metrics["epochs_run"] + 1))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "training_curves.png", "report.md"} <= artifacts
    [logged] = mlflow.search_logged_models(
        filter_string=f"source_run_id = '{run.info.run_id}'", output_format="list"
    )
    loaded = mlflow.pyfunc.load_model(logged.model_uri)  # teacher.onnx, served by ONNX Runtime
    assert "onnx" in loaded.metadata.flavors
    x = x_val[:3].transpose(0, 3, 1, 2).astype(np.float32) / 255
    np.testing.assert_allclose(loaded.predict(x)["logits"], logits_val[:3], atol=1e-4)


@pytest.mark.slow
def test_onnx_disagreement_fails_and_writes_nothing(tmp_path):
    from edge_pipeline.teacher import outputs

    model = build_teacher("resnet18", num_classes=3, in_channels=1, image_size=(16, 16)).eval()
    x = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 1), dtype=np.uint8)
    with torch.no_grad():
        logits = model(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255)).numpy()
    wrong = {"train": logits, "val": logits, "test": -logits}  # every argmax moves
    meta = {"in_channels": 1, "image_size": [16, 16], "onnx_opset": 18, "params": 1, "macs": 1}
    meta |= {"arch": "resnet18"}
    with pytest.raises(RuntimeError, match="teacher.onnx disagrees with torch"):
        outputs.write_artifacts(tmp_path / "train", model, meta, wrong, x, min_top1_agreement=1.0)
    assert not (tmp_path / "train").exists()
    # A lower bar lets the same export through: the threshold is the params key's, not a constant.
    parity = outputs.write_artifacts(
        tmp_path / "train", model, meta, wrong, x, min_top1_agreement=0.0
    )
    assert parity["top1_agreement"] == 0.0 and (tmp_path / "train" / "teacher.onnx").exists()
