"""Helpers shared by the stages: params checks (keys, numbers), per-class count tables and bar
charts (clean, split, resample), and the test-set confusion-matrix figure (train, distill).

Each plot is a PNG (matplotlib, Agg) plus the CSV behind it, written atomically into the stage's
`plots/<stage>/` directory, which dvc.yaml declares as DVC plots (x = a count column, y = class).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tasks.common import ConfigError, atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def number(
    cfg: dict,
    key: str,
    default: float | None,
    *,
    section: str,
    lo: float | None = None,
    hi: float | None = None,
    integer: bool = False,
    optional: bool = False,
) -> float | int | None:
    """Read a numeric `cfg[key]` (or `default`), failing with the key and the allowed range.

    `optional=True` lets `null` through (returned as None).
    """
    value = cfg.get(key, default)
    if value is None and optional:
        return None
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    ok = ok and not isinstance(value, bool)
    if ok and lo is not None:
        ok = value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        bounds = f" in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        extra = " or null" if optional else ""
        raise ConfigError(f"params.yaml {section}.{key}={value!r} must be {kind}{bounds}{extra}")
    return int(value) if integer else float(value)


def check_keys(cfg: Any, allowed: Collection[str], *, section: str) -> None:
    """Require `cfg` (params.yaml[section]) to be a mapping whose keys are all in `allowed`.

    Raises:
        ConfigError: not a mapping, or an unknown key; the message names it and the allowed keys.
    """
    if not isinstance(cfg, dict):
        raise ConfigError(f"params.yaml {section} must be a mapping with keys {sorted(allowed)}")
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ConfigError(
            f"params.yaml {section}.{unknown[0]} is not an option; allowed keys: {sorted(allowed)}"
        )


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


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Write `table` (index included) to `path` atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp)


def write_distribution_csvs(table: pd.DataFrame, plots_dir: Path) -> None:
    """One `<column>.csv` (`class,count,fraction`) per column of a `count_table` (dvc plots)."""
    for name in table.columns:
        counts = table[name]
        total = counts.sum()
        frame = pd.DataFrame({"count": counts, "fraction": counts / total if total else 0.0})
        write_csv(frame.round(6), plots_dir / f"{name}.csv")


def write_bar_png(table: pd.DataFrame, path: Path, *, title: str, xlabel: str) -> None:
    """Grouped horizontal bars: one group per class (row), one bar per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = max(3.0, 0.35 * len(table) * max(1, len(table.columns)) ** 0.5 + 1.5)
    fig, ax = plt.subplots(figsize=(7, height))
    table.iloc[::-1].plot.barh(ax=ax, width=0.8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("class")
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
