"""Writers of the agreement stage: outputs, Label Studio import, plots and the markdown summary.

Loading the relabel queue into Label Studio: create a project with the labelling config in
reports/agreement/label_studio_config.xml, start Label Studio with
LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set to
the directory the manifest paths are relative to (the repository root for the demo), then import
reports/agreement/relabel_queue.json. For images served elsewhere, set
agreement.label_studio.url_prefix (e.g. https://host/images/).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from edge_pipeline.artifacts.catalog import (  # noqa: E402
    LABELS,
    RELABEL_QUEUE_CSV,
    RELABEL_QUEUE_JSON,
    StagePaths,
)
from edge_pipeline.core.io import atomic_path  # noqa: E402
from edge_pipeline.quality.agreement_stats import DEFINITIONS  # noqa: E402
from edge_pipeline.quality.agreement_tables import Tables  # noqa: E402

# Names tying the tasks' predictions to the labelling config written next to them.
FROM_NAME, TO_NAME = "label", "image"
MODEL_VERSION = "agreement-consensus"


def write_outputs(
    out: StagePaths,
    tables: Tables,
    metrics: dict[str, Any],
    *,
    classes: Sequence[str],
    url_prefix: str,
    prefill: bool,
) -> None:
    """Write data/agreement, reports/agreement and plots/agreement, each directory atomically."""
    with atomic_path(out.data) as d:
        d.mkdir()
        tables.labels.to_csv(d / LABELS, index=False)
    pw, per_class, queue = tables.pairwise, tables.per_class, tables.queue
    with atomic_path(out.reports) as d:
        d.mkdir()
        pw.to_csv(d / "pairwise.csv", index=False)
        per_class.to_csv(d / "per_class.csv", index=False)
        tables.annotators.to_csv(d / "annotators.csv", index=False)
        queue.to_csv(d / RELABEL_QUEUE_CSV, index=False)
        tasks = label_studio_tasks(queue, url_prefix=url_prefix, prefill=prefill)
        # one line: json's indent= path is pure Python, 5x slower on 100k tasks
        (d / RELABEL_QUEUE_JSON).write_text(json.dumps(tasks, ensure_ascii=False) + "\n")
        (d / "label_studio_config.xml").write_text(label_studio_config(classes))
        md = report_markdown(
            metrics,
            pairwise=pw.sort_values("kappa", na_position="last").head(20),
            annotators=tables.annotators,
            per_class=per_class,
        )
        (d / "report.md").write_text(md)
    with atomic_path(out.plots) as d:
        d.mkdir()
        pairs = pw.assign(pair=pw["annotator_a"] + " vs " + pw["annotator_b"])
        pairs = pairs[["pair", "annotator_a", "annotator_b", "kappa", "n_shared"]]
        pairs.to_csv(d / "pairwise_kappa.csv", index=False)
        cols = ["class", "kappa", "specific_agreement", "n_ratings"]
        per_class[cols].to_csv(d / "per_class.csv", index=False)
        names = tables.annotators["annotator"].tolist()
        if pw["kappa"].notna().any():
            heatmap_png(kappa_matrix(pw, names), names, d / "kappa_heatmap.png")
        else:
            message_png(f"No pairwise kappa: {metrics['gate_reason']}", d / "kappa_heatmap.png")
        if per_class[["kappa", "specific_agreement"]].notna().any(axis=None):
            per_class_png(per_class, d / "per_class_agreement.png")
        else:
            message_png("Per-class agreement not measured", d / "per_class_agreement.png")


def label_studio_tasks(
    queue: pd.DataFrame, *, url_prefix: str, prefill: bool
) -> list[dict[str, Any]]:
    """Label Studio import tasks, one per queue row (columns id, path, consensus, support,
    n_ratings, reason, votes). `data.image` = url_prefix + the URL-quoted image path; with
    `prefill`, rated items carry the consensus as a prediction (pre-annotation) scored by support.
    """
    tasks = []
    for row in queue.to_dict("records"):
        support = None if pd.isna(row["support"]) else round(float(row["support"]), 4)
        task: dict[str, Any] = {
            "data": {"image": url_prefix + quote(str(row["path"])), "item_id": row["id"]},
            "meta": {
                "consensus": row["consensus"],
                "support": support,
                "n_ratings": int(row["n_ratings"]),
                "reason": row["reason"],
                "votes": row["votes"],
            },
        }
        if prefill and row["consensus"]:
            choice = {"choices": [row["consensus"]]}
            result = {
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "choices",
                "value": choice,
            }
            task["predictions"] = [
                {"model_version": MODEL_VERSION, "score": support, "result": [result]}
            ]
        tasks.append(task)
    return tasks


def label_studio_config(classes: Sequence[str]) -> str:
    """Labelling config (XML) whose names match the tasks' `data.image` and predictions."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def kappa_matrix(pairwise: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """(A, A) symmetric matrix of pairwise kappas; NaN on the diagonal and for undefined pairs."""
    pos = {n: i for i, n in enumerate(names)}
    a, b = pairwise["annotator_a"].map(pos).to_numpy(), pairwise["annotator_b"].map(pos).to_numpy()
    m = np.full((len(names), len(names)), np.nan)
    m[a, b] = m[b, a] = pairwise["kappa"].to_numpy(dtype=float)
    return m


def heatmap_png(matrix: np.ndarray, names: Sequence[str], path: Path) -> None:
    """Annotator x annotator kappa heatmap; grey cells are undefined (or the diagonal)."""
    n = len(names)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * n + 2.5), max(3.5, 0.5 * n + 2.0)))
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#d9d9d9")
    low = min(0.0, float(np.nanmin(matrix))) if np.isfinite(matrix).any() else 0.0
    im = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=low, vmax=1.0)
    if n <= 40:  # beyond that labels and values overlap; the CSV has them
        ax.set_xticks(range(n), names, rotation=90)
        ax.set_yticks(range(n), names)
    if n <= 15:
        for (i, j), v in np.ndenumerate(matrix):
            text = "" if i == j else "n/a" if np.isnan(v) else f"{v:.2f}"
            ax.text(j, i, text, ha="center", va="center", size=8)
    fig.colorbar(im, ax=ax, label="Cohen's kappa")
    ax.set_title("Pairwise Cohen's kappa")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def per_class_png(per_class: pd.DataFrame, path: Path) -> None:
    """Horizontal bars: per-class (one-vs-rest Fleiss) kappa and specific agreement."""
    k = len(per_class)
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.35 * k + 1.2)))
    y = np.arange(k)
    ax.barh(y - 0.2, per_class["kappa"].fillna(0), height=0.4, label="category kappa")
    ax.barh(y + 0.2, per_class["specific_agreement"].fillna(0), height=0.4, label="specific agr.")
    ax.set_yticks(y, per_class["class"].astype(str))
    ax.invert_yaxis()
    ax.set_xlabel("agreement")
    ax.set_xlim(min(0.0, float(per_class["kappa"].min(skipna=True) or 0.0)), 1.0)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Per-class agreement")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def message_png(text: str, path: Path) -> None:
    """A placeholder figure that says why there is nothing to plot."""
    fig, ax = plt.subplots(figsize=(5, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown_table(df: pd.DataFrame, *, floats: str = "{:.3f}") -> str:
    """A GitHub markdown table (pandas' to_markdown needs `tabulate`, which is not in the stack)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if np.isnan(v) else floats.format(v)
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def report_markdown(
    metrics: dict[str, Any],
    *,
    pairwise: pd.DataFrame,
    annotators: pd.DataFrame,
    per_class: pd.DataFrame,
) -> str:
    """The short human summary in reports/agreement/report.md."""
    m = metrics
    lines = ["# Annotator agreement", ""]
    if m["status"] == "skipped":
        lines += [f"**Agreement not measured**: {m['skip_reason']}", ""]
    if m["n_ratings"] == 0:
        lines += [f"Labels passed through unchanged for {m['n_labelled']} images.", ""]
        return "\n".join(lines)
    fk = "undefined" if m["fleiss_kappa"] is None else f"{m['fleiss_kappa']:.3f}"
    lines += [
        f"- Gate: **{m['gate']}** ({m['gate_reason']}; policy `{m['policy']}`)",
        f"- Fleiss' kappa (items with >= 2 ratings): **{fk}**",
        f"- Pairwise Cohen's kappa: mean {_fmt(m['mean_pairwise_kappa'])}, "
        f"min {_fmt(m['min_pairwise_kappa'])} ({m['n_pairs_defined']} defined pairs, "
        f"{m['n_pairs_undefined']} undefined)",
        f"- {m['n_ratings']} ratings by {m['n_annotators']} annotators on {m['n_items']} images "
        f"({m['n_items_multi_rated']} with >= 2 ratings, {m['n_items_unrated']} unrated)",
        f"- Consensus: {m['n_ties']} ties broken, mean support {_fmt(m['mean_support'])}, "
        f"true accuracy {_fmt(m['consensus_true_accuracy'])} "
        f"(on {m['n_true_known']} images with known truth)",
        f"- Relabel queue: {m['n_relabel']} images (relabel_queue.json imports into Label Studio "
        "with label_studio_config.xml)",
        *review_lines(m),
        "",
        "## Annotators",
        "",
        markdown_table(annotators),
        "",
        "## Annotator pairs (lowest kappa first, at most 20)",
        "",
        markdown_table(pairwise),
        "",
        "## Classes",
        "",
        markdown_table(per_class),
        "",
        "## Definitions",
        "",
        DEFINITIONS,
    ]
    return "\n".join(lines) + "\n"


def review_lines(m: dict[str, Any]) -> list[str]:
    """The relabel round trip's lines of the summary (none without a reviews file)."""
    if not m.get("reviews_found"):
        return [f"- Reviews: none read ({m.get('reviews_file') or 'agreement.reviews: null'})"]
    return [
        f"- Reviews ({m['reviews_file']}): {m['n_settled']} images settled "
        f"({m['n_settled_from_queue']} of the {m['n_relabel_before_reviews']} queued) by "
        f"{m['settled_by']}; the reviewer disagreed with the consensus on "
        f"{m['n_reviewer_disagreed']} (rate {_fmt(m['reviewer_disagreement_rate'])})",
        *[f"  - Warning: {n}" for n in m["review_warnings"]],
    ]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
