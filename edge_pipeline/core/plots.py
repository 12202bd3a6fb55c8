"""Plots shared by the stages: per-class count tables and bar charts (ingest, clean, split,
resample) and the test-set confusion-matrix figure (train, distill).

Each plot is a PNG (matplotlib, Agg) plus the CSV behind it, written atomically into the stage's
`plots/<stage>/` directory, which dvc.yaml declares as DVC plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from edge_pipeline.core.io import atomic_path, write_csv

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def count_table(columns: dict[str, np.ndarray], classes: list[str]) -> pd.DataFrame:
    """Examples per class for each labelled array.

    Args:
        columns: name -> int (N,) class indices into `classes` (N may differ per column).
        classes: the K class names.

    Returns:
        int DataFrame, K rows indexed by class name, one column per entry of `columns`.
    """
    k = len(classes)
    data = {
        name: np.bincount(np.asarray(y, dtype=np.int64), minlength=k) for name, y in columns.items()
    }
    return pd.DataFrame(data, index=pd.Index(classes, name="class"))


def write_distribution_csvs(table: pd.DataFrame, plots_dir: Path) -> None:
    """One `<column>.csv` (`class,count,fraction`) per column of a `count_table` (dvc plots)."""
    for name in table.columns:
        counts = table[name]
        total = counts.sum()
        frame = pd.DataFrame({"count": counts, "fraction": counts / total if total else 0.0})
        write_csv(frame.round(6), plots_dir / f"{name}.csv")


def write_bar_png(
    table: pd.DataFrame, path: Path, *, title: str, xlabel: str, ylabel: str = "class"
) -> None:
    """Grouped horizontal bars: one group per row (a class, or a layer), one bar per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = max(3.0, 0.35 * len(table) * max(1, len(table.columns)) ** 0.5 + 1.5)
    fig, ax = plt.subplots(figsize=(7, height))
    table.iloc[::-1].plot.barh(ax=ax, width=0.8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def confusion_figure(
    y_true: np.ndarray, pred: np.ndarray, classes: list[str], *, title: str
) -> Figure:
    """A K x K confusion-matrix figure (rows = true class, columns = predicted, no colour bar).

    Args:
        y_true: int (N,) true class indices into `classes`.
        pred: int (N,) predicted class indices.
        classes: the K class names (axis labels, in index order).
        title: the axes title.

    Returns:
        The matplotlib Figure (Agg); the caller saves and closes it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        y_true, pred, labels=list(range(len(classes))), display_labels=classes,
        ax=ax, colorbar=False, cmap="Blues",
    )  # fmt: skip
    ax.set_title(title)
    fig.tight_layout()
    return fig
