"""resample: every method on a tiny set, small classes never crash, class weights, frozen test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.utils.class_weight import compute_class_weight

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.config.quality import Resample
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.quality import resampling
from tasks import resample, split

METHODS = ("none", "class_weight", "random_over", "smote", "smoteenn", "adasyn")
DEFAULTS = Resample().model_dump(include={"sampling_strategy", "k_neighbors", "seed"})


def run(x: np.ndarray, y: np.ndarray, **options: object) -> tuple:
    """`resampling.resample` with params.yaml's resample options, `options` overriding them."""
    return resampling.resample(x, y, **(DEFAULTS | options))


def tiny(counts: tuple[int, ...] = (30, 12, 6), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 4, 4, 1) images around a per-class brightness (overlapping a little)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    x = np.clip(60 + 50 * y[:, None] + rng.normal(0, 40, (len(y), 16)), 0, 255)
    return x.round().astype(np.uint8).reshape(-1, 4, 4, 1), y


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_a_tiny_set(method: str) -> None:
    x, y = tiny()
    x_out, y_out, synthetic, source, k_used, notes = run(x, y, method=method)

    assert x_out.dtype == np.uint8 and x_out.shape[1:] == (4, 4, 1) and y_out.dtype == np.int64
    assert len(x_out) == len(y_out) == len(synthetic) == len(source)
    originals = ~synthetic
    np.testing.assert_array_equal(x_out[originals], x[source[originals]])  # untouched pixels
    np.testing.assert_array_equal(y_out[originals], y[source[originals]])
    assert (source[synthetic] == -1).all()
    counts = np.bincount(y_out, minlength=3)
    if method in ("none", "class_weight"):
        assert counts.tolist() == [30, 12, 6] and not synthetic.any() and k_used == {}
    elif method in ("random_over", "smote"):
        assert counts.tolist() == [30, 30, 30] and synthetic.sum() == 42
    elif method == "adasyn":  # ADASYN rounds per example: balanced within 10%
        assert counts[0] == 30 and (np.abs(counts - 30) <= 3).all() and synthetic.sum() > 38
    else:  # smoteenn: SMOTE to 30 each, then ENN removes ambiguous rows of every class
        assert len(y_out) < 90 and (counts > 0).all() and synthetic.sum() <= 42
    if method == "random_over":  # duplicates of real images
        flat = x.reshape(len(x), -1)
        assert all((flat == row).all(axis=1).any() for row in x_out[synthetic].reshape(42, -1))


def test_smote_interpolates_inside_the_class() -> None:
    x, y = tiny()
    x_out, y_out, synthetic, *_ = run(x, y, method="smote", seed=1)
    for k in (1, 2):  # each new pixel lies between the class's own min and max
        own = x[y == k].reshape(-1, 16)
        new = x_out[synthetic & (y_out == k)].reshape(-1, 16)
        assert (new >= own.min(axis=0)).all() and (new <= own.max(axis=0)).all()


def test_two_and_one_example_classes_do_not_crash() -> None:
    x, y = tiny((20, 2, 1))
    names = ["big", "pair", "single"]
    for method in ("smote", "adasyn", "smoteenn"):
        x_out, y_out, synthetic, _, k_used, notes = run(
            x, y, method=method, k_neighbors=5, names=names
        )
        assert k_used == {1: 1, 2: 0}  # pair: k lowered to 1; single: random oversampling
        lowered = "smote" if method == "smoteenn" else method
        assert f"class 'pair': 2 train example(s) < k_neighbors + 1; {lowered} with k=1" in notes
        assert "class 'single': 1 train example(s) < k_neighbors + 1; random oversampling" in notes
        if method != "smoteenn":
            assert np.bincount(y_out).tolist() == [20, 20, 20]
        single = x_out[y_out == 2]
        assert (single == x[y == 2]).all()  # copies of the one real image


def test_adasyn_falls_back_to_smote_where_it_cannot_run() -> None:
    # Far-apart classes: no minority example has a neighbour of another class.
    x, y = tiny((20, 8))
    x[y == 1] = 255 - x[y == 1] // 8
    x[y == 0] = x[y == 0] // 8
    _, y_out, synthetic, _, _, notes = run(x, y, method="adasyn", names=["a", "b"])
    assert any("ADASYN failed" in n and "used SMOTE with k=5" in n for n in notes), notes
    assert np.bincount(y_out).tolist() == [20, 20] and synthetic.sum() == 12


def test_class_weights_match_sklearn() -> None:
    y = np.array([0] * 30 + [1] * 12 + [3] * 6)
    weights = resampling.balanced_class_weights(y, 4)
    expected = compute_class_weight("balanced", classes=np.array([0, 1, 3]), y=y)
    np.testing.assert_allclose(weights[[0, 1, 3]], expected)
    assert weights[2] == 0.0  # absent from train


def set_params(**section: object) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["resample"].update(section)
    Path("params.yaml").write_text(yaml.safe_dump(params))


def test_main_never_touches_val_or_test(prepared_workspace) -> None:
    prepared_workspace(n_classes=3, per_class=20)
    # A clean output with a long tail (class 2 keeps 4 examples) to split from.
    manifest = pd.read_csv("data/ingest/manifest.csv", dtype=str)
    keep = manifest[(manifest["label"] != "2") | (manifest.index % 20 < 4)]
    Path("data/agreement").mkdir()
    keep[["id", "label"]].to_csv("data/agreement/labels.csv", index=False)  # split's input
    keep.assign(action="kept")[["id", "label", "action"]].to_csv(
        "data/clean/labels.csv", index=False
    )
    split.main()
    split_csv = Path("data/split/split.csv").read_bytes()
    x_test, y_test, test_ids = data.load_split("test")
    x_train, y_train, train_ids = data.load_split("train")
    images = np.load("data/ingest/images.npy")

    for method in METHODS:
        set_params(method=method, k_neighbors=5)
        resample.main()
        assert Path("data/split/split.csv").read_bytes() == split_csv
        x_t, y_t, ids_t = data.load_split("test")
        np.testing.assert_array_equal(x_t, x_test)
        x, y, synthetic, ids = data.load_train()
        assert set(ids[~synthetic]) <= set(train_ids) and (ids[synthetic] == "").all()
        with np.load("data/resample/train.npz") as z:  # indices of real rows, synthetic pixels
            assert "x" not in z and (z["rows"][synthetic] == -1).all()
            np.testing.assert_array_equal(images[z["rows"][~synthetic]], x[~synthetic])
            np.testing.assert_array_equal(z["x_synthetic"], x[synthetic])
        position = {image_id: i for i, image_id in enumerate(train_ids)}
        real = [position[i] for i in ids[~synthetic]]  # the same pixels load_split gives
        np.testing.assert_array_equal(x[~synthetic], x_train[real])
        assert not set(ids) & set(test_ids)
        metrics = json.loads(Path("metrics/resample.json").read_text())
        assert metrics["method"] == method and metrics["n_after"] == len(y)
        assert metrics["per_class"]["2"]["before"] == int((y_train == 2).sum())
        expected = compute_class_weight("balanced", classes=np.arange(3), y=y_train)
        np.testing.assert_allclose(data.load_class_weights(), expected, rtol=1e-5)
        if method in ("smote", "smoteenn", "adasyn"):  # class 2 has < 6 train examples
            assert metrics["k_used"]["2"] < 5 and metrics["warnings"]
        if method == "smote":
            assert np.bincount(y).tolist() == [np.bincount(y_train).max()] * 3
            before = pd.read_csv("plots/resample/before.csv")
            after = pd.read_csv("plots/resample/after.csv")
            assert before["count"].tolist() == np.bincount(y_train).tolist()
            assert after["count"].tolist() == np.bincount(y).tolist()


def test_main_names_a_bad_strategy(prepared_workspace) -> None:
    prepared_workspace(n_classes=3, per_class=10)
    set_params(sampling_strategy={"7": 10})
    with pytest.raises(ConfigError, match=r"sampling_strategy names unknown classes \['7'\]"):
        resample.main()
    set_params(method="smote", sampling_strategy={"1": 10, "2": 12})  # by name: target counts
    resample.main()
    assert np.bincount(data.load_train()[1]).tolist() == [6, 10, 12]
