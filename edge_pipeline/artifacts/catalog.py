"""Every file handed from one stage to another: its stage and its name, stated once.

A stage writes `data/<stage>/<name>` (DVC-cached), `reports/<stage>/`, `metrics/<stage>.json` and
`plots/<stage>/`; the roots come from params.yaml `paths`, which dvc.yaml templates too.
Readers and writers of these files import the names from here; docs/architecture.md shows the
contracts (columns, dtypes, shapes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# ingest -> every later stage
IMAGES = "images.npy"  # uint8 (N, H, W, C), row i = manifest row i
MANIFEST = "manifest.csv"  # one row per kept image: id, path, sha256, size, mode, label, ...
CLASSES = "classes.json"  # the K class names; index k in arrays means classes[k]
ANNOTATIONS = "annotations.csv"  # id, annotator, label of the kept images
QUARANTINE = "quarantine.csv"  # files not kept, with the reason
REJECTED_ROWS = "rejected_rows.csv"  # annotation rows not kept, with the reason
DUPLICATE_PAIRS = "duplicate_pairs.csv"  # a, b, kind, distance, labels: behind manifest `group`
CHANGES = "changes.csv"  # path, change (new/changed/removed), sha256 before/now: vs the last run
# ingest -> ingest (the next night): data/<INGEST_CACHE>/, a persistent decode cache
INGEST_CACHE = "ingest_cache"
CACHE_FILES = "files.npz"  # path, size, mtime_ns, ctime_ns, inode, sha256 of the last run
CACHE_ENTRIES = "entries.npz"  # sha256, row, width, height, mode, dhash, picture, reason, detail
CACHE_PIXELS = "pixels.npy"  # uint8 (R, H, W, C): row `row` of entries.npz
CACHE_NEAR = "near.npz"  # pictures, a, b, distance: near pairs known (sha1 of the pixels)
CACHE_META = "meta.json"  # format, key (decode options + code), scan_ns
# demo -> ingest (inside the demo source folder)
SOURCE_ANNOTATIONS = "annotations.csv"  # image, annotator, label: raw ratings (ingest.annotations)
TRUTH = "truth.csv"  # image, label, flaw: known true labels (evaluation only)
SOURCE_REVIEWS = "reviews.json"  # Label Studio JSON export of the relabel queue (demo nights >= 2)
# agreement -> split, clean; clean -> resample, train, distill, ... (with split.csv)
LABELS = "labels.csv"  # id, label (+ agreement/clean columns)
RELABEL_QUEUE_JSON = "relabel_queue.json"  # Label Studio import (agreement; clean: test suspects)
RELABEL_QUEUE_CSV = "relabel_queue.csv"
LABEL_ISSUES = "label_issues.csv"
# split -> clean, resample, train, distill, ...
SPLIT = "split.csv"  # id, label, split (label: agreement's; the final label is clean's)
PREVIOUS_SPLIT = "previous_split.csv"  # the split.csv found before the last run (its reference)
# resample -> train, distill, prune, qat, export
TRAIN_SET = "train.npz"  # rows (into images.npy), x_synthetic, y, synthetic, ids
CLASS_WEIGHTS = "class_weights.json"
# train -> distill, prune, qat, benchmark
TEACHER_STATE = "teacher.pt"
TEACHER_ONNX = "teacher.onnx"
TEACHER_LOGITS = "logits_{split}.npy"  # float32 (N_split, K)
# every model-producing stage -> benchmark
MODELS = "models.json"  # name -> {file, runtime, dtype, ...}
META = "meta.json"
# distill -> prune, qat, export; prune -> qat
STUDENT = "student.keras"
BASELINE = "baseline.keras"  # the alpha = 1 student (report only)
STUDENT_PRUNED = "student_pruned.keras"
# export -> benchmark (through models.json)
ONNX_FP32 = "student_fp32.onnx"
ONNX_INT8 = "student_int8.onnx"
# benchmark -> register
CHOSEN = "chosen.json"
RESULTS = "results.json"
# register (reports/register, shown as its Prefect artifact)
DECISION_REPORT = "decision.md"

# the run summary after the flow (flows/summary.py, flows/history.py)
SUMMARY = "summary.md"  # <reports root>/summary.md: tonight's one page
NIGHTS = "history/nights.{ext}"  # <plots root>/history/nights.{csv,png}: one row per night
# plots shared by several stages
TEST_PREDICTIONS = "test_predictions.csv"
HISTORY = "history.csv"


@dataclass(frozen=True)
class StagePaths:
    """Where a stage writes. Roots come from `params.yaml[paths]`, which dvc.yaml also templates."""

    data: Path  # artifacts for later stages (DVC-cached)
    reports: Path  # human-readable reports (CSV, JSON, PNG)
    metrics: Path  # one metrics JSON (DVC metrics)
    plots: Path  # plot data for `dvc plots show`


def stage_paths(stage: str, params_path: Path | None = None) -> StagePaths:
    from edge_pipeline.config import load_section

    roots = load_section("paths", params_path)
    return StagePaths(
        data=Path(roots.data) / stage,
        reports=Path(roots.reports) / stage,
        metrics=Path(roots.metrics) / f"{stage}.json",
        plots=Path(roots.plots) / stage,
    )
