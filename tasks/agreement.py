"""Stage `agreement`: how far the annotators agree, consensus labels, a relabel queue and a gate.

Reads data/ingest/{annotations.csv, manifest.csv, classes.json}; writes data/agreement/labels.csv
(`id,label,n_ratings,support`), reports/agreement/, metrics/agreement.json and plots/agreement/.
The work is edge_pipeline/quality/agreement.py (statistics and their definitions:
agreement_stats.py; writers: agreement_outputs.py).

Gate: Fleiss' kappa (all annotators at once, the figure that does not depend on which pair is
looked at) against `agreement.min_kappa`. policy fail: exit non-zero after writing every report;
warn: log a warning and go on; approval: go on but record gate "needs_approval" for the
orchestrator to pause on.
"""

from __future__ import annotations

import logging
import sys

from edge_pipeline.artifacts.catalog import RELABEL_QUEUE_JSON, stage_paths
from edge_pipeline.config import load_section
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.io import write_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.quality.agreement import assess, read_inputs
from edge_pipeline.quality.agreement_outputs import write_outputs

STAGE = "agreement"
log = logging.getLogger(f"tasks.{STAGE}")


def main() -> None:
    setup_logging(STAGE)
    p = load_section(STAGE)
    ingest, out = stage_paths("ingest").data, stage_paths(STAGE)
    manifest, annotations, classes = read_inputs(ingest)
    tables, metrics = assess(manifest, annotations, classes, p, ingest=ingest)
    write_outputs(out, tables, metrics, classes=classes,
                  url_prefix=p.label_studio.url_prefix, prefill=p.label_studio.prefill)  # fmt: skip
    write_json(out.metrics, metrics)
    log.info("gate %s: %s", metrics["gate"], metrics["gate_reason"])
    if metrics["gate"] == "fail":
        sys.exit(
            f"agreement gate failed: {metrics['gate_reason']} (policy fail). Read "
            f"{out.reports / 'report.md'}, relabel the {metrics['n_relabel']} images in "
            f"{out.reports / RELABEL_QUEUE_JSON} (a Label Studio import), or set "
            "agreement.policy: warn to go on anyway."
        )
    if metrics["gate"] in ("warn", "needs_approval"):
        log.warning("agreement below threshold: %s (policy %s)", metrics["gate_reason"], p.policy)


if __name__ == "__main__":
    run_stage(main)
