"""Loaders for the data contracts of docs/architecture.md, for the stages after ingest.

Shapes: N examples, K classes, images H x W x C uint8. Class names are strings in CSVs and
integer indices 0..K-1 (the order of `data/ingest/classes.json`) in arrays.

- `load_classes()`       -> list of K class names
- `load_images()`        -> uint8 (N, H, W, C) memory map, row i = manifest row i
- `load_manifest()`      -> the ingest manifest (one row per kept image)
- `load_split(name)`     -> (x, y, ids) of the `train`/`val`/`test` split (train before resampling):
                            membership from data/split/split.csv, labels (and the rows clean
                            dropped, never test ones) from data/clean/labels.csv
- `load_split_rows(name)` -> (rows into `load_images()`, y, ids) of a split, no pixels read
- `load_train()`         -> (x, y, synthetic, ids) of the resampled train set: real rows gathered
                            from `images.npy` by the indices `save_train_set` stored, synthetic
                            rows' pixels from train.npz
- `load_class_weights()` -> float64 (K,) "balanced" weights of the (original) train labels
- `load_fit_sets()`      -> classes, resampled train, val, test and class weights (+ the teacher's
                            logits), checked: THE training-set loader of train, distill, prune, qat
- `read_teacher_logits(split)` -> float32 (N, K) teacher logits of `data/train/logits_<split>.npy`

File names come from `edge_pipeline.artifacts.catalog`, folders from its `stage_paths`, so
`params.yaml[paths]` moves them all. Unusable input raises `InputError` naming the file and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edge_pipeline.artifacts.catalog import (
    CLASS_WEIGHTS,
    CLASSES,
    IMAGES,
    LABELS,
    MANIFEST,
    PREVIOUS_SPLIT,
    SPLIT,
    TEACHER_LOGITS,
    TRAIN_SET,
    stage_paths,
)
from edge_pipeline.core.errors import InputError

SPLITS = ("train", "val", "test")
GATHER_CHUNK = 4096  # images copied from the memory map at a time by load_train


def _input_file(stage: str, name: str, params_path: Path | None) -> Path:
    """`data/<stage>/<name>`; InputError naming the stage to run when it is missing."""
    path = stage_paths(stage, params_path).data / name
    if not path.exists():
        raise InputError(f"{path}: missing; run the {stage} stage first (dvc repro {stage})")
    return path


def load_classes(*, params_path: Path | None = None) -> list[str]:
    """The K class names of `data/ingest/classes.json`; index k in arrays means `classes[k]`."""
    path = _input_file("ingest", CLASSES, params_path)
    classes = json.loads(path.read_text())
    if not isinstance(classes, list) or not classes or len(set(map(str, classes))) != len(classes):
        raise InputError(f"{path}: expected a non-empty JSON list of distinct class names")
    return [str(c) for c in classes]


def load_images(*, params_path: Path | None = None) -> np.ndarray:
    """All kept images, uint8 (N, H, W, C), memory-mapped (read-only); row i = manifest row i."""
    path = _input_file("ingest", IMAGES, params_path)
    images = np.load(path, mmap_mode="r")
    if images.dtype != np.uint8 or images.ndim != 4:
        raise InputError(f"{path}: expected uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    return images


def load_manifest(*, params_path: Path | None = None) -> pd.DataFrame:
    """The ingest manifest (`id,path,sha256,bytes,width,height,mode,label,true_label,group`).

    `label` and `true_label` are strings ('' when unknown); row i describes `load_images()[i]`.
    """
    path = _input_file("ingest", MANIFEST, params_path)
    text = {"id": str, "path": str, "label": str, "true_label": str, "group": str}
    manifest = pd.read_csv(path, dtype=text, keep_default_na=False)  # an id `NA` is an id
    for col in ("label", "true_label"):
        manifest[col] = manifest[col].fillna("") if col in manifest else ""
    if manifest["id"].duplicated().any():
        dup = manifest.loc[manifest["id"].duplicated(), "id"].iloc[0]
        raise InputError(f"{path}: id {dup!r} appears twice; re-run ingest")
    return manifest


def encode_labels(labels: pd.Series, classes: list[str], *, source: str) -> np.ndarray:
    """Map class names to int64 indices (N,); an unknown name fails naming `source` and its line.

    `labels.index` holds the 0-based CSV data rows (as `pd.read_csv` gives them), so the line
    named is index + 2 (the header is line 1).
    """
    index = {c: k for k, c in enumerate(classes)}
    codes = labels.astype(str).map(index)
    bad = codes.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{source} line {labels.index[row] + 2}: label {labels.iloc[row]!r} is not in "
            f"classes.json {classes}; fix the label or re-run the stages that produce both files"
        )
    return codes.to_numpy(dtype=np.int64)


def rows_of(ids: pd.Series, manifest: pd.DataFrame, *, source: str) -> np.ndarray:
    """Row indices (N,) into `load_images()` of `ids`; an id missing from the manifest fails.

    `ids.index` holds the 0-based CSV data rows, as in `encode_labels`.
    """
    position = pd.Series(np.arange(len(manifest)), index=manifest["id"].to_numpy())
    rows = ids.map(position)
    missing = rows.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise InputError(
            f"{source} line {ids.index[row] + 2}: id {ids.iloc[row]!r} is not in "
            "data/ingest/manifest.csv; "
            "re-run the pipeline from ingest (dvc repro)"
        )
    return rows.to_numpy(dtype=np.int64)


def read_split_table(*, params_path: Path | None = None) -> tuple[pd.DataFrame, Path]:
    """The final split (`id,label,split`, split.csv's row index kept for error messages) and the
    path of the clean labels it takes its labels from.

    Membership comes from `data/split/split.csv`; the label and the rows clean dropped (train/val
    only: clean never drops a test image) from `data/clean/labels.csv` (`id,label,action`).
    """
    path = _input_file("split", SPLIT, params_path)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    labels_path = _input_file("clean", LABELS, params_path)
    clean = pd.read_csv(labels_path, dtype=str, keep_default_na=False)
    for frame, where, cols in ((table, path, ("id", "label", "split")),
                               (clean, labels_path, ("id", "label", "action"))):  # fmt: skip
        missing = [c for c in cols if c not in frame]
        if missing:
            raise InputError(f"{where}: no column(s) {missing}; re-run the stage that writes it")
    clean = clean.drop_duplicates("id", keep="last").set_index("id")
    unknown = ~table["id"].isin(clean.index)
    if unknown.any():
        raise InputError(
            f"{path} line {table.index[unknown][0] + 2}: id {table['id'][unknown].iloc[0]!r} is "
            f"not in {labels_path}; re-run the clean stage (dvc repro clean)"
        )
    action = table["id"].map(clean["action"])
    table = table.assign(label=table["id"].map(clean["label"]))[action != "dropped"]
    return table, labels_path


def read_split_assignment(path: Path) -> pd.DataFrame | None:
    """`id,split` of a split.csv (None when there is none: e.g. no previous run)."""
    if not path.exists():
        return None
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"id", "split"} <= set(table.columns):
        raise InputError(f"{path}: no id/split columns; delete it to start the split afresh")
    return table[["id", "split"]]


def load_split_rows(
    name: str, *, params_path: Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One split of `data/split/split.csv` as row indices into `load_images()`, in split.csv order
    (the rows clean dropped left out); `load_split` without reading a pixel.

    Args:
        name: `train` (before resampling), `val` or `test`.

    Returns:
        rows: int64 (N,) rows of `load_images()` (= manifest rows).
        y: int64 (N,) class indices into `load_classes()`.
        ids: str (N,) image ids (manifest `id`).
    """
    if name not in SPLITS:
        raise ValueError(f"split {name!r} is not one of {list(SPLITS)}")
    table, labels_path = read_split_table(params_path=params_path)
    table = table[table["split"] == name]  # keeps split.csv's row numbers for error messages
    return _table_rows(table, labels_path, params_path=params_path)


def _table_rows(
    table: pd.DataFrame, labels_path: Path, *, params_path: Path | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows into `load_images()`, y, ids) of a part of `read_split_table`'s table."""
    source = f"{stage_paths('split', params_path).data / SPLIT} (labels: {labels_path})"
    y = encode_labels(table["label"], load_classes(params_path=params_path), source=source)
    rows = rows_of(table["id"], load_manifest(params_path=params_path), source=source)
    return rows, y, table["id"].to_numpy(dtype=str)


def load_split(
    name: str, *, params_path: Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One split of `data/split/split.csv` with its pixels and clean's labels (`load_split_rows`).

    Returns:
        x: uint8 (N, H, W, C) images gathered from the memory-mapped `images.npy` (the one copy).
        y: int64 (N,) class indices into `load_classes()`.
        ids: str (N,) image ids (manifest `id`).
    """
    rows, y, ids = load_split_rows(name, params_path=params_path)
    return np.asarray(load_images(params_path=params_path)[rows]), y, ids


def save_train_set(
    path: Path,
    *,
    rows: np.ndarray,
    x_synthetic: np.ndarray,
    y: np.ndarray,
    synthetic: np.ndarray,
    ids: np.ndarray,
) -> None:
    """Write the resampled train set (`data/resample/train.npz`, read by `load_train`).

    Real rows are stored as indices into `images.npy`, so only the S synthetic rows' pixels are
    written (the file stays small whatever N is, and nobody holds a second copy of the images).

    Args:
        rows: int64 (N,) row of `load_images()` of each real row, -1 for a synthetic one.
        x_synthetic: uint8 (S, H, W, C) pixels of the synthetic rows, in their order in the set.
        y: int (N,) labels; synthetic: bool (N,) True for rows the resampler added (S of them);
        ids: str (N,) image ids, '' for synthetic rows.
    """
    np.savez(
        path, rows=np.asarray(rows, dtype=np.int64), x_synthetic=x_synthetic,
        y=np.asarray(y, dtype=np.int64), synthetic=np.asarray(synthetic, dtype=bool),
        ids=np.asarray(ids, dtype=str),
    )  # fmt: skip


def load_new_images(
    *, params_path: Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The images that are new tonight: in `data/split/split.csv` but not in the split the last run
    wrote (`previous_split.csv`), every split, with clean's labels (rows clean dropped left out).

    Without a previous split (a first run) every image is new. Returns x uint8 (N, H, W, C),
    y int64 (N,), ids str (N,) and split str (N,), in split.csv order.
    """
    table, labels_path = read_split_table(params_path=params_path)
    previous = read_split_assignment(stage_paths("split", params_path).data / PREVIOUS_SPLIT)
    if previous is not None:
        table = table[~table["id"].isin(previous["id"])]
    rows, y, ids = _table_rows(table, labels_path, params_path=params_path)
    x = np.asarray(load_images(params_path=params_path)[rows])
    return x, y, ids, table["split"].to_numpy(dtype=str)


def load_train(
    *, params_path: Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The resampled train set of `data/resample/train.npz` (written by `save_train_set`).

    The file holds row indices into `images.npy` for the real rows and pixels only for the
    synthetic ones; the real rows are gathered from the memory-mapped `images.npy`, so the
    returned x is the one in-memory copy of the train pixels.

    Returns:
        x: uint8 (N, H, W, C) images, original train rows first, then the added ones.
        y: int64 (N,) class indices into `load_classes()`.
        synthetic: bool (N,) True for rows added by the resampler (interpolated or duplicated).
        ids: str (N,) image ids; '' for synthetic rows.

    Raises:
        InputError: the arrays disagree in length, a row is outside `images.npy`, or the synthetic
            pixels do not match the images' (H, W, C); the message names the file and the fix.
    """
    path = _input_file("resample", TRAIN_SET, params_path)
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("rows", "x_synthetic", "y", "synthetic", "ids") if k not in z]
        if missing:
            raise InputError(f"{path}: no {missing} (an older format?); re-run resample")
        rows, x_new, y, synthetic, ids = (
            z[k] for k in ("rows", "x_synthetic", "y", "synthetic", "ids")
        )
    synthetic = synthetic.astype(bool)
    if not len(rows) == len(y) == len(synthetic) == len(ids) or synthetic.sum() != len(x_new):
        raise InputError(
            f"{path}: rows, y, synthetic and ids differ in length, or x_synthetic does not hold "
            "one image per synthetic row; re-run resample"
        )
    images = load_images(params_path=params_path)
    real = rows[~synthetic]
    if len(real) and (real.min() < 0 or real.max() >= len(images)):
        raise InputError(
            f"{path}: row indices outside data/ingest/{IMAGES} ({len(images)} images): it was "
            "written for another ingest; re-run resample (dvc repro resample)"
        )
    if len(x_new) and x_new.shape[1:] != images.shape[1:]:
        raise InputError(
            f"{path}: synthetic images are {x_new.shape[1:]}, {IMAGES}'s {images.shape[1:]}; "
            "re-run resample (dvc repro resample)"
        )
    x = np.empty((len(rows), *images.shape[1:]), dtype=np.uint8)
    at = np.flatnonzero(~synthetic)
    for i in range(0, len(at), GATHER_CHUNK):  # chunks: no transient second copy of the pixels
        x[at[i : i + GATHER_CHUNK]] = images[real[i : i + GATHER_CHUNK]]
    x[synthetic] = x_new
    return x, y.astype(np.int64), synthetic, ids.astype(str)


def load_class_weights(*, params_path: Path | None = None) -> np.ndarray:
    """float64 (K,) class weights of `data/resample/class_weights.json`, in `load_classes()` order.

    sklearn's "balanced" weights n_train / (K_present * n_k) of the original train labels; a class
    with no train example has weight 0. Use them as loss weights (torch `CrossEntropyLoss(weight=)`,
    Keras `class_weight=dict(enumerate(w))`).
    """
    path = _input_file("resample", CLASS_WEIGHTS, params_path)
    weights = json.loads(path.read_text())
    classes = load_classes(params_path=params_path)
    missing = [c for c in classes if c not in weights]
    if missing:
        raise InputError(f"{path}: no weight for classes {missing}; re-run resample")
    return np.array([float(weights[c]) for c in classes], dtype=np.float64)


def load_fit_sets(
    *, check_shapes: bool = False, teacher_logits: bool = False, params_path: Path | None = None
) -> dict[str, Any]:
    """The class names and the sets a training stage fits, selects and scores on.

    The one training-set loader of train, distill, prune and qat; its keys are a contract.

    Args:
        check_shapes: also require every label below K (the train stage checks this; the others
            leave it to the model). Every set's pixels come from `images.npy`, so their
            (H, W, C) agree by construction.
        teacher_logits: also load the teacher's logits of the train and val sets (data/train).
        params_path: the params.yaml whose `paths` locate the files (default: the repository's).

    Returns:
        {"classes": the K class names,
         "x_train": uint8 (N, H, W, C) resampled train images, "y_train": int64 (N,),
         "synthetic": bool (N,) True for rows the resampler added,
         "x_val": uint8 (N_val, H, W, C), "y_val": int64 (N_val,),
         "x_test": uint8 (N_test, H, W, C), "y_test": int64 (N_test,),
         "class_weights": float64 (K,) of `load_class_weights()`}
        and, with `teacher_logits`, "teacher_train": float32 (N, K) row-aligned with x_train and
        "teacher_val": float32 (N_val, K) row-aligned with x_val (`read_teacher_logits`).

    Raises:
        InputError: a set has no images (or, with `check_shapes`, a label >= K), or the
            teacher's logits are not (N, K); the message names the file and the fix.
    """
    classes = load_classes(params_path=params_path)
    x_train, y_train, synthetic, _ = load_train(params_path=params_path)
    x_val, y_val, _ = load_split("val", params_path=params_path)
    x_test, y_test, _ = load_split("test", params_path=params_path)
    train_file = _input_file("resample", TRAIN_SET, params_path)
    split_file = _input_file("split", SPLIT, params_path)
    sets = (
        (str(train_file), x_train),
        (f"{split_file} val", x_val),
        (f"{split_file} test", x_test),
    )
    for name, x in sets:
        if len(x) == 0:
            raise InputError(f"{name}: no images; check split.val_fraction / split.test_fraction")
    k = len(classes)
    if check_shapes and max(y_train.max(), y_val.max(), y_test.max()) >= k:
        raise InputError(f"labels exceed the {k} classes of data/ingest/{CLASSES}; re-run resample")
    out = {
        "classes": classes, "x_train": x_train, "y_train": y_train, "synthetic": synthetic,
        "x_val": x_val, "y_val": y_val, "x_test": x_test, "y_test": y_test,
        "class_weights": load_class_weights(params_path=params_path),
    }  # fmt: skip
    if teacher_logits:
        for split, n in (("train", len(x_train)), ("val", len(x_val))):
            out[f"teacher_{split}"] = read_teacher_logits(
                split, n_rows=n, n_classes=k, params_path=params_path
            )
    return out


def read_teacher_logits(
    split: str, *, n_rows: int, n_classes: int, params_path: Path | None = None
) -> np.ndarray:
    """float32 (N, K) teacher logits of `data/train/logits_<split>.npy`, checked against N and K.

    Args:
        split: `train` (row-aligned with `load_train()`) or `val` (with `load_split("val")`).
        n_rows: N, the number of images the logits must be row-aligned with.
        n_classes: K, the number of classes.

    Raises:
        InputError: the array is not (N, K); the message names the file and the fix.
    """
    path = _input_file("train", TEACHER_LOGITS.format(split=split), params_path)
    logits = np.load(path).astype(np.float32)
    if logits.shape != (n_rows, n_classes):
        raise InputError(
            f"{path}: shape {logits.shape}, expected {(n_rows, n_classes)} (row-aligned with the "
            f"{split} images); re-run the train stage (dvc repro train)"
        )
    return logits
