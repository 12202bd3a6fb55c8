"""Stage `clean`: find label issues with confident learning, confirm them with the annotators and
apply a policy (drop, relabel or flag) to the confirmed ones of the train and val splits only; the
method is edge_pipeline/quality/cleaning.py (docs/clean.md).

Runs after split, so no model-based decision trims the test split: test images, and labels a
reviewer settled, are never dropped or relabelled; suspected test label errors go to
reports/clean/relabel_queue.json (a Label Studio import, read back through agreement.reviews).
Reads data/ingest (images, manifest, classes, annotations), data/agreement/labels.csv and
data/split/split.csv; writes data/clean/labels.csv,
reports/clean/{label_issues.csv,report.md,relabel_queue.*}, metrics/clean.json and plots/clean/
(edge_pipeline/quality/clean_outputs.py).
Shapes: N examples, K classes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.artifacts.catalog import LABELS, SPLIT, stage_paths
from edge_pipeline.config import load_section
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.quality.annotator_evidence import read_ratings
from edge_pipeline.quality.clean_outputs import split_of, write_outputs
from edge_pipeline.quality.cleaning import clean_labels
from edge_pipeline.quality.label_files import read_agreement_labels

STAGE = "clean"


def main() -> None:
    log = setup_logging(STAGE)
    p = load_section(STAGE)
    classes = data.load_classes()
    manifest = data.load_manifest()
    table, given = read_agreement_labels(classes)
    source = str(stage_paths("agreement").data / LABELS)
    rows = data.rows_of(table["id"], manifest, source=source)
    split = split_of(table, stage_paths("split").data / SPLIT)
    reviewed = table.get("reviewed", pd.Series(False, index=table.index)).astype(str) == "True"
    protected = (split == "test") | reviewed.to_numpy()
    images = np.asarray(data.load_images()[rows])
    ratings, annotators = read_ratings(table["id"], classes)
    log.info("%d images, %d classes, %d annotators; %s; %d protected (test or reviewed)",
             len(images), len(np.unique(given)), len(annotators), p.model,
             protected.sum())  # fmt: skip
    c = clean_labels(
        images, given, p=p, classes=classes, ratings=ratings, annotators=annotators,
        protected=protected,
    )  # fmt: skip
    for note in c.notes:
        log.warning(note)

    names = np.array(classes, dtype=object)
    result = pd.DataFrame({
        "id": table["id"], "label": names[c.labels], "given_label": table["label"],
        "is_issue": c.is_issue, "confirmed": c.confirmed, "action": c.actions,
        "label_quality": c.quality.astype(np.float64).round(6),
        "split": split, "reviewed": reviewed.to_numpy(),
        "suggested_label": names[c.suggested], "target_label": names[c.target],
        "true_label": manifest["true_label"].to_numpy(dtype=str)[rows],
        "path": manifest.get("path", manifest["id"]).to_numpy(dtype=str)[rows],
    })  # fmt: skip
    settings = {
        "policy": p.policy, "confirm": p.confirm, "model": p.model, "folds_used": c.folds_used,
        "filter_by": p.filter_by, "seconds": round(c.seconds, 2),
        "oof_accuracy": round(float(np.mean(c.suggested == given)), 4),
        "annotator_quality": c.annotator_quality,
    }  # fmt: skip
    metrics = write_outputs(
        result, classes, settings=settings, notes=c.notes,
        label_studio=load_section("agreement").label_studio,
    )  # fmt: skip
    f1 = metrics.get("f1", "n/a (no true labels)")
    log.info("%d issues, policy %s, in %.1fs; F1 %s; test labels %s", c.is_issue.sum(), p.policy,
             c.seconds, f1, metrics["test_labels"])  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
