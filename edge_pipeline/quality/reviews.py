"""The relabel round trip: reviewers' labels read back from a Label Studio JSON export.

The export is of the project created from relabel_queue.json (agreement's, or clean's queue of
suspected test labels): a list of tasks `{id, data: {image, item_id}, annotations: [{id,
completed_by, was_cancelled, result: [{from_name, to_name, type: "choices", value: {choices:
[label]}}]}], ...}` (Label Studio's documented export format; `completed_by` is a user id, or
`{id, email, ...}`). A reviewed label is a trusted rating that settles its image: it replaces the
consensus and takes the image off the queue. What cannot settle an image is counted and named:
tasks whose item is not an ingested image (removed or quarantined since, or another project's),
labels that are not a class, skipped/cancelled or empty annotations, and reviewers who disagree on
one image (it stays in the queue, reason "reviewers disagree"). Shapes: T tasks, N images.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edge_pipeline.core.errors import InputError
from edge_pipeline.quality.agreement_tables import Tables

MAX_NAMED = 5  # examples named per kind of problem in a warning


@dataclass(frozen=True)
class Reviews:
    """Settled images (id -> label, id -> reviewer), images whose reviewers disagree, counts."""

    label: dict[str, str] = field(default_factory=dict)
    reviewer: dict[str, str] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)  # id -> "a=3; b=8"
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def reviewer_name(completed_by: Any) -> str:
    """`completed_by` of an export annotation (a user id, or {id, email, ...}) as a name."""
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or f"user {completed_by.get('id')}")
    return f"user {completed_by}"


def annotation_label(annotation: dict[str, Any], *, from_name: str) -> list[str]:
    """The choices of the `from_name` control in one annotation's result ([] when none)."""
    chosen: list[str] = []
    for region in annotation.get("result") or []:
        if region.get("type") == "choices" and region.get("from_name") == from_name:
            chosen += [str(c) for c in (region.get("value") or {}).get("choices", [])]
    return chosen


def read_reviews(path: Path, *, ids: set[str], classes: list[str], from_name: str) -> Reviews:
    """Parse a Label Studio JSON export at `path` against the ingested `ids` and the K `classes`.

    Raises:
        InputError: the file is not JSON or not a list of task objects (names the file and fix).
    """
    try:
        tasks = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a JSON file ({err}); export the project as JSON") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise InputError(
            f"{path}: expected Label Studio's JSON export (a list of tasks), got "
            f"{type(tasks).__name__}; export the project with the 'JSON' format"
        )
    counts: Counter[str] = Counter(tasks=len(tasks))
    problems: dict[str, list[str]] = defaultdict(list)
    votes: dict[str, list[tuple[str, str]]] = defaultdict(list)  # id -> [(reviewer, label)]
    known = set(classes)
    for task in tasks:
        tid = task.get("id", "?")
        item = str((task.get("data") or {}).get("item_id", ""))
        if item not in ids:
            what = "no data.item_id" if not item else f"item {item!r} is not an ingested image"
            problems["unknown_task"].append(f"task {tid}: {what}")
            continue
        for ann in task.get("annotations") or []:
            counts["annotations"] += 1
            who = reviewer_name(ann.get("completed_by"))
            if ann.get("was_cancelled"):
                problems["skipped"].append(f"task {tid} ({item}) by {who}")
                continue
            chosen = annotation_label(ann, from_name=from_name)
            if len(chosen) != 1 or chosen[0] not in known:
                kind = "unknown_label" if chosen else "empty"
                problems[kind].append(f"task {tid} ({item}) by {who}: {chosen}")
                continue
            votes[item].append((who, chosen[0]))
    settled, by, conflicts = {}, {}, {}
    for item, given in votes.items():
        labels = {label for _, label in given}
        if len(labels) == 1:
            settled[item] = labels.pop()
            by[item] = "; ".join(sorted({who for who, _ in given}))
        else:
            conflicts[item] = "; ".join(f"{who}={label}" for who, label in given)
            problems["reviewers_disagree"].append(f"{item}: {conflicts[item]}")
    notes = [_note(path, kind, found) for kind, found in problems.items()]
    counts.update({k: len(v) for k, v in problems.items()})
    counts["settled"] = len(settled)
    return Reviews(settled, by, conflicts, dict(counts), notes)


FIXES = {
    "unknown_task": "ignored (a removed or quarantined image, or another project's export)",
    "skipped": "skipped or cancelled annotations ignored; the image stays in the queue",
    "empty": "annotations without a choice of the label control ignored",
    "unknown_label": "labels not in classes.json ignored; check the labelling config",
    "reviewers_disagree": "reviewers disagree: the image stays in the queue for one more review",
}


def _note(path: Path, kind: str, found: list[str]) -> str:
    more = f" and {len(found) - MAX_NAMED} more" if len(found) > MAX_NAMED else ""
    named = "; ".join(found[:MAX_NAMED])
    return f"{path}: {len(found)} {kind.replace('_', ' ')}: {FIXES[kind]} ({named}{more})"


def apply_reviews(
    tables: Tables, reviews: Reviews, *, manifest: pd.DataFrame
) -> tuple[Tables, dict[str, Any]]:
    """Settle the reviewed images: their label becomes the reviewed one (`reviewed` True,
    `reviewer` named), they leave the queue; disagreeing reviews put their image in the queue.

    Returns the new tables and the review metrics (settled, by whom, disagreement with the
    consensus, the queue before and after).
    """
    labels = tables.labels.assign(reviewed=False, reviewer="")
    consensus = labels.set_index("id")["label"]
    settled = pd.Series(reviews.label, dtype=object)
    rated = settled[settled.index.isin(consensus.index)]
    new = settled[~settled.index.isin(consensus.index)]
    if len(new):  # unrated images (or ImageFolder ones without a label) settled by a review
        extra = pd.DataFrame({"id": new.index, "label": new.to_numpy(), "n_ratings": 0,
                              "support": np.nan})  # fmt: skip
        labels = pd.concat([labels, extra.assign(reviewed=False, reviewer="")], ignore_index=True)
    hit = labels["id"].isin(settled.index)
    labels.loc[hit, "label"] = labels.loc[hit, "id"].map(settled)
    labels.loc[hit, "reviewed"] = True
    labels.loc[hit, "reviewer"] = labels.loc[hit, "id"].map(reviews.reviewer)
    labels = labels.sort_values("id", kind="stable").reset_index(drop=True)

    queue = tables.queue
    in_queue = queue["id"].isin(settled.index)
    queue = queue[~in_queue]
    conflicts = pd.Series(reviews.conflicts, dtype=object)
    conflicts = conflicts[~conflicts.index.isin(queue["id"])]
    if len(conflicts):
        rows = manifest.set_index("id").reindex(conflicts.index)
        add = pd.DataFrame({
            "id": conflicts.index, "path": rows.get("path", pd.Series(conflicts.index)).to_numpy(),
            "consensus": consensus.reindex(conflicts.index).fillna("").to_numpy(),
            "support": np.nan, "n_ratings": 0, "reason": "reviewers disagree",
            "votes": conflicts.to_numpy(),
        })  # fmt: skip
        queue = pd.concat([queue, add], ignore_index=True)
    disagree = rated != consensus.reindex(rated.index)
    by = Counter(reviews.reviewer[i] for i in settled.index)
    metrics = {
        "n_relabel_before_reviews": len(tables.queue),
        "n_settled": len(settled),
        "n_settled_from_queue": int(in_queue.sum()),
        "settled_by": dict(sorted(by.items())),
        "n_reviewer_disagreed": int(disagree.sum()),
        "reviewer_disagreement_rate": round(float(disagree.mean()), 4) if len(rated) else None,
        "review_counts": reviews.counts,
        "review_warnings": reviews.notes,
    }
    out = dataclasses.replace(tables, labels=labels, queue=queue.reset_index(drop=True))
    return out, metrics


def review_round(
    tables: Tables, path: Path | None, *, manifest: pd.DataFrame, classes: list[str],
    from_name: str,
) -> tuple[Tables, dict[str, Any]]:  # fmt: skip
    """`apply_reviews` of the export at `path` (None or a missing file: nothing settled, the same
    metric keys); metrics also name the file and whether it was found."""
    found = path is not None and path.exists()
    if found:
        reviews = read_reviews(path, ids=set(manifest["id"]), classes=classes, from_name=from_name)
    else:
        reviews = Reviews()
    tables, metrics = apply_reviews(tables, reviews, manifest=manifest)
    return tables, {"reviews_file": None if path is None else str(path), "reviews_found": found,
                    **metrics}  # fmt: skip
