"""Ingest: decode every image of a source tree safely, quarantine bad files, check label rows.

Labels come from an annotations CSV (`image,annotator,label`, image relative to the source root,
several rows per image) or, without one, from the folder holding each file (ImageFolder:
`root/<class>/<file>`; the innermost folder names the class); `class_rules` decides which labels
are classes. Each file is read by `images.read_checked` (special files and links out of the root
quarantined before anything opens them) and decoded by `images.decode` (allow-listed formats,
size and memory guards, EXIF orientation, mode conversion, resize), or quarantined with one
reason. Byte-identical files (same sha256) are kept once when their labels agree (for a CSV: the
majority label of their rows, ties -> smallest name) and all quarantined as `duplicate` when they
conflict; images with the same or nearly the same pixels share a manifest `group`
(`duplicates`). `check_losses` fails a run that lost more than the allowed share of rows or
images. Shapes: M files seen, N kept, K classes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edge_pipeline.config.quality import Ingest
from edge_pipeline.core.errors import ConfigError, InputError
from edge_pipeline.quality.class_rules import annotation_classes, folder_classes
from edge_pipeline.quality.decode_cache import DecodeCache, decode_key
from edge_pipeline.quality.decoding import decode_all
from edge_pipeline.quality.duplicates import content_groups, group_metrics, resolve_byte_copies
from edge_pipeline.quality.images import REASONS, extensions
from edge_pipeline.quality.sources import (
    ROW_REASONS,
    majority,
    read_annotations,
    read_truth,
    scan_images,
)

MANIFEST_COLUMNS = [
    "id",
    "path",
    "sha256",
    "bytes",
    "width",
    "height",
    "mode",
    "label",
    "true_label",
    "group",  # id of the first image with the same or nearly the same pixels (itself if none)
]
log = logging.getLogger("tasks.ingest")


@dataclass
class IngestResult:
    """N kept images, K classes."""

    images: np.ndarray  # uint8 (N, H, W, C), row i = manifest row i
    manifest: pd.DataFrame  # N rows, MANIFEST_COLUMNS
    annotations: pd.DataFrame  # id, annotator, label: the valid rows of kept images
    classes: list[str]  # K sorted class names
    quarantine: pd.DataFrame  # path, reason, detail: one row per labelled file not kept
    rejected: pd.DataFrame  # line, image, reason: annotation rows not used
    duplicate_pairs: pd.DataFrame  # duplicates.PAIR_COLUMNS: the pairs behind each group
    changes: pd.DataFrame  # DecodeCache.changes(): files new, changed, removed since the last run
    cache: DecodeCache  # this run's file index and decode results, for the next run
    metrics: dict[str, Any]


def ingest(
    source: str | Path,
    *,
    options: Ingest,
    annotations: str | Path | None = None,
    truth: str | Path | None = None,
    cache: DecodeCache | None = None,
) -> IngestResult:
    """Ingest the images under `source` (see the module docstring).

    Args:
        source: root directory of the images.
        options: `params.yaml[ingest]`: how to decode (H x W x C, formats, guards, filter).
        annotations: CSV `image,annotator,label` (image relative to `source`); None = ImageFolder.
        truth: optional CSV `image,label` of known true labels (evaluation only; may not exist).
        cache: the last run's decode cache (`decode_cache.load`); None = decode every file.

    Returns:
        IngestResult with N kept images (uint8 (N, H, W, C)) and K classes.

    Raises:
        ConfigError: `source` is not a directory.
        InputError: a malformed CSV (naming the file and the expected header), or nothing usable.
    """
    root = Path(source)
    if not root.is_dir():
        raise ConfigError(
            f"params.yaml ingest.source={str(source)!r} is not a directory; set it to your images"
        )
    files, other = scan_images(root, extensions(options.formats))
    rows: list[tuple[int, str, str, str]] = []
    rejected: list[tuple[int, str, str]] = []
    stray: dict[str, str] = {}
    if annotations is not None:
        rows, rejected = read_annotations(Path(annotations), root)
        rows, unknown, not_class = annotation_classes(rows, options)
        if unknown:
            log.warning(
                "%d annotation rows have a label that is no class (rejected as unknown_label): %s",
                len(unknown),
                not_class,
            )
        rejected = sorted(rejected + unknown)
        ratings: dict[str, list[str]] = {}
        for _, rel, _, label in rows:
            ratings.setdefault(rel, []).append(label)
        label_of = {rel: majority(labels) for rel, labels in ratings.items()}
        unlabeled = len(set(files) - set(ratings))
    else:
        label_of, stray = folder_classes(files, options)
        unlabeled = len(files) - len(label_of) - len(stray)
    if unlabeled:
        log.warning("%d image files under %s have no label; left out", unlabeled, root)

    ids = sorted(label_of)
    start, cpu_start = time.perf_counter(), time.process_time()
    if cache is None:
        cache = DecodeCache(key=decode_key(options), trust_stat=False)
    run = decode_all(root, ids, options, cache)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    merged = resolve_byte_copies(ids, label_of, run.bad, run.copies)
    kept = np.flatnonzero(run.usable())
    quarantine = pd.DataFrame(
        [(ids[i], *run.bad[i]) for i in sorted(run.bad)]
        + [(rel, "stray_folder", why) for rel, why in sorted(stray.items())],
        columns=["path", "reason", "detail"],
    )
    by_reason = dict.fromkeys(REASONS, 0) | quarantine["reason"].value_counts().to_dict()
    rejected_df = pd.DataFrame(rejected, columns=["line", "image", "reason"])
    rejected_by = dict.fromkeys(ROW_REASONS, 0) | rejected_df["reason"].value_counts().to_dict()
    if not len(kept):
        raise InputError(
            f"ingest: nothing usable in {root}: {len(ids)} labelled image files, quarantined "
            f"{by_reason}, {len(rejected)} annotation rows rejected {rejected_by}, {other} other "
            f"files; check ingest.source, ingest.annotations and ingest.formats "
            f"(first problems: {quarantine.head(3).values.tolist() or rejected[:3]})"
        )

    true_of = read_truth(Path(truth), root) if truth is not None else {}
    kept_ids = [ids[i] for i in kept.tolist()]
    e, k = run.entries, run.entry[kept]  # k: the decode result of each kept image
    at = "" if root == Path() else f"{root.as_posix()}/"  # = (root / rel).as_posix(), faster
    labels = [label_of[r] for r in kept_ids]
    true_labels = [true_of.get(r, "") for r in kept_ids]
    manifest = pd.DataFrame(
        {
            "id": kept_ids,
            "path": [at + rel for rel in kept_ids],
            "sha256": e.sha256[k].astype(str).tolist(),
            "bytes": run.size[kept],
            "width": e.width[k],
            "height": e.height[k],
            "mode": e.mode[k].tolist(),
            "label": labels if annotations is None else [""] * len(kept_ids),
            "true_label": true_labels,
        }
    )
    images = e.pixels[e.row[k]]
    groups, pairs, cache.near = content_groups(
        kept_ids,
        images,
        labels,
        hashes=e.dhash[k],
        pictures=e.picture[k],
        max_bits=options.near_duplicate_bits,
        max_mad=options.near_duplicate_mad,
        memo=cache.old_near,
    )
    manifest["group"] = groups
    kept_set = set(kept_ids)
    ann = pd.DataFrame(
        [r[1:] for r in rows if r[1] in kept_set], columns=["id", "annotator", "label"]
    )
    given = {r[3] for r in rows if r[1] in kept_set} if annotations is not None else set(labels)
    classes = sorted(given | (set(true_labels) - {""}))
    found = len(set(files) | set(ids))
    changes = cache.changes()
    lost = len(quarantine) - merged + unlabeled  # image files whose content is not kept
    metrics = {
        "labels": "annotations" if annotations is not None else "imagefolder",
        "seen": len(ids),
        "kept": len(kept_ids),
        "quarantined": len(quarantine),
        "quarantined_by_reason": by_reason,
        "duplicates_kept_once": merged,
        "rejected_rows": len(rejected),
        "rejected_by_reason": rejected_by,
        "annotation_rows": len(ann),
        "rows_read": len(rows) + len(rejected),
        "dropped_rows_fraction": round(len(rejected) / max(len(rows) + len(rejected), 1), 4),
        "unlabeled_files": unlabeled,
        "image_files": found,
        "lost_images": lost,
        "lost_images_fraction": round(lost / max(found, 1), 4),
        "other_files": other,
        "classes": len(classes),
        **group_metrics(groups, pairs),
        # files against the last run's (new, changed, removed, unchanged), how many were not
        # read again, decoded, or had their decode result reused from data/ingest_cache
        "incremental": cache.counts(changes),
        "decode_s": round(seconds, 3),
        "images_per_s": round(len(ids) / seconds, 1) if seconds > 0 else 0.0,
        # CPU time of this process: the rate without other load on the machine
        "images_per_cpu_s": round(len(ids) / cpu, 1) if cpu > 0 else 0.0,
    }
    return IngestResult(
        images,
        manifest,
        ann,
        classes,
        quarantine,
        rejected_df,
        pairs,
        changes,
        cache,
        metrics,
    )


def check_losses(metrics: dict[str, Any], opts: Ingest) -> None:
    """InputError (with the counts) when a run lost more annotation rows or image files than
    `ingest.max_dropped_rows_fraction` / `max_quarantined_fraction` allow."""
    problems = []
    if metrics["dropped_rows_fraction"] > opts.max_dropped_rows_fraction:
        problems.append(
            f"rejected {metrics['rejected_rows']} of {metrics['rows_read']} annotation rows "
            f"({metrics['dropped_rows_fraction']:.1%} > ingest.max_dropped_rows_fraction="
            f"{opts.max_dropped_rows_fraction}): {metrics['rejected_by_reason']}"
        )
    if metrics["lost_images_fraction"] > opts.max_quarantined_fraction:
        problems.append(
            f"kept no content of {metrics['lost_images']} of {metrics['image_files']} image files "
            f"({metrics['lost_images_fraction']:.1%} > ingest.max_quarantined_fraction="
            f"{opts.max_quarantined_fraction}): quarantined {metrics['quarantined_by_reason']}, "
            f"unlabelled {metrics['unlabeled_files']}"
        )
    if problems:
        raise InputError(
            "ingest: " + "; ".join(problems) + "; see reports/ingest/ (quarantine.csv, "
            "rejected_rows.csv), fix the source, or raise the limit in params.yaml"
        )


def class_distribution(result: IngestResult) -> pd.DataFrame:
    """Kept images per class (K rows): `given` (folder label or majority of the ratings), `true`."""
    if result.metrics["labels"] == "annotations":
        given = result.annotations.groupby("id", sort=False)["label"].agg(
            lambda s: majority(list(s))
        )
    else:
        given = result.manifest.set_index("id")["label"]
    table = pd.DataFrame(index=pd.Index(result.classes, name="class"))
    table["given"] = given.value_counts().reindex(table.index, fill_value=0)
    known = result.manifest["true_label"][result.manifest["true_label"] != ""]
    if len(known):
        table["true"] = known.value_counts().reindex(table.index, fill_value=0)
    return table.astype(int)
