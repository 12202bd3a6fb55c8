"""Shared fixtures: a tiny prepared workspace in the stage contracts of docs/architecture.md."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from edge_pipeline.artifacts.datasets import save_train_set

REPO = Path(__file__).resolve().parent.parent

# torch and TensorFlow never share a process (importing triton after TensorFlow segfaults), so the
# torch side of the tests (tests/teacher/, mirroring edge_pipeline/teacher/) runs in a pytest
# process of its own: `make test` runs `EDGE_TEST_SIDE=torch pytest` and then `pytest`.
TORCH_DIR = Path(__file__).resolve().parent / "teacher"


def _is_torch(path: Path) -> bool:
    return TORCH_DIR in Path(path).resolve().parents or Path(path).resolve() == TORCH_DIR


def _side(config: pytest.Config) -> str:
    side = os.environ.get("EDGE_TEST_SIDE")
    if side:
        return side
    named = [Path(str(a).split("::")[0]) for a in config.args]
    return "torch" if named and all(_is_torch(n) for n in named) else "rest"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    return _is_torch(collection_path) != (_side(config) == "torch")


def pytest_report_header(config: pytest.Config) -> str:
    other = "the rest" if _side(config) == "torch" else "EDGE_TEST_SIDE=torch pytest"
    return f"test side: {_side(config)} (torch and TensorFlow tests run apart; also run: {other})"


@pytest.fixture(autouse=True)
def _isolated_tracking(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own MLflow store; no test writes to the repo's mlruns.db."""
    root = tmp_path_factory.mktemp("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", (root / "artifacts").as_uri())
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    monkeypatch.delenv("PIPELINE_PARENT_RUN_ID", raising=False)


def _digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 (N, size, size, 1) images and int labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
    out = np.stack(
        [np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in imgs]
    )
    return out[..., None], d.target.astype(np.int64)


def write_prepared(
    root: Path,
    *,
    n_classes: int = 3,
    per_class: int = 30,
    size: int = 16,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write data/ingest, data/split, data/clean, data/resample (docs/architecture.md contracts)
    under `root`.

    Uses the first `per_class` digits of classes 0..n_classes-1; 60/20/20 train/val/test per class.
    Also writes root/params.yaml = the repo's params.yaml updated with `params` (deep-merged).
    Returns a small description (classes, counts).
    """
    x_all, y_all = _digits(size)
    idx = np.concatenate([np.flatnonzero(y_all == k)[:per_class] for k in range(n_classes)])
    x, y = x_all[idx], y_all[idx]
    classes = [str(k) for k in range(n_classes)]
    ids = [f"images/{classes[k]}/{i:04d}.png" for i, k in zip(idx, y, strict=True)]

    ingest = root / "data" / "ingest"
    ingest.mkdir(parents=True, exist_ok=True)
    np.save(ingest / "images.npy", x)
    (ingest / "classes.json").write_text(json.dumps(classes))
    pd.DataFrame(
        {
            "id": ids,
            "path": ids,
            "sha256": [f"{i:064x}" for i in idx],
            "bytes": 100,
            "width": size,
            "height": size,
            "mode": "L",
            "label": [classes[k] for k in y],
            "true_label": [classes[k] for k in y],
        }
    ).to_csv(ingest / "manifest.csv", index=False)
    pd.DataFrame(columns=["id", "annotator", "label"]).to_csv(
        ingest / "annotations.csv", index=False
    )

    rank = np.zeros(len(y), dtype=int)
    for k in range(n_classes):
        members = np.flatnonzero(y == k)
        rank[members] = np.arange(len(members))
    frac = rank / per_class
    split = np.where(frac < 0.6, "train", np.where(frac < 0.8, "val", "test"))
    split_dir = root / "data" / "split"
    split_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": ids, "label": [classes[k] for k in y], "split": split}).to_csv(
        split_dir / "split.csv", index=False
    )
    clean_dir = root / "data" / "clean"  # the final labels load_split reads: all kept
    clean_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": ids, "label": [classes[k] for k in y], "action": "kept"}).to_csv(
        clean_dir / "labels.csv", index=False
    )

    train = split == "train"
    res = root / "data" / "resample"
    res.mkdir(parents=True, exist_ok=True)
    save_train_set(
        res / "train.npz",
        rows=np.flatnonzero(train),  # rows of images.npy
        x_synthetic=x[:0],
        y=y[train],
        synthetic=np.zeros(train.sum(), dtype=bool),
        ids=np.array(ids)[train],
    )
    (res / "class_weights.json").write_text(json.dumps({c: 1.0 for c in classes}))

    merged = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in (params or {}).items():
        if isinstance(values, dict):
            merged.setdefault(section, {}).update(values)
        else:
            merged[section] = values
    merged.setdefault("ingest", {}).update({"image_size": [size, size], "channels": 1})
    (root / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    return {"classes": classes, "n": len(y), "n_train": int(train.sum())}


@pytest.fixture
def prepared_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., dict[str, Any]]:
    """Call it (write_prepared's keywords) to get a tiny workspace as cwd; returns its summary."""
    monkeypatch.chdir(tmp_path)

    def make(**kwargs: Any) -> dict[str, Any]:
        info = write_prepared(tmp_path, **kwargs)
        info["root"] = tmp_path
        return info

    return make


def copy_stage_outputs(src: Path, dst: Path, stage: str) -> None:
    """Copy data/<stage> from one workspace to another (chaining stage tests)."""
    shutil.copytree(src / "data" / stage, dst / "data" / stage, dirs_exist_ok=True)
