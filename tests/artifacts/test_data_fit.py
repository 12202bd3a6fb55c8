"""edge_pipeline/artifacts/datasets.py: the one training-set loader of train, distill, prune and
qat (fit sets, teacher logits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.core.errors import InputError


def test_load_fit_sets_returns_every_set_and_checks_them(prepared_workspace) -> None:
    prepared_workspace(n_classes=3, per_class=10)
    d = data.load_fit_sets(check_shapes=True)

    x_train, y_train, synthetic, _ = data.load_train()
    np.testing.assert_array_equal(d["x_train"], x_train)
    assert d["y_train"].tolist() == y_train.tolist()
    assert d["synthetic"].tolist() == synthetic.tolist()
    for name in ("val", "test"):
        x, y, _ = data.load_split(name)
        np.testing.assert_array_equal(d[f"x_{name}"], x)
        assert d[f"y_{name}"].tolist() == y.tolist()
    assert d["classes"] == ["0", "1", "2"]
    np.testing.assert_allclose(d["class_weights"], data.load_class_weights())

    npz = dict(np.load("data/resample/train.npz"))
    np.savez("data/resample/train.npz", **(npz | {"y": np.full_like(npz["y"], 3)}))
    data.load_fit_sets()  # labels >= K are only rejected with check_shapes
    with pytest.raises(ValueError, match="labels exceed the 3 classes"):
        data.load_fit_sets(check_shapes=True)

    synthetic = {"rows": np.append(npz["rows"], -1), "y": np.append(npz["y"], 0),
                 "synthetic": np.append(npz["synthetic"], True), "ids": np.append(npz["ids"], ""),
                 "x_synthetic": np.zeros((1, 16, 8, 1), np.uint8)}  # fmt: skip
    np.savez("data/resample/train.npz", **synthetic)
    with pytest.raises(InputError, match=r"synthetic images are \(16, 8, 1\), images\.npy's"):
        data.load_fit_sets()

    empty = {k: v[:0] for k, v in npz.items()}
    np.savez("data/resample/train.npz", **empty)
    with pytest.raises(ValueError, match=r"train\.npz: no images"):
        data.load_fit_sets()


def test_read_teacher_logits_checks_shape(prepared_workspace) -> None:
    prepared_workspace(n_classes=2, per_class=10)
    Path("data/train").mkdir(parents=True)
    np.save("data/train/logits_val.npy", np.ones((4, 2), dtype=np.float64))
    logits = data.read_teacher_logits("val", n_rows=4, n_classes=2)
    assert logits.dtype == np.float32 and logits.shape == (4, 2)
    with pytest.raises(ValueError, match=r"logits_val\.npy: shape \(4, 2\), expected \(5, 2\)"):
        data.read_teacher_logits("val", n_rows=5, n_classes=2)


def test_load_fit_sets_adds_the_teachers_logits_row_aligned(prepared_workspace) -> None:
    info = prepared_workspace(n_classes=2, per_class=10)
    Path("data/train").mkdir(parents=True)
    n_val = len(data.load_split("val")[1])
    np.save("data/train/logits_train.npy", np.zeros((info["n_train"], 2), dtype=np.float32))
    np.save("data/train/logits_val.npy", np.ones((n_val, 2), dtype=np.float32))
    assert "teacher_train" not in data.load_fit_sets()
    d = data.load_fit_sets(teacher_logits=True)
    assert d["teacher_train"].shape == (len(d["x_train"]), 2)
    assert d["teacher_val"].shape == (len(d["x_val"]), 2) and d["teacher_val"].min() == 1.0
    np.save("data/train/logits_val.npy", np.ones((n_val + 1, 2), dtype=np.float32))
    with pytest.raises(InputError, match=r"logits_val\.npy: shape .*dvc repro train"):
        data.load_fit_sets(teacher_logits=True)


def test_a_missing_input_names_the_file_and_the_stage_to_run(prepared_workspace) -> None:
    prepared_workspace(n_classes=2, per_class=10)
    with pytest.raises(InputError, match=r"logits_train\.npy: missing; .*dvc repro train"):
        data.load_fit_sets(teacher_logits=True)
    Path("data/resample/class_weights.json").unlink()
    with pytest.raises(InputError, match=r"class_weights\.json: missing; .*dvc repro resample"):
        data.load_fit_sets()
