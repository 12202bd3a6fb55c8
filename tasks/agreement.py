"""Stage `agreement`: how far the annotators agree, consensus labels, a relabel queue and a gate.

Reads data/ingest/{annotations.csv, manifest.csv, classes.json} and the reviewers' Label Studio
export `<ingest.source>/<agreement.reviews>` when there is one; writes data/agreement/labels.csv
(`id,label,n_ratings,support,reviewed,reviewer`), reports/agreement/, metrics/agreement.json and
plots/agreement/. The work is edge_pipeline/quality/agreement.py (statistics and their definitions:
agreement_stats.py; the relabel round trip: reviews.py; writers: agreement_outputs.py).

Gate: Fleiss' kappa (all annotators at once, the figure that does not depend on which pair is
looked at) against `agreement.min_kappa`. policy fail: exit EXIT_INPUT (65: a failed data-quality
gate is permanent for that data, the flow does not retry it) after writing every report; warn: log
a warning and go on; approval: go on but record gate "needs_approval" for the orchestrator to
pause on.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge_pipeline.artifacts.catalog import RELABEL_QUEUE_JSON, stage_paths
from edge_pipeline.config import load_section
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.errors import InputError
from edge_pipeline.core.io import write_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.quality.agreement import assess, read_inputs
from edge_pipeline.quality.agreement_outputs import FROM_NAME, write_outputs
from edge_pipeline.quality.reviews import review_round

STAGE = "agreement"
log = logging.getLogger(f"tasks.{STAGE}")


def main() -> None:
    setup_logging(STAGE)
    p = load_section(STAGE)
    ingest, out = stage_paths("ingest").data, stage_paths(STAGE)
    manifest, annotations, classes = read_inputs(ingest)
    tables, metrics = assess(manifest, annotations, classes, p, ingest=ingest)
    reviews = Path(load_section("ingest").source) / p.reviews if p.reviews else None
    tables, settled = review_round(
        tables, reviews, manifest=manifest, classes=classes, from_name=FROM_NAME
    )
    metrics.update(settled, n_relabel=len(tables.queue))
    for note in settled["review_warnings"]:
        log.warning(note)
    write_outputs(out, tables, metrics, classes=classes,
                  url_prefix=p.label_studio.url_prefix, prefill=p.label_studio.prefill)  # fmt: skip
    write_json(out.metrics, metrics)
    log.info("gate %s: %s", metrics["gate"], metrics["gate_reason"])
    if metrics["gate"] == "fail":
        raise InputError(
            f"agreement gate failed: {metrics['gate_reason']} (policy fail). Read "
            f"{out.reports / 'report.md'}, relabel the {metrics['n_relabel']} images in "
            f"{out.reports / RELABEL_QUEUE_JSON} (a Label Studio import), or set "
            "agreement.policy: warn to go on anyway."
        )
    if metrics["gate"] in ("warn", "needs_approval"):
        log.warning("agreement below threshold: %s (policy %s)", metrics["gate_reason"], p.policy)


if __name__ == "__main__":
    run_stage(main)
