"""Outputs of the ingest stage: data for every later stage, the quarantine reports, the plot.

Every directory is written atomically (built in a temporary sibling, then renamed).
"""

from __future__ import annotations

import json

import numpy as np

from edge_pipeline.artifacts import catalog as files
from edge_pipeline.artifacts.catalog import StagePaths
from edge_pipeline.core.io import atomic_path, write_json
from edge_pipeline.core.plots import write_bar_png
from edge_pipeline.quality.ingestion import IngestResult, class_distribution


def write_outputs(result: IngestResult, paths: StagePaths) -> None:
    """Write data/, reports/, plots/ and metrics of the stage, each atomically."""
    with atomic_path(paths.data) as out:
        out.mkdir()
        np.save(out / files.IMAGES, result.images)
        result.manifest.to_csv(out / files.MANIFEST, index=False)
        result.annotations.to_csv(out / files.ANNOTATIONS, index=False)
        (out / files.CLASSES).write_text(json.dumps(result.classes) + "\n")
    with atomic_path(paths.reports) as out:
        out.mkdir()
        result.quarantine.to_csv(out / files.QUARANTINE, index=False)
        result.rejected.to_csv(out / files.REJECTED_ROWS, index=False)
        result.duplicate_pairs.to_csv(out / files.DUPLICATE_PAIRS, index=False)
        result.changes.to_csv(out / files.CHANGES, index=False)
    table = class_distribution(result)
    with atomic_path(paths.plots) as out:
        out.mkdir()
        table.to_csv(out / "class_distribution.csv")
        write_bar_png(
            table, out / "class_distribution.png", title="images per class", xlabel="images"
        )
    write_json(paths.metrics, result.metrics)
