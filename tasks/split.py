"""split: stratified train/val/test split of the cleaned labels; the test split is frozen.

Two sklearn `train_test_split` calls with `stratify`: first test (`test_fraction`) off everything,
then val (`val_fraction` of the whole) off the rest. Rows are sorted by id first, so the split
depends only on the set of (id, label) pairs, `test_fraction` and `seed`: re-runs, a different
`val_fraction` and any resampling method leave the test split unchanged (resample reads only train).

Classes too small to appear in every split (fewer than 3 examples, or left without a val/test
example by the rounding) are warned about; their examples always keep a place in train.

Reads data/clean/labels.csv (rows with action `dropped` are excluded); writes data/split/split.csv
(`id,label,split`), metrics/split.json and plots/split/. Shapes: N examples, K classes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from edge_pipeline.artifacts.catalog import stage_paths
from edge_pipeline.core.common import load_params
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.core.io import atomic_path, write_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.core.plots import count_table, write_bar_png, write_distribution_csvs
from edge_pipeline.core.stage_helpers import number

STAGE = "split"
SPLITS = ("train", "val", "test")
log = setup_logging(STAGE)


def stratified_split(
    labels: np.ndarray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[np.ndarray, list[str]]:
    """Assign each example to train, val or test, stratified by label.

    Args:
        labels: (N,) class labels (any sortable dtype), in a deterministic order (e.g. sorted ids).
        val_fraction, test_fraction: shares of N for val and test (their sum < 1).

    Returns:
        split: str (N,) of train/val/test.
        warnings: one line per class that is missing from val or test (always kept in train).
    """
    labels = np.asarray(labels)
    split = np.full(len(labels), "train", dtype=object)
    values, counts = np.unique(labels, return_counts=True)
    notes = [
        f"class {c!r} has {n} example(s): too few for val and test, all kept in train"
        for c, n in zip(values.tolist(), counts.tolist(), strict=True)
        if n < 3
    ]
    eligible = np.flatnonzero(np.isin(labels, values[counts >= 3]))
    if len(eligible) == 0:
        return split.astype(str), notes
    try:
        rest, test = train_test_split(
            eligible, test_size=test_fraction, stratify=labels[eligible], random_state=seed
        )
        split[test] = "test"
        # A class the test draw left with a single example cannot be stratified again: train.
        rest_values, rest_counts = np.unique(labels[rest], return_counts=True)
        rest = rest[np.isin(labels[rest], rest_values[rest_counts >= 2])]
        val_size = val_fraction / (1.0 - test_fraction)
        _, val = train_test_split(
            rest, test_size=val_size, stratify=labels[rest], random_state=seed
        )
        split[val] = "val"
    except ValueError as err:  # e.g. fewer test examples than classes
        raise ValueError(
            f"cannot split {len(eligible)} examples of {len(values)} classes with "
            f"split.val_fraction={val_fraction}, split.test_fraction={test_fraction}: {err}. "
            "Raise the fractions or add data."
        ) from err
    for c, n in zip(values.tolist(), counts.tolist(), strict=True):
        missing = [s for s in ("val", "test") if n >= 3 and not np.any(split[labels == c] == s)]
        if missing:
            notes.append(f"class {c!r} has {n} examples: none in {'/'.join(missing)}")
    return split.astype(str), notes


def max_proportion_gap(table: pd.DataFrame) -> float:
    """Largest difference, over classes and pairs of splits, of a class's share of its split.

    Args:
        table: K x S counts (classes x splits).
    """
    shares = table / table.sum(axis=0).replace(0, np.nan)
    return float((shares.max(axis=1) - shares.min(axis=1)).max())


def read_clean_labels() -> pd.DataFrame:
    """The rows of data/clean/labels.csv that later stages use (action != dropped), sorted by id."""
    path = stage_paths("clean").data / "labels.csv"
    table = pd.read_csv(path, dtype={"id": str, "label": str, "action": str}, keep_default_na=False)
    for col in ("id", "label", "action"):
        if col not in table:
            raise ValueError(f"{path}: no '{col}' column; re-run the clean stage")
    table = table[table["action"] != "dropped"]
    return table[["id", "label"]].sort_values("id", kind="stable").reset_index(drop=True)


def main() -> None:
    cfg = load_params(STAGE)
    val = number(cfg, "val_fraction", 0.15, section=STAGE, lo=0.0, hi=1.0)
    test = number(cfg, "test_fraction", 0.2, section=STAGE, lo=0.0, hi=1.0)
    seed = number(cfg, "seed", 42, section=STAGE, integer=True)
    if val <= 0 or test <= 0 or val + test >= 1:
        raise ConfigError(
            f"params.yaml split.val_fraction={val} and split.test_fraction={test}: "
            "each must be > 0 and their sum < 1"
        )
    paths = stage_paths(STAGE)
    table = read_clean_labels()
    table["split"], notes = stratified_split(
        table["label"].to_numpy(), val_fraction=val, test_fraction=test, seed=seed
    )
    for note in notes:
        log.warning(note)

    classes = sorted(table["label"].unique())
    codes = {c: k for k, c in enumerate(classes)}
    counts = count_table(
        {s: table.loc[table["split"] == s, "label"].map(codes).to_numpy() for s in SPLITS},
        classes,
    )
    with atomic_path(paths.data) as out:
        out.mkdir()
        table.to_csv(out / "split.csv", index=False)
    with atomic_path(paths.plots) as out:
        out.mkdir()
        write_distribution_csvs(counts, out)
        shares = counts / counts.sum(axis=0)
        write_bar_png(shares, out / "class_distribution.png",
                      title="Class share per split", xlabel="fraction of the split")  # fmt: skip
    metrics = {
        "n": len(table),
        **{f"n_{s}": int(counts[s].sum()) for s in SPLITS},
        "fractions": {s: round(float(counts[s].sum() / len(table)), 4) for s in SPLITS},
        "max_class_share_gap": round(max_proportion_gap(counts), 4),
        "per_class": counts.to_dict(orient="index"),
        "warnings": notes,
    }
    write_json(paths.metrics, metrics)
    log.info("%s; max class-share gap %.4f", metrics["fractions"], metrics["max_class_share_gap"])


if __name__ == "__main__":
    main()
