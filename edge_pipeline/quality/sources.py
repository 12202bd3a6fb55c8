"""Reading a source tree for ingest: image files, annotation rows (with their CSV line numbers) and
known true labels. Paths in CSVs are relative to the source root; rows naming absolute paths, paths
that escape the root (`..` or a symlink out) or missing files are rejected, never read.
"""

from __future__ import annotations

import csv
import os
import posixpath
import re
from collections import Counter
from pathlib import Path

from edge_pipeline.core.errors import InputError

ANNOTATION_HEADER = ("image", "annotator", "label")
TRUTH_HEADER = ("image", "label")
ROW_REASONS = ("empty_field", "absolute_path", "escapes_root", "missing_file", "repeat_rating")


def read_csv_rows(path: Path, header: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV that has (at least) the columns of `header`."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in header if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(
                f"{path}: header {reader.fieldnames} lacks column(s) {missing}; "
                f"expected a first line of `{','.join(header)}`"
            )
        return [(reader.line_num, row) for row in reader]


def relative_id(image: str, root: Path) -> tuple[str, str]:
    """(id, '') for a path that names a file inside `root`, else ('', reject reason)."""
    path = image.strip().replace("\\", "/")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "", "absolute_path"
    rel = posixpath.normpath(path)
    if rel == ".." or rel.startswith("../"):
        return "", "escapes_root"
    real = (root / rel).resolve()
    if not real.is_relative_to(root.resolve()):  # a symlink pointing outside
        return "", "escapes_root"
    return (rel, "") if real.is_file() else ("", "missing_file")


def read_annotations(
    path: Path, root: Path
) -> tuple[list[tuple[str, str, str]], list[tuple[int, str, str]]]:
    """Valid (id, annotator, label) rows, and rejected (line, image, reason) rows of ROW_REASONS."""
    valid, rejected, seen = [], [], set()
    checked: dict[str, tuple[str, str]] = {}
    for line, row in read_csv_rows(path, ANNOTATION_HEADER):
        image, annotator, label = ((row.get(c) or "").strip() for c in ANNOTATION_HEADER)
        if not (image and annotator and label):
            rejected.append((line, image, "empty_field"))
            continue
        if image not in checked:
            checked[image] = relative_id(image, root)
        rel, reason = checked[image]
        if not reason and (rel, annotator) in seen:
            reason = "repeat_rating"
        if reason:
            rejected.append((line, image, reason))
            continue
        seen.add((rel, annotator))
        valid.append((rel, annotator, label))
    return valid, rejected


def scan_images(root: Path, extensions: frozenset[str]) -> tuple[list[str], int]:
    """Sorted ids (posix paths relative to `root`) of files with an image extension, skipping
    hidden files and folders; and the number of other files."""
    ids, other = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in extensions:
                ids.append((rel / name).as_posix())
            else:
                other += 1
    return sorted(ids), other


def majority(labels: list[str]) -> str:
    """Most frequent label; ties -> smallest name."""
    counts = Counter(labels)
    top = max(counts.values())
    return min(lab for lab, c in counts.items() if c == top)


def read_truth(path: Path, root: Path) -> dict[str, str]:
    """{id: true label} from a CSV `image,label` (extra columns ignored); rows naming no file inside
    `root` are skipped. A missing file gives {} (truth is optional, for evaluation only)."""
    if not path.is_file():
        return {}
    truth = {}
    for _, row in read_csv_rows(path, TRUTH_HEADER):
        rel, reason = relative_id(row["image"] or "", root)
        if not reason and (row["label"] or "").strip():
            truth[rel] = row["label"].strip()
    return truth
