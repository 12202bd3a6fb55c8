"""Which labels are classes at ingest, so that no typo or stray folder becomes a class silently.

A label is a class when it is in `ingest.classes` (if that allow-list is set) and names at least
`ingest.min_class_images` images: for annotations, images whose majority label it is; for an
ImageFolder tree, image files in folders of that name. Annotation rows with another label are
rejected as `unknown_label` (a misspelt label never makes an empty class); files of an ImageFolder
tree in a folder that is no class, or in a sub-folder of a folder that itself holds images (a
stray sub-folder, e.g. `cat/old/`), are quarantined as `stray_folder` with the reason.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from typing import TYPE_CHECKING

from edge_pipeline.quality.sources import majority

if TYPE_CHECKING:
    from edge_pipeline.config.quality import Ingest


def _is_class(name: str, count: int, opts: Ingest) -> str:
    """'' when `name` (with `count` images) is a class, else why not."""
    if opts.classes is not None and name not in opts.classes:
        return f"not in ingest.classes {opts.classes}"
    if count < opts.min_class_images:
        return f"{count} image(s) < ingest.min_class_images={opts.min_class_images}"
    return ""


def annotation_classes(
    rows: list[tuple[int, str, str, str]], opts: Ingest
) -> tuple[list[tuple[int, str, str, str]], list[tuple[int, str, str]], dict[str, str]]:
    """Split valid (line, id, annotator, label) rows into rows whose label is a class and rejected
    (line, id, 'unknown_label') rows; the third item is {label: why not a class}."""
    ratings: dict[str, list[str]] = {}
    for _, rel, _, label in rows:
        ratings.setdefault(rel, []).append(label)
    images_of = Counter(majority(labels) for labels in ratings.values())
    not_class = {
        label: why
        for label in sorted({r[3] for r in rows})
        if (why := _is_class(label, images_of[label], opts))
    }
    kept = [r for r in rows if r[3] not in not_class]
    rejected = [(line, rel, "unknown_label") for line, rel, _, label in rows if label in not_class]
    return kept, rejected, not_class


def folder_classes(files: list[str], opts: Ingest) -> tuple[dict[str, str], dict[str, str]]:
    """ImageFolder labels of the image `files` (posix ids): ({id: class}, {id: stray detail}).

    The innermost folder names the class; files directly under the root have no label.
    """
    by_folder: dict[str, list[str]] = {}
    for rel in files:
        folder, slash, _ = rel.rpartition("/")  # = posixpath.dirname for a file id
        if slash:
            by_folder.setdefault(folder, []).append(rel)
    nested = {f: posixpath.dirname(f) for f in by_folder if posixpath.dirname(f) in by_folder}
    counts = Counter()
    for folder, members in by_folder.items():
        if folder not in nested:
            counts[posixpath.basename(folder)] += len(members)
    label_of, stray = {}, {}
    for folder, members in by_folder.items():
        name = posixpath.basename(folder)
        if folder in nested:
            why = f"sub-folder of {nested[folder]}/, which holds images itself"
        else:
            why = _is_class(name, counts[name], opts)
        if why:
            stray.update(dict.fromkeys(members, f"folder {folder}/ is no class: {why}"))
        else:
            label_of.update(dict.fromkeys(members, name))
    return label_of, stray
