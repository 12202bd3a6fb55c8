"""Stage `split`: stratified train/val/test split of the cleaned labels; the test split is frozen
(method: edge_pipeline/quality/splitting.py).

Reads data/clean/labels.csv (rows with action `dropped` are excluded); writes data/split/split.csv
(`id,label,split`), metrics/split.json and plots/split/. Shapes: N examples, K classes.
"""

from __future__ import annotations

from edge_pipeline.artifacts.catalog import SPLIT, stage_paths
from edge_pipeline.config import load_section
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.io import atomic_path, write_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.core.plots import count_table, write_bar_png, write_distribution_csvs
from edge_pipeline.quality.label_files import read_clean_labels
from edge_pipeline.quality.splitting import SPLITS, split_metrics, stratified_split

STAGE = "split"


def main() -> None:
    log = setup_logging(STAGE)
    p = load_section(STAGE)
    paths = stage_paths(STAGE)
    table = read_clean_labels()
    table["split"], notes = stratified_split(
        table["label"].to_numpy(),
        val_fraction=p.val_fraction,
        test_fraction=p.test_fraction,
        seed=p.seed,
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
        table.to_csv(out / SPLIT, index=False)
    with atomic_path(paths.plots) as out:
        out.mkdir()
        write_distribution_csvs(counts, out)
        shares = counts / counts.sum(axis=0)
        write_bar_png(shares, out / "class_distribution.png",
                      title="Class share per split", xlabel="fraction of the split")  # fmt: skip
    metrics = split_metrics(counts, notes)
    write_json(paths.metrics, metrics)
    log.info("%s; max class-share gap %.4f", metrics["fractions"], metrics["max_class_share_gap"])


if __name__ == "__main__":
    run_stage(main)
