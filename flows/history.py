"""The nightly history at a glance: one row per night, kept in git with the other plots.

<plots root>/history/nights.csv (columns HISTORY_COLUMNS) and nights.png (accuracy on the test
split and on tonight's new images, the annotators' kappa, the p95 latency and the chosen model,
night by night). `run_summary`'s CLI appends tonight's row after each run; dvc.yaml's top-level
`plots:` draws the CSV over the committed nights (`dvc plots show`, `dvc plots diff`).

A row is keyed by `run_key`, a hash of tonight's metrics: printing the summary twice for the same
run replaces its row instead of adding one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from edge_pipeline.artifacts.catalog import NIGHTS, stage_paths
from edge_pipeline.core.errors import InputError
from edge_pipeline.core.io import atomic_path, write_csv
from flows.summary import start_line

HISTORY_COLUMNS = [
    "night", "date", "test_accuracy", "new_images_accuracy", "kappa", "model", "p95_ms",
    "outcome", "started_from", "run_key",
]  # fmt: skip
# columns added after histories existed: an older nights.csv gets them empty instead of an error
LATER_COLUMNS = ("started_from",)


def history_paths(root: Path) -> tuple[Path, Path]:
    """(nights.csv, nights.png) under the workspace's plots root."""
    params = root / "params.yaml"
    plots = stage_paths("history", params if params.exists() else None).plots.parent
    base = plots if plots.is_absolute() else root / plots
    return base / NIGHTS.format(ext="csv"), base / NIGHTS.format(ext="png")


def tonight_row(summary: dict[str, Any], *, night: int, today: dt.date) -> dict[str, Any]:
    """Tonight's row from `run_summary.build`'s summary (None where a stage did not run).

    test_accuracy: the chosen model's (benchmark), else the student's (distill) test accuracy;
    new_images_accuracy: metrics/register.json `new_images.accuracy` when register reports it;
    started_from: where tonight's weights started (`flows.summary.start_line`).
    """
    m = summary["metrics"]
    bench = m.get("benchmark", {})
    model = bench.get("chosen") if bench.get("chosen") not in (None, "none") else None
    figures = bench.get("models", {}).get(model or "", {})
    accuracy = figures.get("accuracy", m.get("distill", {}).get("test_accuracy"))
    reg = m.get("register", {})
    key = hashlib.sha256(json.dumps(m, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return {
        "night": night,
        "date": today.isoformat(),
        "test_accuracy": _round(accuracy),
        "new_images_accuracy": _round((reg.get("new_images") or {}).get("accuracy")),
        "kappa": _round(m.get("agreement", {}).get("fleiss_kappa")),
        "model": model or "",
        "p95_ms": _round(figures.get("p95_ms_1t")),
        "outcome": reg.get("outcome", ""),
        "started_from": start_line(m) or "",
        "run_key": key,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.4g}")


def read_history(path: Path) -> pd.DataFrame:
    """nights.csv (empty table when absent); InputError naming the file when it is malformed."""
    if not path.exists():
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    try:
        table = pd.read_csv(path, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        fix = "fix or delete it (the history restarts)"
        raise InputError(f"{path}: unreadable CSV ({e}); {fix}") from None
    for col in LATER_COLUMNS:
        if col not in table.columns:
            table[col] = ""
    missing = [c for c in HISTORY_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing columns {missing}; fix or delete it (history restarts)")
    return table[HISTORY_COLUMNS]


def append_tonight(
    root: Path, summary: dict[str, Any], *, today: dt.date | None = None
) -> tuple[Path, Path]:
    """Add (or replace, same run_key) tonight's row in nights.csv and redraw nights.png.

    The night number is the demo's `night`, else the train stage's (its lineage), else the next.
    """
    csv, png = history_paths(root)
    table = read_history(csv)
    key_rows = table["run_key"] == tonight_row(summary, night=0, today=dt.date.min)["run_key"]
    previous = table[key_rows]
    table = table[~key_rows]
    m = summary["metrics"]
    night = m.get("demo", {}).get("night") or m.get("train", {}).get("night") or (
        int(previous["night"].iloc[0]) if len(previous) else int(table["night"].max()) + 1
        if len(table) else 1
    )  # fmt: skip
    row = tonight_row(summary, night=night, today=today or dt.date.today())
    table = table[table["night"] != night]  # a re-run of the same night replaces it
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True).sort_values("night")
    csv.parent.mkdir(parents=True, exist_ok=True)
    write_csv(table.set_index("night"), csv)
    draw(table, png)
    return csv, png


def draw(table: pd.DataFrame, path: Path) -> None:
    """nights.png: accuracies and kappa (left axis), p95 latency (right axis), the chosen model
    written at each point, night on x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = table["night"].astype(int)
    for col, label, style in (
        ("test_accuracy", "test accuracy", "o-"),
        ("new_images_accuracy", "accuracy on tonight's new images", "s--"),
        ("kappa", "annotator kappa", "^:"),
    ):
        y = pd.to_numeric(table[col], errors="coerce")
        if y.notna().any():
            ax.plot(x, y, style, label=label)
    for xi, acc, model in zip(x, table["test_accuracy"], table["model"], strict=True):
        if isinstance(model, str) and model and pd.notna(acc):
            ax.annotate(model, (xi, acc), xytext=(0, 6), textcoords="offset points", fontsize=7,
                        ha="center")  # fmt: skip
    ax.set(xlabel="night", ylabel="fraction", title="Nightly history", ylim=(0, 1.05))
    ax.set_xticks(sorted(set(x)))
    lat = pd.to_numeric(table["p95_ms"], errors="coerce")
    if lat.notna().any():
        right = ax.twinx()
        right.plot(x, lat, "x-.", color="grey", label="p95 latency (ms)")
        right.set_ylabel("p95 latency, chosen model (ms)")
        right.legend(fontsize=8, loc="lower right")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
