"""Stage `ingest`: decode every image of `ingest.source` safely, quarantine bad files.

Reads `params.yaml[ingest]` and the source tree (plus its annotations and truth CSVs); the work is
`edge_pipeline.quality.ingestion.ingest`. Writes data/ingest/{images.npy, manifest.csv,
annotations.csv, classes.json}, reports/ingest/{quarantine.csv, rejected_rows.csv,
duplicate_pairs.csv, changes.csv}, metrics/ingest.json and plots/ingest/ (contracts in
docs/architecture.md) and its decode cache data/ingest_cache/ (read first: files whose bytes were
decoded last night under the same options are not decoded again; `decode_cache`), then fails
(InputError, exit 65) when more rows or images were lost than params allow.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge_pipeline.artifacts.catalog import INGEST_CACHE, stage_paths
from edge_pipeline.config import load_section
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.quality import decode_cache
from edge_pipeline.quality.ingest_outputs import write_outputs
from edge_pipeline.quality.ingestion import check_losses, ingest

STAGE = "ingest"
log = logging.getLogger(f"tasks.{STAGE}")


def main() -> None:
    setup_logging(STAGE)
    p = load_section(STAGE)
    source = Path(p.source)
    annotations = source / p.annotations if p.annotations else None
    if annotations is not None and not annotations.is_file():
        raise ConfigError(
            f"params.yaml ingest.annotations={p.annotations!r}: {annotations} not found; "
            "set it to a CSV (image,annotator,label) relative to ingest.source, or to null for "
            "folder labels"
        )
    truth = source / p.truth if p.truth else None
    if truth is not None and not truth.is_file():
        log.warning("ingest.truth: %s not found; true labels stay unknown", truth)
    paths = stage_paths(STAGE)
    cache_dir = paths.data.parent / INGEST_CACHE
    cache = decode_cache.load(cache_dir, p, reuse=p.reuse_decoded)
    result = ingest(source, options=p, annotations=annotations, truth=truth, cache=cache)
    write_outputs(result, paths)
    decode_cache.save(result.cache, cache_dir, image_shape=(*p.image_size, p.channels))
    m = result.metrics
    log.info(
        "kept %d of %d images (%d classes), quarantined %s, rejected %d rows, %d duplicate "
        "groups (%d images), %.0f images/s",
        m["kept"],
        m["seen"],
        m["classes"],
        m["quarantined_by_reason"],
        m["rejected_rows"],
        m["duplicate_groups"],
        m["images_in_duplicate_groups"],
        m["images_per_s"],
    )
    log.info("since the last run (files): %s", m["incremental"])
    check_losses(m, p)


if __name__ == "__main__":
    run_stage(main)
