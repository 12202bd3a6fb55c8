"""Reading a source tree for ingest: image files, annotation rows (with their CSV line numbers) and
known true labels. Paths in CSVs are relative to the source root; rows naming absolute paths, paths
that escape the root (`..` or a symlink out) or missing files are rejected, never read.

A CSV that cannot be read as a whole is an InputError naming the file and line, never a silent
loss: bytes that are not UTF-8 (e.g. Latin-1), a NUL byte, a field over the csv module's 128 KiB
limit, or a quote left open (which would swallow every following line into one field). UTF-8
with or without a BOM and UTF-16 with a BOM are read. Every value is a string: an id `NA` is an
id, not a missing value.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import posixpath
import re
from collections import Counter
from pathlib import Path

from edge_pipeline.core.errors import InputError

ANNOTATION_HEADER = ("image", "annotator", "label")
TRUTH_HEADER = ("image", "label")
ROW_REASONS = (
    "empty_field",
    "absolute_path",
    "escapes_root",
    "missing_file",
    "repeat_rating",
    "unknown_label",
)
_FIX = "fix the file (save it as UTF-8 CSV) and run again"


def read_text(path: Path) -> str:
    """The CSV's text; InputError naming the line of a byte that is not UTF-8 or of a NUL."""
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not valid UTF-16 ({e.reason}); {_FIX}") from None
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            raise InputError(
                f"{path} line {line}: byte 0x{raw[e.start]:02X} is not UTF-8 (Latin-1 or "
                f"Windows-1252?); {_FIX}"
            ) from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise InputError(f"{path} line {line}: a NUL byte (a binary or UTF-16 file?); {_FIX}")
    return text


def read_csv_rows(path: Path, header: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(first line number, row) of a CSV that has (at least) the columns of `header`.

    Raises InputError naming the file and line for an unreadable file (see the module docstring)
    and for a quoted value spanning lines (an unclosed quote), which no id, annotator or label has.
    """
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), strict=True)
    rows, line = [], 1
    try:
        missing = [c for c in header if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(
                f"{path}: header {reader.fieldnames} lacks column(s) {missing}; "
                f"expected a first line of `{','.join(header)}`"
            )
        line = reader.line_num + 1
        for row in reader:
            if any("\n" in (row.get(c) or "").strip() for c in header):
                raise InputError(
                    f"{path} line {line}: a quoted value runs on to line {reader.line_num}; "
                    "close the quote on its line (an unclosed quote swallows the lines after it)"
                )
            rows.append((line, {k: v for k, v in row.items() if isinstance(k, str)}))
            line = reader.line_num + 1
    except csv.Error as e:
        raise InputError(
            f"{path} line {line}: {e} (lines {line}-{reader.line_num}); an unclosed quote or a "
            f"field over {csv.field_size_limit()} characters? {_FIX}"
        ) from None
    return rows


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
) -> tuple[list[tuple[int, str, str, str]], list[tuple[int, str, str]]]:
    """Valid (line, id, annotator, label) rows, and rejected (line, image, reason) rows of
    ROW_REASONS (all but unknown_label, decided once the classes are known)."""
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
        valid.append((line, rel, annotator, label))
    return valid, rejected


def scan_images(root: Path, extensions: frozenset[str]) -> tuple[list[str], int]:
    """Sorted ids (posix paths relative to `root`) of files with an image extension, skipping
    hidden files and folders; and the number of other files."""
    ids, other = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"  # strings, not Paths: 100,000 files add up
        names = [n for n in filenames if not n.startswith(".")]
        # n[n.rfind("."):] is os.path.splitext's extension for names not starting with "."
        # (a name without a dot gives its last character, which is no extension)
        found = [prefix + n for n in names if n[n.rfind(".") :].lower() in extensions]
        ids += found
        other += len(names) - len(found)
    ids.sort()
    return ids, other


def special_entries(root: Path) -> list[tuple[str, str]]:
    """(id, reason) of every FIFO, socket or device (special_file), dangling symlink
    (dangling_link) and symlink leaving `root` (outside_link) under `root`, found from the
    directory entries' types (d_type: no stat of a regular file, so 100,000 files take a fraction
    of a second): nothing is opened, so a caller can check a source tree before a tool that would
    block on a FIFO (DVC hashing a dependency directory) or fail on a dangling link touches it.
    Symlinked folders are checked, not entered; unreadable folders are skipped (as os.walk)."""
    found, real_root = [], root.resolve()
    todo = [(os.fspath(root), "")]
    while todo:
        folder, prefix = todo.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink():
                target = Path(entry.path)
                if not target.exists():
                    found.append((prefix + entry.name, "dangling_link"))
                elif not target.resolve().is_relative_to(real_root):
                    found.append((prefix + entry.name, "outside_link"))
            elif entry.is_dir(follow_symlinks=False):
                todo.append((entry.path, f"{prefix}{entry.name}/"))
            elif not entry.is_file(follow_symlinks=False):
                found.append((prefix + entry.name, "special_file"))
    return sorted(found)


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
