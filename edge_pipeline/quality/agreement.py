"""The agreement stage's work: read ingest's label files, encode the ratings, measure agreement.

Reads data/ingest/{annotations.csv, manifest.csv, classes.json} (`read_inputs`), turns them into
integer-coded `Ratings` (`encode`) and runs the statistics of agreement_stats.py into the tables
and metrics of agreement_tables.py (`assess`); agreement_outputs.py writes them. Without annotation
rows (ImageFolder source) agreement cannot be measured: the run is "skipped" and passes the
ImageFolder labels through. Shapes: R ratings of N images by A annotators into K classes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edge_pipeline.artifacts.catalog import ANNOTATIONS, CLASSES, MANIFEST
from edge_pipeline.config.quality import Agreement
from edge_pipeline.core.errors import InputError
from edge_pipeline.quality import agreement_stats as st
from edge_pipeline.quality import agreement_tables as tb
from edge_pipeline.quality.agreement_stats import Ratings
from edge_pipeline.quality.agreement_tables import codes_of

log = logging.getLogger("tasks.agreement")


def read_inputs(ingest: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(manifest, annotations, classes) from the ingest stage's outputs, columns checked."""
    classes = json.loads((ingest / CLASSES).read_text())
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise InputError(f"{ingest / CLASSES}: expected a JSON list of class-name strings")
    frames = {}
    for name, cols in [
        (MANIFEST, ["id", "label"]),
        (ANNOTATIONS, ["id", "annotator", "label"]),
    ]:
        df = pd.read_csv(ingest / name, dtype=str, keep_default_na=False)
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise InputError(
                f"{ingest / name}: missing column(s) {missing}; re-run the ingest stage"
            )
        frames[name] = df
    for what, values in [(f"{MANIFEST} ids", frames[MANIFEST]["id"]), ("classes", classes)]:
        if pd.Series(values).duplicated().any():
            raise InputError(f"{ingest}: duplicate {what}; re-run the ingest stage")
    return frames[MANIFEST], frames[ANNOTATIONS], classes


def encode(
    manifest: pd.DataFrame, annotations: pd.DataFrame, classes: list[str], *, ingest: Path
) -> tuple[Ratings, list[str], int]:
    """(Ratings, annotator names (A,), number of duplicate ratings dropped).

    A second rating of one image by one annotator replaces the first (the later row wins).
    """
    dup = annotations.duplicated(["id", "annotator"], keep="last")
    if dup.any():
        log.warning("%d duplicate (id, annotator) ratings: keeping the last of each", dup.sum())
        annotations = annotations[~dup]
    where = str(ingest / ANNOTATIONS)
    item = codes_of(annotations["id"], manifest["id"].tolist(), what="image id", where=where)
    label = codes_of(annotations["label"], classes, what="label", where=where)
    if (annotations["annotator"] == "").any():
        i = int(np.flatnonzero(annotations["annotator"] == "")[0])
        raise InputError(f"{where}:{annotations.index[i] + 2}: empty annotator")
    annotator, names = pd.factorize(annotations["annotator"], sort=True)
    truth = manifest.get("true_label", pd.Series("", index=manifest.index))
    known = truth != ""
    true_label = np.full(len(manifest), -1, dtype=np.int64)
    true_label[known.to_numpy()] = codes_of(
        truth[known], classes, what="true_label", where=str(ingest / MANIFEST)
    )
    ratings = Ratings(
        item=item,
        annotator=annotator.astype(np.int64),
        label=label,
        n_items=len(manifest),
        n_annotators=len(names),
        n_classes=len(classes),
        true_label=true_label,
    )
    return ratings, [str(n) for n in names], int(dup.sum())


def assess(
    manifest: pd.DataFrame,
    annotations: pd.DataFrame,
    classes: list[str],
    p: Agreement,
    *,
    ingest: Path,
) -> tuple[tb.Tables, dict[str, Any]]:
    """Measure agreement (or skip it without annotations): the tables to write and the metrics.

    Args:
        manifest, annotations, classes: as `read_inputs` returns them (N images, K classes).
        p: `params.yaml[agreement]`; ingest: the directory they were read from (for messages).
    """
    if len(annotations) == 0:
        reason = f"{ingest / ANNOTATIONS} has no rows (ImageFolder labels, one per image)"
        tables = tb.skipped_tables(manifest, classes=classes, where=str(ingest))
        metrics = tb.skipped_metrics(
            reason,
            p,
            n_items=len(manifest),
            n_labelled=len(tables.labels),
            n_classes=len(classes),
        )
        log.warning("agreement skipped: %s", reason)
    else:
        r, names, n_dup = encode(manifest, annotations, classes, ingest=ingest)
        log.info("%d ratings by %d annotators on %d images", len(r.item), r.n_annotators, r.n_items)
        res = st.measure_agreement(r, classes=classes, relabel_below=p.relabel_below)
        tables = tb.measured_tables(manifest, r, res, names=names, classes=classes)
        metrics = tb.measured_metrics(r, res, p, n_duplicates=n_dup)
    return tables, metrics
