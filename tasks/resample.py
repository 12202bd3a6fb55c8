"""resample: rebalance the train split (never val or test) with imbalanced-learn; class weights.

Methods (`resample.method`):
- `none`, `class_weight`: the train split as is (training may use the class weights instead).
- `random_over`: imblearn RandomOverSampler (duplicates of real images).
- `smote`, `adasyn`: imblearn SMOTE / ADASYN interpolating in flattened pixel space (see
  docs/resample.md for what that means and costs on large images).
- `smoteenn`: the `smote` step, then imblearn EditedNearestNeighbours over all classes (what
  imblearn's SMOTEENN does; run as two steps so the small-class handling below applies).

Small classes: a class with n < k_neighbors + 1 train examples is interpolated with k = n - 1;
a 1-example class is randomly oversampled instead; ADASYN falls back to SMOTE for a group of
classes where it cannot run (no neighbour of another class). Each case is a warning in the metrics.
Class weights are sklearn's "balanced" weights of the original train labels, always written.

Reads data/ingest and data/split; writes data/resample/{train.npz,class_weights.json},
metrics/resample.json and plots/resample/. Shapes: N examples, K classes, D = H*W*C.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from imblearn.over_sampling import ADASYN, SMOTE, RandomOverSampler
from imblearn.under_sampling import EditedNearestNeighbours
from imblearn.utils import check_sampling_strategy
from sklearn.utils.class_weight import compute_class_weight

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.artifacts.catalog import stage_paths
from edge_pipeline.core.common import choice, load_params
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.core.io import atomic_path, write_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.core.plots import count_table, write_bar_png, write_distribution_csvs
from edge_pipeline.core.stage_helpers import number

STAGE = "resample"
METHODS = ("none", "class_weight", "random_over", "smote", "smoteenn", "adasyn")
log = setup_logging(STAGE)


def balanced_class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """sklearn "balanced" weights, float64 (K,), of int (N,) labels; 0 for a class absent from y."""
    weights = np.zeros(n_classes)
    present = np.unique(y)
    weights[present] = compute_class_weight("balanced", classes=present, y=y)
    return weights


def _sampler(method: str, k: int, targets: dict[int, int], seed: int) -> Any:
    if k == 0:
        return RandomOverSampler(sampling_strategy=targets, random_state=seed)
    if method == "adasyn":
        return ADASYN(sampling_strategy=targets, n_neighbors=k, random_state=seed)
    return SMOTE(sampling_strategy=targets, k_neighbors=k, random_state=seed)


def oversample(
    x: np.ndarray,
    y: np.ndarray,
    *,
    method: str,
    sampling_strategy: str | float | dict[int, int] = "auto",
    k_neighbors: int = 5,
    seed: int = 0,
    names: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[int, int], list[str]]:
    """New examples from `random_over`, `smote` or `adasyn`; the inputs are not modified.

    Args:
        x: (N, D) features (float for interpolation; any dtype for random_over).
        y: int (N,) labels.
        sampling_strategy: imblearn over-sampling strategy (dict: class index -> target count).
        names: class names for the warnings (default: the indices).

    Returns:
        x_new: (M, D) added examples, dtype of x; y_new: int (M,) their labels.
        k_used: class index -> neighbours used for it (0 = random oversampling), classes that grew.
        warnings: one line per class whose k was lowered or that fell back to another sampler.
    """
    targets = check_sampling_strategy(sampling_strategy, y, "over-sampling")
    counts = np.bincount(y)
    notes: list[str] = []
    k_used: dict[int, int] = {}
    for cls, n_new in targets.items():
        if n_new == 0:
            continue
        n = int(counts[cls])
        k_used[cls] = 0 if method == "random_over" else min(k_neighbors, n - 1)
        if method != "random_over" and k_used[cls] < k_neighbors:
            how = f"{method} with k={k_used[cls]}" if k_used[cls] else "random oversampling"
            name = names[cls] if names else cls
            notes.append(f"class {name!r}: {n} train example(s) < k_neighbors + 1; {how}")
    # One sampler call per k (most classes share the configured one) keeps copies of x few.
    groups: dict[int, dict[int, int]] = defaultdict(dict)
    for cls, k in k_used.items():
        groups[k][cls] = int(counts[cls] + targets[cls])
    new_x, new_y = [x[:0]], [y[:0]]
    for k, group in sorted(groups.items()):
        try:
            xr, yr = _sampler(method, k, group, seed).fit_resample(x, y)
        except (RuntimeError, ValueError) as err:
            if method != "adasyn":
                raise
            failed = [names[c] if names else c for c in sorted(group)]
            notes.append(f"classes {failed}: ADASYN failed ({err}); used SMOTE with k={k}")
            xr, yr = _sampler("smote", k, group, seed).fit_resample(x, y)
        new_x.append(xr[len(x) :])
        new_y.append(yr[len(y) :])
    return np.concatenate(new_x), np.concatenate(new_y).astype(np.int64), k_used, notes


def resample(
    x: np.ndarray,
    y: np.ndarray,
    *,
    method: str,
    sampling_strategy: str | float | dict[int, int] = "auto",
    k_neighbors: int = 5,
    seed: int = 0,
    names: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[int, int], list[str]]:
    """Resample a train set with `method` (one of METHODS).

    Args:
        x: uint8 (N, H, W, C) images; y: int (N,) labels.

    Returns:
        x_out: uint8 (M, H, W, C), the kept originals first (in input order), then added rows.
        y_out: int64 (M,); synthetic: bool (M,) True for added rows;
        source: int (M,) input row of each original, -1 for added rows;
        k_used and warnings as in `oversample`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {list(METHODS)}")
    y = np.asarray(y, dtype=np.int64)
    if method in ("none", "class_weight"):
        return x, y, np.zeros(len(y), bool), np.arange(len(y)), {}, []
    flat = x.reshape(len(x), -1)
    # SMOTE/ADASYN interpolate: uint8 would wrap around in x_a - x_b, so they work in float32.
    features = flat if method == "random_over" else flat.astype(np.float32)
    base = "smote" if method == "smoteenn" else method
    x_new, y_new, k_used, notes = oversample(
        features, y, method=base, sampling_strategy=sampling_strategy,
        k_neighbors=k_neighbors, seed=seed, names=names,
    )  # fmt: skip
    x_new = np.clip(np.rint(x_new), 0, 255).astype(np.uint8)
    x_all = np.concatenate([flat, x_new]).reshape(-1, *x.shape[1:])
    y_all = np.concatenate([y, y_new])
    source = np.concatenate([np.arange(len(y)), np.full(len(y_new), -1)])
    if method == "smoteenn":
        features = np.concatenate([features, x_new.astype(features.dtype)])
        enn = EditedNearestNeighbours(sampling_strategy="all")
        enn.fit_resample(features, y_all)
        keep = np.sort(enn.sample_indices_)
        lost = sorted(set(np.unique(y_all)) - set(np.unique(y_all[keep])))
        if lost:
            lost = [names[c] if names else c for c in lost]
            notes.append(f"EditedNearestNeighbours removed every example of classes {lost}")
        x_all, y_all, source = x_all[keep], y_all[keep], source[keep]
    return x_all, y_all, source < 0, source, k_used, notes


def parse_strategy(value: Any, classes: list[str]) -> str | float | dict[int, int]:
    """params `resample.sampling_strategy`: an imblearn string, a float, or {class name: count}."""
    if isinstance(value, dict):
        unknown = [c for c in value if str(c) not in classes]
        if unknown:
            raise ConfigError(
                f"params.yaml resample.sampling_strategy names unknown classes {unknown}; "
                f"use names from data/ingest/classes.json {classes}"
            )
        return {classes.index(str(c)): int(n) for c, n in value.items()}
    if isinstance(value, (str, float)) and not isinstance(value, bool):
        return value
    raise ConfigError(
        f"params.yaml resample.sampling_strategy={value!r}: use auto, minority, not majority, "
        "not minority, all, a float (two classes only) or {class name: target count}"
    )


def main() -> None:
    cfg = load_params(STAGE)
    method = choice(cfg, "method", METHODS, section=STAGE)
    seed = number(cfg, "seed", 0, section=STAGE, integer=True)
    k = number(cfg, "k_neighbors", 5, section=STAGE, lo=1, integer=True)
    classes = data.load_classes()
    strategy = parse_strategy(cfg.get("sampling_strategy", "auto"), classes)
    x, y, ids = data.load_split("train")
    log.info("train split: %d examples of %s; method %s", len(y), x.shape[1:], method)
    try:
        x_out, y_out, synthetic, source, k_used, notes = resample(
            x,
            y,
            method=method,
            sampling_strategy=strategy,
            k_neighbors=k,
            seed=seed,
            names=classes,
        )
    except ValueError as err:
        if "sampling_strategy" in str(err) or "ratio" in str(err):
            raise ConfigError(f"params.yaml resample.sampling_strategy: {err}") from err
        raise
    for note in notes:
        log.warning(note)
    weights = balanced_class_weights(y, len(classes))
    named_weights = {c: round(float(w), 6) for c, w in zip(classes, weights, strict=True)}
    absent = [classes[c] for c in np.flatnonzero(np.bincount(y, minlength=len(classes)) == 0)]
    if absent:
        notes.append(f"classes {absent} have no train example: class weight 0")

    paths = stage_paths(STAGE)
    ids_out = np.where(synthetic, "", ids[np.maximum(source, 0)])
    with atomic_path(paths.data) as out:
        out.mkdir()
        np.savez(out / "train.npz", x=x_out, y=y_out, synthetic=synthetic, ids=ids_out.astype(str))
        write_json(out / "class_weights.json", named_weights)
    counts = count_table({"before": y, "after": y_out, "synthetic": y_out[synthetic]}, classes)
    with atomic_path(paths.plots) as out:
        out.mkdir()
        write_distribution_csvs(counts[["before", "after"]], out)
        write_bar_png(counts[["before", "after"]], out / "class_distribution.png",
                      title=f"Train examples per class ({method})", xlabel="examples")  # fmt: skip
    write_json(paths.metrics, {
        "method": method, "n_before": len(y), "n_after": len(y_out),
        "n_synthetic": int(synthetic.sum()), "k_neighbors": k,
        "k_used": {classes[c]: (kk if kk else "random_over") for c, kk in k_used.items()},
        "per_class": counts.to_dict(orient="index"),
        "class_weights": named_weights,
        "warnings": notes,
    })  # fmt: skip
    log.info(
        "%s: %d -> %d train examples (%d synthetic)", method, len(y), len(y_out), synthetic.sum()
    )


if __name__ == "__main__":
    main()
