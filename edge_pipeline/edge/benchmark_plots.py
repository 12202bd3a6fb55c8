"""Plots of the benchmark stage (PNG + the CSV behind each): accuracy vs latency, sizes, serving.

Every CSV is shaped for its `dvc plots show` definition in dvc.yaml (one x and one y column per
file): pareto.csv (x p50_ms_1t, y accuracy), size.csv (x size_mb, y model) and serving/<policy>.csv
(x rate_rps, y latency_ms_p95, one file per batching policy so each draws its own line; the
folder also holds p95_latency.png with both policies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edge_pipeline.core.io import atomic_path

SERVING_DIR = "serving"  # plots/benchmark/serving/<policy>.csv
SERVING_COLUMNS = [
    "rate_rps", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "throughput_rps",
    "mean_batch", "offered_load",
]  # fmt: skip


def pareto_front(latency: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """bool (M,): no other model is at least as fast and as accurate, and strictly better in one."""
    lat, acc = latency[:, None], accuracy[:, None]
    dominated = ((latency <= lat) & (accuracy >= acc) & ((latency < lat) | (accuracy > acc))).any(1)
    return ~dominated


def pareto_table(df: pd.DataFrame, chosen: str | None) -> pd.DataFrame:
    """pareto.csv: one row per model (M rows) sorted by latency, with its number on the PNG
    (`rank`, 1 = fastest), whether it passed the gates, is on the front, is the chosen model."""
    pareto = df[["model", "p50_ms_1t", "accuracy", "size_mb", "passed"]].copy()
    pareto["on_front"] = pareto_front(pareto["p50_ms_1t"].to_numpy(), pareto["accuracy"].to_numpy())
    pareto["chosen"] = pareto["model"] == chosen
    pareto = pareto.sort_values(["p50_ms_1t", "model"]).reset_index(drop=True)
    pareto.insert(0, "rank", np.arange(1, len(pareto) + 1))
    return pareto


def _pareto_png(pareto: pd.DataFrame, path: Path) -> None:
    """Accuracy vs latency; each point carries its rank number (offset alternately above and
    below so neighbours do not collide) and the legend table on the right names the models; the
    chosen model is a large star."""
    import matplotlib.pyplot as plt

    fig, (ax, side) = plt.subplots(1, 2, figsize=(10, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    front = pareto[pareto["on_front"]]
    ax.plot(front["p50_ms_1t"], front["accuracy"] * 100, "--", color="grey", label="Pareto front")
    for ok, color in ((True, "tab:green"), (False, "tab:red")):
        sub = pareto[pareto["passed"] == ok]
        label = "passes gates" if ok else "fails a gate"
        ax.scatter(sub["p50_ms_1t"], sub["accuracy"] * 100, c=color, label=label, zorder=3)
    chosen = pareto[pareto["chosen"]]
    if len(chosen):
        ax.scatter(
            chosen["p50_ms_1t"], chosen["accuracy"] * 100, marker="*", s=400, facecolors="none",
            edgecolors="black", linewidths=1.5, label="chosen", zorder=4,
        )  # fmt: skip
    for i, row in pareto.iterrows():
        dy = 9 if i % 2 == 0 else -13  # points: alternate above / below by rank
        ax.annotate(
            str(row["rank"]), (row["p50_ms_1t"], row["accuracy"] * 100), xytext=(4, dy),
            textcoords="offset points", fontsize=8, weight="bold" if row["chosen"] else "normal",
        )  # fmt: skip
    ax.set(
        xscale="log", xlabel="p50 latency, batch 1, 1 thread (ms, log)",
        ylabel="test accuracy (%)", title="Accuracy vs latency (numbers: table)",
    )  # fmt: skip
    ax.margins(x=0.15, y=0.12)
    ax.legend(fontsize=8, loc="lower right")
    side.axis("off")
    cells = [
        [
            str(r["rank"]),
            r["model"] + (" (chosen)" if r["chosen"] else ""),
            f"{100 * r['accuracy']:.1f}",
            f"{r['p50_ms_1t']:.3g}",
        ]
        for _, r in pareto.iterrows()
    ]
    table = side.table(
        cellText=cells, colLabels=["#", "model", "acc %", "p50 ms"], loc="center",
        colWidths=[0.08, 0.6, 0.16, 0.16], cellLoc="left",
    )  # fmt: skip
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _size_png(sizes: pd.DataFrame, path: Path, *, max_size_mb: float) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.5 * len(sizes) + 1.5))
    pos = np.arange(len(sizes))
    ax.barh(pos - 0.2, sizes["size_mb"], 0.4, label="file")
    ax.barh(pos + 0.2, sizes["zipped_mb"], 0.4, label="zipped")
    ax.axvline(max_size_mb, color="red", ls="--", label="size gate")
    ax.set(yticks=pos, yticklabels=sizes["model"], xscale="log", xlabel="MB", title="Model size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _serving_png(rows: pd.DataFrame, path: Path, *, model: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for policy, sub in rows.groupby("policy"):
        sub = sub.sort_values("rate_rps")
        ax.plot(sub["rate_rps"], sub["latency_ms_p95"], "o-", label=f"{policy} p95")
    ax.set(
        xscale="log", yscale="log", xlabel="offered requests per second (log)",
        ylabel="p95 latency (ms, log)", title=f"Serving {model}: p95 latency vs request rate",
    )  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_plots(out: dict[str, Any], df: pd.DataFrame, plots_dir: Path) -> None:
    """plots/benchmark/: pareto.{png,csv}, size.{png,csv} and serving/ (<policy>.csv and
    p95_latency.png; empty when no model was chosen, so serving did not run).

    Args:
        out: `run_benchmark`'s record (gates, chosen, serving); df: `benchmark_outputs.table`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic_path(plots_dir) as d:
        d.mkdir()
        pareto = pareto_table(df, out["chosen"])
        pareto.to_csv(d / "pareto.csv", index=False)
        _pareto_png(pareto, d / "pareto.png")
        sizes = df[["model", "size_mb", "zipped_mb"]]
        sizes.to_csv(d / "size.csv", index=False)
        _size_png(sizes, d / "size.png", max_size_mb=out["gates"]["max_size_mb"])
        (d / SERVING_DIR).mkdir()
        if out["serving"]:
            rows = pd.DataFrame(out["serving"]["rows"])
            for policy, sub in rows.groupby("policy"):
                sub.sort_values("rate_rps")[SERVING_COLUMNS].to_csv(
                    d / SERVING_DIR / f"{policy}.csv", index=False
                )
            _serving_png(rows, d / SERVING_DIR / "p95_latency.png", model=out["chosen"])
        plt.close("all")
