"""Stage `agreement`: how far the annotators agree, consensus labels, a relabel queue and a gate.

Reads data/ingest/{annotations.csv, manifest.csv, classes.json}; writes data/agreement/labels.csv
(`id,label,n_ratings,support`), reports/agreement/, metrics/agreement.json and plots/agreement/.
The statistics and their definitions live in edge_pipeline/quality/agreement_stats.py; the writers in
edge_pipeline/quality/agreement_outputs.py. Without annotation rows (ImageFolder source) agreement cannot be
measured: the stage records status "skipped" and passes the ImageFolder labels through.

Gate: Fleiss' kappa (all annotators at once, the figure that does not depend on which pair is
looked at) against `agreement.min_kappa`. policy fail: exit non-zero after writing every report;
warn: log a warning and go on; approval: go on but record gate "needs_approval" for the
orchestrator to pause on.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edge_pipeline.artifacts.catalog import StagePaths, stage_paths
from edge_pipeline.core.common import choice, load_params
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.core.io import write_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.quality import agreement_stats as st
from edge_pipeline.quality import agreement_tables as tb
from edge_pipeline.quality.agreement_outputs import write_outputs
from edge_pipeline.quality.agreement_tables import codes_of

STAGE = "agreement"
log = logging.getLogger(f"tasks.{STAGE}")


def read_inputs(ingest: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(manifest, annotations, classes) from the ingest stage's outputs, columns checked."""
    classes = json.loads((ingest / "classes.json").read_text())
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{ingest / 'classes.json'}: expected a JSON list of class-name strings")
    frames = {}
    for name, cols in [
        ("manifest.csv", ["id", "label"]),
        ("annotations.csv", ["id", "annotator", "label"]),
    ]:
        df = pd.read_csv(ingest / name, dtype=str, keep_default_na=False)
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(
                f"{ingest / name}: missing column(s) {missing}; re-run the ingest stage"
            )
        frames[name] = df
    for what, values in [("manifest.csv ids", frames["manifest.csv"]["id"]), ("classes", classes)]:
        if pd.Series(values).duplicated().any():
            raise ValueError(f"{ingest}: duplicate {what}; re-run the ingest stage")
    return frames["manifest.csv"], frames["annotations.csv"], classes


def encode(
    manifest: pd.DataFrame, annotations: pd.DataFrame, classes: list[str], *, ingest: Path
) -> tuple[st.Ratings, list[str], int]:
    """(Ratings, annotator names (A,), number of duplicate ratings dropped).

    A second rating of one image by one annotator replaces the first (the later row wins).
    """
    dup = annotations.duplicated(["id", "annotator"], keep="last")
    if dup.any():
        log.warning("%d duplicate (id, annotator) ratings: keeping the last of each", dup.sum())
        annotations = annotations[~dup]
    where = str(ingest / "annotations.csv")
    item = codes_of(annotations["id"], manifest["id"].tolist(), what="image id", where=where)
    label = codes_of(annotations["label"], classes, what="label", where=where)
    if (annotations["annotator"] == "").any():
        i = int(np.flatnonzero(annotations["annotator"] == "")[0])
        raise ValueError(f"{where}:{annotations.index[i] + 2}: empty annotator")
    annotator, names = pd.factorize(annotations["annotator"], sort=True)
    truth = manifest.get("true_label", pd.Series("", index=manifest.index))
    known = truth != ""
    true_label = np.full(len(manifest), -1, dtype=np.int64)
    true_label[known.to_numpy()] = codes_of(
        truth[known], classes, what="true_label", where=str(ingest / "manifest.csv")
    )
    ratings = st.Ratings(
        item=item,
        annotator=annotator.astype(np.int64),
        label=label,
        n_items=len(manifest),
        n_annotators=len(names),
        n_classes=len(classes),
        true_label=true_label,
    )
    return ratings, [str(n) for n in names], int(dup.sum())


def read_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validated `params.yaml[agreement]`."""
    opts = {
        "min_kappa": cfg.get("min_kappa", 0.6),
        "policy": choice(cfg, "policy", ["fail", "warn", "approval"], section=STAGE),
        "relabel_below": cfg.get("relabel_below", 0.6),
    }
    for key, lo in [("min_kappa", -1.0), ("relabel_below", 0.0)]:
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= 1.0:
            raise ConfigError(f"params.yaml agreement.{key}={v!r}: expected a number in [{lo}, 1]")
    ls = cfg.get("label_studio") or {}
    opts["url_prefix"] = str(ls.get("url_prefix", "/data/local-files/?d="))
    opts["prefill"] = bool(ls.get("prefill", True))
    return opts


def run(
    manifest: pd.DataFrame,
    annotations: pd.DataFrame,
    classes: list[str],
    opts: dict[str, Any],
    *,
    ingest: Path,
    out: StagePaths,
) -> dict[str, Any]:
    """Measure agreement (or skip it without annotations), write all outputs, return the metrics."""
    if len(annotations) == 0:
        reason = f"{ingest / 'annotations.csv'} has no rows (ImageFolder labels, one per image)"
        tables = tb.skipped_tables(manifest, classes=classes, where=str(ingest))
        metrics = tb.skipped_metrics(
            reason,
            opts,
            n_items=len(manifest),
            n_labelled=len(tables.labels),
            n_classes=len(classes),
        )
        log.warning("agreement skipped: %s", reason)
    else:
        r, names, n_dup = encode(manifest, annotations, classes, ingest=ingest)
        log.info("%d ratings by %d annotators on %d images", len(r.item), r.n_annotators, r.n_items)
        res = st.measure_agreement(r, classes=classes, relabel_below=opts["relabel_below"])
        tables = tb.measured_tables(manifest, r, res, names=names, classes=classes)
        metrics = tb.measured_metrics(r, res, opts, n_duplicates=n_dup)
    write_outputs(
        out,
        tables,
        metrics,
        classes=classes,
        url_prefix=opts["url_prefix"],
        prefill=opts["prefill"],
    )
    write_json(out.metrics, metrics)
    return metrics


def main() -> None:
    setup_logging(STAGE)
    opts = read_options(load_params(STAGE))
    ingest, out = stage_paths("ingest").data, stage_paths(STAGE)
    metrics = run(*read_inputs(ingest), opts, ingest=ingest, out=out)
    log.info("gate %s: %s", metrics["gate"], metrics["gate_reason"])
    if metrics["gate"] == "fail":
        sys.exit(
            f"agreement gate failed: {metrics['gate_reason']} (policy fail). Read "
            f"{out.reports / 'report.md'}, relabel the {metrics['n_relabel']} images in "
            f"{out.reports / 'relabel_queue.json'} (a Label Studio import), or set "
            "agreement.policy: warn to go on anyway."
        )
    if metrics["gate"] in ("warn", "needs_approval"):
        log.warning(
            "agreement below threshold: %s (policy %s)", metrics["gate_reason"], opts["policy"]
        )


if __name__ == "__main__":
    main()
