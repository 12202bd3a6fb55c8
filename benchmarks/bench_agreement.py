"""Agreement on 1,000,000 annotation rows: target <= 10 s and <= 4 GiB peak memory (issue 2).

Synthetic ratings: 250,000 images, 5 annotators of different reliability (95% .. 55% correct),
10 classes, 1,000,000 of the 1,250,000 (image, annotator) cells rated, so the number of ratings
per image varies as in real annotation work. Times the core (`measure_agreement` on integer
codes) and, separately, the whole stage (CSV in, every output written).
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

N_ITEMS, N_ANNOTATORS, N_CLASSES, N_ROWS = 250_000, 5, 10, 1_000_000
TARGET_S, TARGET_GIB = 10.0, 4.0


def synthetic(seed: int = 0):
    """(Ratings, true labels (N,)) of the benchmark's shape."""
    from edge_pipeline.quality.agreement_stats import Ratings

    rng = np.random.default_rng(seed)
    truth = rng.integers(0, N_CLASSES, N_ITEMS)
    cells = np.sort(rng.choice(N_ITEMS * N_ANNOTATORS, N_ROWS, replace=False))
    item, ann = cells // N_ANNOTATORS, cells % N_ANNOTATORS
    accuracy = np.linspace(0.95, 0.55, N_ANNOTATORS)[ann]
    label = np.where(rng.random(N_ROWS) < accuracy, truth[item], rng.integers(0, N_CLASSES, N_ROWS))
    r = Ratings(item, ann, label, N_ITEMS, N_ANNOTATORS, N_CLASSES, true_label=truth)
    return r, truth


def time_stage(r, truth) -> float:
    """Seconds for the whole stage's work on CSVs of the same ratings (read, measure, write every
    output; writing the input CSVs not timed)."""
    from edge_pipeline.artifacts.catalog import ANNOTATIONS, CLASSES, MANIFEST, StagePaths
    from edge_pipeline.config.quality import Agreement
    from edge_pipeline.core.io import write_json
    from edge_pipeline.quality.agreement import assess, read_inputs
    from edge_pipeline.quality.agreement_outputs import write_outputs

    classes = [f"class_{k}" for k in range(N_CLASSES)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ingest = root / "ingest"
        ingest.mkdir()
        ids = np.char.add("img/", np.arange(N_ITEMS).astype(str))
        names, cls = np.char.add("ann", np.arange(N_ANNOTATORS).astype(str)), np.asarray(classes)
        frame = {"id": ids[r.item], "annotator": names[r.annotator], "label": cls[r.label]}
        pd.DataFrame(frame).to_csv(ingest / ANNOTATIONS, index=False)
        manifest = {"id": ids, "path": ids, "label": "", "true_label": cls[truth]}
        pd.DataFrame(manifest).to_csv(ingest / MANIFEST, index=False)
        (ingest / CLASSES).write_text(json.dumps(classes))
        out = StagePaths(root / "d", root / "r", root / "m.json", root / "p")
        p = Agreement(policy="warn")
        start = time.perf_counter()
        manifest, annotations, names = read_inputs(ingest)
        tables, metrics = assess(manifest, annotations, names, p, ingest=ingest)
        ls = p.label_studio
        write_outputs(out, tables, metrics, classes=names, url_prefix=ls.url_prefix,
                      prefill=ls.prefill)  # fmt: skip
        write_json(out.metrics, metrics)
        return time.perf_counter() - start


def run() -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from edge_pipeline.config.quality import Agreement
    from edge_pipeline.quality.agreement_stats import measure_agreement

    r, truth = synthetic()
    classes = [f"class_{k}" for k in range(N_CLASSES)]
    start = time.perf_counter()
    res = measure_agreement(r, classes=classes, relabel_below=Agreement().relabel_below)
    core_s = time.perf_counter() - start

    tracemalloc.start()  # a second pass for memory, so tracing does not slow the timed one
    measure_agreement(r, classes=classes, relabel_below=Agreement().relabel_below)
    core_peak_gib = tracemalloc.get_traced_memory()[1] / 2**30
    tracemalloc.stop()

    stage_s = time_stage(r, truth)
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # KiB on Linux
    figures = {
        "rows": N_ROWS,
        "items": N_ITEMS,
        "annotators": N_ANNOTATORS,
        "classes": N_CLASSES,
        "core_s": round(core_s, 2),
        "core_ratio_to_target": round(core_s / TARGET_S, 3),
        "stage_s": round(stage_s, 2),
        "stage_ratio_to_target": round(stage_s / TARGET_S, 3),
        "core_peak_alloc_gib": round(core_peak_gib, 3),
        "process_peak_rss_gib": round(rss_gib, 3),
        "rss_ratio_to_target": round(rss_gib / TARGET_GIB, 3),
        "fleiss_kappa": round(res.fleiss.value, 4),
        "n_relabel": int(res.relabel.sum()),
    }
    print(
        f"agreement core on {N_ROWS:,} rows: {core_s:.2f} s ({core_s / TARGET_S:.2f} of the "
        f"{TARGET_S:.0f} s target), peak allocations {core_peak_gib:.2f} GiB"
    )
    print(f"whole stage (CSV in, all outputs written): {stage_s:.2f} s ({stage_s / TARGET_S:.2f})")
    print(f"process peak RSS {rss_gib:.2f} GiB ({rss_gib / TARGET_GIB:.2f} of {TARGET_GIB} GiB)")
    print(f"Fleiss' kappa {res.fleiss.value:.4f}, {figures['n_relabel']:,} images queued")
    return figures


if __name__ == "__main__":
    run()
