"""Stage `resample`: rebalance the train split (never val or test); class weights
(method: edge_pipeline/quality/resampling.py; see docs/resample.md).

Reads data/ingest and data/split; writes data/resample/{train.npz,class_weights.json},
metrics/resample.json and plots/resample/. Shapes: N examples, K classes. train.npz holds row
indices into data/ingest/images.npy for the real rows and pixels only for the synthetic ones
(`edge_pipeline.artifacts.datasets.save_train_set`).
"""

from __future__ import annotations

import numpy as np

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.artifacts.catalog import CLASS_WEIGHTS, TRAIN_SET, stage_paths
from edge_pipeline.config import load_section
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.core.io import atomic_path, write_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.core.plots import count_table, write_bar_png, write_distribution_csvs
from edge_pipeline.quality.resampling import balanced_class_weights, parse_strategy, resample

STAGE = "resample"


def main() -> None:
    log = setup_logging(STAGE)
    p = load_section(STAGE)
    classes = data.load_classes()
    strategy = parse_strategy(p.sampling_strategy, classes)
    rows, y, ids = data.load_split_rows("train")
    x = data.load_images()[rows]
    log.info("train split: %d examples of %s; method %s", len(y), x.shape[1:], p.method)
    try:
        x_out, y_out, synthetic, source, k_used, notes = resample(
            x, y, method=p.method, sampling_strategy=strategy, k_neighbors=p.k_neighbors,
            seed=p.seed, names=classes,
        )  # fmt: skip
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
    rows_out = np.where(synthetic, -1, rows[np.maximum(source, 0)])
    with atomic_path(paths.data) as out:
        out.mkdir()
        data.save_train_set(
            out / TRAIN_SET, rows=rows_out, x_synthetic=x_out[synthetic], y=y_out,
            synthetic=synthetic, ids=ids_out,
        )  # fmt: skip
        write_json(out / CLASS_WEIGHTS, named_weights)
    counts = count_table({"before": y, "after": y_out, "synthetic": y_out[synthetic]}, classes)
    with atomic_path(paths.plots) as out:
        out.mkdir()
        write_distribution_csvs(counts[["before", "after"]], out)
        title = f"Train examples per class ({p.method})"
        write_bar_png(counts[["before", "after"]], out / "class_distribution.png",
                      title=title, xlabel="examples")  # fmt: skip
    write_json(paths.metrics, {
        "method": p.method, "n_before": len(y), "n_after": len(y_out),
        "n_synthetic": int(synthetic.sum()), "k_neighbors": p.k_neighbors,
        "k_used": {classes[c]: (kk if kk else "random_over") for c, kk in k_used.items()},
        "per_class": counts.to_dict(orient="index"),
        "class_weights": named_weights,
        "warnings": notes,
    })  # fmt: skip
    log.info(
        "%s: %d -> %d train examples (%d synthetic)", p.method, len(y), len(y_out), synthetic.sum()
    )


if __name__ == "__main__":
    run_stage(main)
