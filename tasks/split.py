"""Stage `split`: train/val/test as a function of each image (hash buckets of its content key),
before any model-based decision; the method is edge_pipeline/quality/splitting.py.

Reads data/agreement/labels.csv (the consensus or reviewed labels) and data/ingest/manifest.csv
(sha256, group); writes data/split/split.csv (`id,label,split`), data/split/previous_split.csv
(the assignment found there before this run, the report's reference; DVC `persist: true`),
metrics/split.json and plots/split/. Shapes: N images, K classes.
"""

from __future__ import annotations

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.artifacts.catalog import MANIFEST, PREVIOUS_SPLIT, SPLIT, stage_paths
from edge_pipeline.config import load_section
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.io import atomic_path, write_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.core.plots import count_table, write_bar_png, write_distribution_csvs
from edge_pipeline.quality.label_files import read_agreement_labels
from edge_pipeline.quality.splitting import (
    SPLITS,
    class_shares,
    compare_with_previous,
    hash_split,
    split_keys,
    split_metrics,
)

STAGE = "split"


def main() -> None:
    log = setup_logging(STAGE)
    p = load_section(STAGE)
    paths = stage_paths(STAGE)
    classes = data.load_classes()
    manifest = data.load_manifest()
    table, _ = read_agreement_labels(classes)
    table = table[["id", "label"]].sort_values("id", kind="stable").reset_index(drop=True)
    keys = split_keys(manifest, where=str(stage_paths("ingest").data / MANIFEST))
    table["split"] = hash_split(
        keys.reindex(table["id"]).to_numpy(),
        val_fraction=p.val_fraction, test_fraction=p.test_fraction, seed=p.seed,
    )  # fmt: skip
    previous = data.read_split_assignment(paths.data / SPLIT)

    present = sorted(table["label"].unique(), key=classes.index)
    codes = {c: k for k, c in enumerate(present)}
    counts = count_table(
        {s: table.loc[table["split"] == s, "label"].map(codes).to_numpy() for s in SPLITS},
        present,
    )
    targets = {"train": 1 - p.val_fraction - p.test_fraction, "val": p.val_fraction,
               "test": p.test_fraction}  # fmt: skip
    shares, notes = class_shares(counts, fractions=targets, sigmas=p.tolerance_sigmas)
    history = compare_with_previous(table, previous)
    if history["moved"]:
        notes.append(
            f"{history['moved']} surviving images changed split ({history['moved_by']}): "
            "split.seed or split.test_fraction/val_fraction changed since the previous run"
        )
    for note in notes:
        log.warning(note)
    with atomic_path(paths.data) as out:
        out.mkdir()
        table.to_csv(out / SPLIT, index=False)
        if previous is not None:
            previous.to_csv(out / PREVIOUS_SPLIT, index=False)
    with atomic_path(paths.plots) as out:
        out.mkdir()
        write_distribution_csvs(counts, out)
        write_bar_png(counts / counts.sum(axis=0), out / "class_distribution.png",
                      title="Class share per split", xlabel="fraction of the split")  # fmt: skip
    metrics = split_metrics(counts, notes, shares=shares, history=history)
    write_json(paths.metrics, metrics)
    log.info("%s; against the previous split: %s", metrics["fractions"],
             {k: v for k, v in history.items() if k != "moved_ids"})  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
