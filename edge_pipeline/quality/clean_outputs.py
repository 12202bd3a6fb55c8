"""Outputs of the clean stage: labels for later stages, the issue report, the review queue of
suspected test labels, the evaluation against known true labels, metrics and plots.

Kept apart from cleaning.py (the method) and tasks/clean.py (the stage). Every output is written
atomically (directories built in a temporary sibling, then renamed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from edge_pipeline.artifacts.catalog import (
    LABEL_ISSUES,
    LABELS,
    RELABEL_QUEUE_CSV,
    RELABEL_QUEUE_JSON,
    stage_paths,
)
from edge_pipeline.artifacts.datasets import read_split_assignment
from edge_pipeline.config.quality import LabelStudio
from edge_pipeline.core.errors import InputError
from edge_pipeline.core.io import atomic_path, write_csv, write_json
from edge_pipeline.core.plots import write_bar_png
from edge_pipeline.quality.agreement_outputs import label_studio_tasks

STAGE = "clean"
LABEL_COLUMNS = [
    "id", "label", "given_label", "is_issue", "action", "label_quality", "split", "reviewed",
]  # fmt: skip
ACTIONS = ["kept", "flagged", "dropped", "relabeled"]


def split_of(table: pd.DataFrame, path: Path) -> np.ndarray:
    """str (N,) split of each `id` of `table`, from split.csv at `path`; an id it lacks fails."""
    assignment = read_split_assignment(path)
    if assignment is None:
        raise InputError(f"{path}: missing; run the split stage first (dvc repro split)")
    split = table["id"].map(assignment.set_index("id")["split"])
    if split.isna().any():
        missing = table["id"][split.isna()].iloc[0]
        raise InputError(f"{path}: no split for id {missing!r}; re-run split (dvc repro split)")
    return split.to_numpy(dtype=str)


def test_queue(result: pd.DataFrame) -> pd.DataFrame:
    """Suspected label errors of the test split, most suspicious first, as agreement's queue
    columns (id, path, consensus = the given label, support = label quality, n_ratings, reason,
    votes = clean's suggestion), for review instead of a drop."""
    sus = result[result["is_issue"] & (result["split"] == "test") & ~result["reviewed"]]
    sus = sus.sort_values(["label_quality", "id"], kind="stable")
    return pd.DataFrame({
        "id": sus["id"], "path": sus["path"], "consensus": sus["given_label"],
        "support": sus["label_quality"], "n_ratings": 0, "reason": "suspected label error (test)",
        "votes": "clean suggests " + sus["suggested_label"].astype(str),
    }).reset_index(drop=True)  # fmt: skip


def test_label_counts(result: pd.DataFrame, queued: int) -> dict[str, int]:
    """On how many reviewed and unreviewed labels the test metrics rest."""
    test = result[result["split"] == "test"]
    return {
        "n": len(test),
        "reviewed": int(test["reviewed"].sum()),
        "unreviewed": int((~test["reviewed"]).sum()),
        "suspected_queued": queued,
        "dropped": int((test["action"] == "dropped").sum()),
    }


def capped_count(result: pd.DataFrame) -> int:
    """Confirmed issues left flagged by the per-class guards (not the protected test or reviewed
    ones, which are never confirmed)."""
    free = (result["split"] != "test") & ~result["reviewed"]
    return int(((result["action"] == "flagged") & result["confirmed"] & free).sum())


def score_issues(
    is_issue: np.ndarray, given: np.ndarray, true: np.ndarray, suggested: np.ndarray
) -> dict[str, float | int]:
    """Precision, recall and F1 of the flagged issues against the real errors (given != true).

    Args: bool (N,) issues; (N,) given, true and suggested labels (names or indices).
    """
    errors = given != true
    p, r, f1, _ = precision_recall_fscore_support(
        errors, is_issue, average="binary", zero_division=0
    )
    found = is_issue & errors
    return {
        "n_evaluated": len(given),
        "n_label_errors": int(errors.sum()),
        "noise_rate": round(float(errors.mean()), 4),
        "precision": round(float(p), 4),
        "recall": round(float(r), 4),
        "f1": round(float(f1), 4),
        # Of the real errors found, how often the suggested label is the true one.
        "suggested_label_accuracy": round(float(accuracy_score(true[found], suggested[found])), 4)
        if found.any()
        else None,
    }


def evaluate(result: pd.DataFrame, classes: list[str]) -> dict[str, Any] | None:
    """`score_issues` of the flagged issues over the rows with a known `true_label`, the same for
    what the policy dropped or relabelled (`acted`; `recall_actable`: of the real errors the policy
    may touch, outside the test split and reviewed labels), and label accuracy before and after
    the policy (kept rows); None when no true label is known (user data)."""
    known = result[result["true_label"].isin(classes)]
    if known.empty:
        return None
    score = score_issues(
        known["is_issue"].to_numpy(), known["given_label"].to_numpy(),
        known["true_label"].to_numpy(), known["suggested_label"].to_numpy(),
    )  # fmt: skip
    acted = known["action"].isin(["dropped", "relabeled"]).to_numpy()
    act = score_issues(
        acted, known["given_label"].to_numpy(), known["true_label"].to_numpy(),
        known["target_label"].to_numpy(),
    )  # fmt: skip
    errors = (known["given_label"] != known["true_label"]).to_numpy()
    actable = errors & (known["split"] != "test").to_numpy() & ~known["reviewed"].to_numpy()
    score["acted"] = {
        "n": int(acted.sum()), "precision": act["precision"], "recall": act["recall"],
        "n_actable_errors": int(actable.sum()),
        "recall_actable": round(float((acted & actable).sum() / actable.sum()), 4)
        if actable.any() else None,
        "relabel_accuracy": act["suggested_label_accuracy"],
    }  # fmt: skip
    kept = known[known["action"] != "dropped"]
    before = accuracy_score(known["true_label"], known["given_label"])
    score["label_accuracy_before"] = round(float(before), 4)
    score["label_accuracy_after"] = round(
        float(accuracy_score(kept["true_label"], kept["label"])), 4
    )
    return score


def per_class_counts(result: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """K rows (by given label): examples, issues and the count of each policy action."""
    table = pd.crosstab(result["given_label"], result["action"])
    table = table.reindex(index=classes, columns=ACTIONS, fill_value=0)
    issues = result.groupby("given_label")["is_issue"].sum()
    table.insert(0, "issues", issues.reindex(classes, fill_value=0))
    table.insert(0, "examples", table[ACTIONS].sum(axis=1))
    table.index.name, table.columns.name = "class", None
    return table.astype(int)


def report_markdown(
    result: pd.DataFrame, table: pd.DataFrame, metrics: dict[str, Any], notes: list[str]
) -> str:
    """A short human summary: settings, counts, the score when known, the worst issues."""
    lines = [
        "# Label issues (clean stage)",
        "",
        f"- {metrics['n_issues']} of {metrics['n_examples']} labels look wrong "
        f"(cleanlab `{metrics['filter_by']}` on out-of-fold probabilities of `{metrics['model']}`, "
        f"{metrics['folds_used']} folds, out-of-fold accuracy {metrics['oof_accuracy']:.3f}); "
        f"{metrics['n_confirmed']} confirmed (`confirm: {metrics['confirm']}`), the rest flagged "
        "for review.",
        f"- Policy `{metrics['policy']}` on the confirmed: "
        + ", ".join(f"{metrics['actions'][a]} {a}" for a in ACTIONS)
        + f"; {metrics['capped']} confirmed issues left as flagged by the per-class guards.",
        "- Test split (never trimmed): {n} images, {reviewed} reviewed and {unreviewed} unreviewed "
        "labels; {suspected_queued} suspected label errors queued for review "
        "(relabel_queue.json).".format(**metrics["test_labels"]),
    ]
    if "f1" in metrics:
        lines.append(
            f"- Against the known true labels ({metrics['n_label_errors']} real errors in "
            f"{metrics['n_evaluated']}): precision {metrics['precision']:.3f}, recall "
            f"{metrics['recall']:.3f}, F1 {metrics['f1']:.3f}; label accuracy "
            f"{metrics['label_accuracy_before']:.3f} before, {metrics['label_accuracy_after']:.3f} "
            "after the policy (kept rows)."
        )
        acted = metrics["acted"]
        if acted["n"]:
            lines.append(
                f"- Of the {acted['n']} dropped/relabelled: precision {acted['precision']:.3f}, "
                f"recall {acted['recall']:.3f} of the real errors ({acted['recall_actable']} of "
                f"the {acted['n_actable_errors']} outside the test split and reviewed labels)."
            )
    lines += [f"- Warning: {n}" for n in notes]
    lines += ["", "## Per class (given label)", "", _md(table)]
    issues = result[result["is_issue"]].sort_values("label_quality").head(20).copy()
    issues["label_quality"] = issues["label_quality"].map("{:.4f}".format)
    cols = ["id", "given_label", "suggested_label", "target_label", "label_quality", "action"]
    lines += ["", "## Most suspicious labels (full list: label_issues.csv)", "", _md(issues[cols])]
    return "\n".join(lines) + "\n"


def _md(frame: pd.DataFrame) -> str:
    """A GitHub-markdown table without the optional `tabulate` dependency."""
    frame = frame.reset_index() if frame.index.name else frame
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(map(str, r)) + " |" for r in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def write_outputs(
    result: pd.DataFrame,
    classes: list[str],
    *,
    settings: dict[str, Any],
    notes: list[str],
    label_studio: LabelStudio,
) -> dict[str, Any]:
    """Write data/clean, reports/clean, metrics/clean.json and plots/clean; return the metrics.

    Args:
        result: one row per example with LABEL_COLUMNS plus `confirmed`, `suggested_label`,
            `target_label` (relabel target), `true_label` ('' when unknown) and `path`, labels
            as class names.
        label_studio: `params.yaml[agreement.label_studio]` for the test review queue's tasks.
    """
    paths = stage_paths(STAGE)
    score = evaluate(result, classes)
    queue = test_queue(result)
    table = per_class_counts(result, classes)
    actions = result["action"].value_counts().reindex(ACTIONS, fill_value=0)
    metrics: dict[str, Any] = {
        "n_examples": len(result),
        "n_issues": int(result["is_issue"].sum()),
        "n_confirmed": int(result["confirmed"].sum()),
        "issue_rate": round(float(result["is_issue"].mean()), 4) if len(result) else 0.0,
        **settings,
        "actions": {a: int(n) for a, n in actions.items()},
        "capped": capped_count(result) if settings["policy"] != "flag" else 0,
        "test_labels": test_label_counts(result, len(queue)),
        **(score or {}),
        "per_class": table.to_dict(orient="index"),
        "warnings": notes,
    }
    with atomic_path(paths.data) as out:
        out.mkdir()
        result[LABEL_COLUMNS].to_csv(out / LABELS, index=False)
    with atomic_path(paths.reports) as out:
        out.mkdir()
        issues = result[result["is_issue"]].sort_values("label_quality", kind="stable")
        cols = [
            "id", "given_label", "suggested_label", "confirmed", "target_label", "label_quality",
            "action", "true_label",
        ]  # fmt: skip
        issues[cols].to_csv(out / LABEL_ISSUES, index=False)
        (out / "report.md").write_text(report_markdown(result, table, metrics, notes))
        queue.to_csv(out / RELABEL_QUEUE_CSV, index=False)
        tasks = label_studio_tasks(queue, url_prefix=label_studio.url_prefix,
                                   prefill=label_studio.prefill)  # fmt: skip
        (out / RELABEL_QUEUE_JSON).write_text(json.dumps(tasks, ensure_ascii=False) + "\n")
    with atomic_path(paths.plots) as out:
        out.mkdir()
        write_csv(table, out / "issues_per_class.csv")
        acted = {"drop": ["dropped"], "relabel": ["relabeled"]}.get(settings["policy"], [])
        write_bar_png(
            table[["issues", *acted]],
            out / "issues_per_class.png",
            title=f"Label issues per class (policy {settings['policy']})",
            xlabel="examples",
        )
    write_json(paths.metrics, metrics)
    return metrics
