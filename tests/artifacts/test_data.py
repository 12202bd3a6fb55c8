"""edge_pipeline/artifacts/datasets.py: the loaders return what the stages wrote, in contract
order and dtypes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.class_weight import compute_class_weight

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.core.errors import InputError


def test_ingest_loaders_round_trip(prepared_workspace) -> None:
    info = prepared_workspace(n_classes=3, per_class=10)
    written = np.load("data/ingest/images.npy")

    assert data.load_classes() == info["classes"] == ["0", "1", "2"]
    images = data.load_images()
    assert isinstance(images, np.memmap)  # mmap_mode="r": nothing copied until indexed
    assert images.dtype == np.uint8 and images.shape == (30, 16, 16, 1)
    np.testing.assert_array_equal(images, written)
    manifest = data.load_manifest()
    assert list(manifest["id"][:2]) == ["images/0/0000.png", "images/0/0010.png"]
    assert manifest["true_label"].tolist() == ["0"] * 10 + ["1"] * 10 + ["2"] * 10


@pytest.mark.parametrize("name", ["train", "val", "test"])
def test_load_split_matches_split_csv_and_pixels(prepared_workspace, name: str) -> None:
    prepared_workspace(n_classes=3, per_class=10)
    table = pd.read_csv("data/split/split.csv", dtype=str)
    position = {i: r for r, i in enumerate(pd.read_csv("data/ingest/manifest.csv")["id"])}
    images = np.load("data/ingest/images.npy")

    x, y, ids = data.load_split(name)

    expected = table[table["split"] == name]
    assert ids.tolist() == expected["id"].tolist()
    assert y.dtype == np.int64 and y.tolist() == expected["label"].astype(int).tolist()
    assert x.dtype == np.uint8 and not isinstance(x, np.memmap)
    np.testing.assert_array_equal(x, images[[position[i] for i in ids]])


def test_new_images_are_those_missing_from_the_previous_split(prepared_workspace) -> None:
    prepared_workspace(n_classes=3, per_class=10)
    table = pd.read_csv("data/split/split.csv", dtype=str)
    x, y, ids, splits = data.load_new_images()  # a first run: no previous split, all new
    assert ids.tolist() == table["id"].tolist() and len(x) == len(y) == 30

    kept = table.drop(index=[0, 7, 21])  # last night had all but three of tonight's images
    kept[["id", "split"]].to_csv("data/split/previous_split.csv", index=False)
    clean = pd.read_csv("data/clean/labels.csv", dtype=str)
    clean.loc[clean["id"] == table["id"][21], "action"] = "dropped"  # clean dropped one of them
    clean.to_csv("data/clean/labels.csv", index=False)

    x, y, ids, splits = data.load_new_images()
    assert ids.tolist() == table["id"][[0, 7]].tolist()
    assert splits.tolist() == table["split"][[0, 7]].tolist()
    assert y.tolist() == table["label"][[0, 7]].astype(int).tolist()
    position = {i: r for r, i in enumerate(pd.read_csv("data/ingest/manifest.csv")["id"])}
    np.testing.assert_array_equal(x, np.load("data/ingest/images.npy")[[position[i] for i in ids]])


def test_load_split_names_the_bad_line(prepared_workspace) -> None:
    prepared_workspace(n_classes=2, per_class=10)
    table = pd.read_csv("data/split/split.csv", dtype=str)
    table.loc[3, "id"] = "images/missing.png"
    table.loc[3, "split"] = "val"
    table.to_csv("data/split/split.csv", index=False)
    with pytest.raises(ValueError, match=r"split\.csv line 5: id 'images/missing.png'"):
        data.load_split("val")
    with pytest.raises(ValueError, match="not one of"):
        data.load_split("holdout")


def test_unknown_label_names_file_and_line() -> None:
    with pytest.raises(ValueError, match=r"labels\.csv line 3: label 'cat' is not in classes"):
        data.encode_labels(pd.Series(["dog", "cat"]), ["dog"], source="labels.csv")


def test_train_and_class_weights_round_trip(prepared_workspace, tmp_path: Path) -> None:
    prepared_workspace(n_classes=3, per_class=10)
    rng = np.random.default_rng(0)
    images = np.load("data/ingest/images.npy")
    rows = np.array([7, 3, 20, 11, 0, -1, -1])  # any order of images.npy rows
    x_new = rng.integers(0, 256, (2, 16, 16, 1), dtype=np.uint8)
    x = np.concatenate([images[rows[:5]], x_new])
    y = np.array([0, 0, 0, 1, 2, 2, 2])
    synthetic = np.array([False] * 5 + [True] * 2)
    ids = np.array(["a", "b", "c", "d", "e", "", ""])
    data.save_train_set(
        Path("data/resample/train.npz"), rows=rows, x_synthetic=x_new, y=y.astype(np.int32),
        synthetic=synthetic, ids=ids,
    )  # fmt: skip
    with np.load("data/resample/train.npz") as z:  # indices and the synthetic pixels only
        assert set(z) == {"rows", "x_synthetic", "y", "synthetic", "ids"}
        assert z["rows"].dtype == np.int64 and z["x_synthetic"].shape == (2, 16, 16, 1)
    weights = compute_class_weight("balanced", classes=np.arange(3), y=y[:5])
    Path("data/resample/class_weights.json").write_text(
        json.dumps({"2": weights[2], "0": weights[0], "1": weights[1]})  # any key order
    )

    x2, y2, s2, ids2 = data.load_train()
    np.testing.assert_array_equal(x2, x)  # the pixels gathered from images.npy, then synthetic
    assert x2.dtype == np.uint8 and not isinstance(x2, np.memmap)
    assert y2.dtype == np.int64 and y2.tolist() == y.tolist()
    assert s2.tolist() == synthetic.tolist() and ids2.tolist() == ids.tolist()

    z = dict(np.load("data/resample/train.npz"))
    np.savez("data/resample/train.npz", **(z | {"rows": np.where(rows == 20, 999, rows)}))
    with pytest.raises(InputError, match=r"train\.npz: row indices outside .*dvc repro resample"):
        data.load_train()
    np.savez("data/resample/train.npz", **(z | {"x_synthetic": x_new[:1]}))
    with pytest.raises(InputError, match=r"x_synthetic does not hold one image per synthetic"):
        data.load_train()
    np.savez("data/resample/train.npz", x=x, y=y, synthetic=synthetic, ids=ids)  # older format
    with pytest.raises(InputError, match=r"no \['rows', 'x_synthetic'\].*re-run resample"):
        data.load_train()
    np.testing.assert_allclose(data.load_class_weights(), weights)  # classes.json order

    Path("data/resample/class_weights.json").write_text(json.dumps({"0": 1.0}))
    with pytest.raises(ValueError, match=r"no weight for classes \['1', '2'\]"):
        data.load_class_weights()


def test_paths_follow_params_paths(prepared_workspace, tmp_path: Path) -> None:
    prepared_workspace(n_classes=2, per_class=10)
    Path("elsewhere").mkdir()
    Path("data").rename("elsewhere/data")
    params = Path("params.yaml").read_text().replace("data: data", "data: elsewhere/data", 1)
    Path("params.yaml").write_text(params)
    assert data.load_classes(params_path=Path("params.yaml")) == ["0", "1"]
    assert len(data.load_split("test", params_path=Path("params.yaml"))[1]) == 4
