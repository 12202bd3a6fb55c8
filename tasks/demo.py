"""Stage `demo`: write the embedded demo data set (edge_pipeline/quality/demo_data.py).

Reads `params.yaml[demo]`; writes data/demo/{images/, annotations.csv, truth.csv} and
metrics/demo.json.
"""

from __future__ import annotations

from edge_pipeline.artifacts.catalog import stage_paths
from edge_pipeline.config import load_section
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.io import atomic_path, write_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.quality.demo_data import make_demo

STAGE = "demo"


def main() -> None:
    log = setup_logging(STAGE)
    paths = stage_paths(STAGE)
    with atomic_path(paths.data) as tmp:
        metrics = make_demo(tmp, load_section(STAGE))
    write_json(paths.metrics, metrics)
    log.info(
        "wrote %s: %d images (+%d broken files), consensus noise %.1f%%",
        paths.data,
        metrics["images"],
        metrics["corrupt_files"],
        100 * metrics["consensus_noise_rate"],
    )


if __name__ == "__main__":
    run_stage(main)
