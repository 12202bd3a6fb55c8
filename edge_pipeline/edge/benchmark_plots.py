"""Plots of the benchmark stage (PNG + the CSV behind each): accuracy vs latency, sizes, serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edge_pipeline.core.io import atomic_path


def pareto_front(latency: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """bool (M,): no other model is at least as fast and as accurate, and strictly better in one."""
    lat, acc = latency[:, None], accuracy[:, None]
    dominated = ((latency <= lat) & (accuracy >= acc) & ((latency < lat) | (accuracy > acc))).any(1)
    return ~dominated


def write_plots(out: dict[str, Any], df: pd.DataFrame, plots_dir: Path) -> None:
    """plots/benchmark/: pareto.{png,csv}, size.{png,csv}, serving.csv (when serving ran)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic_path(plots_dir) as d:
        d.mkdir()
        pareto = df[["model", "p50_ms_1t", "accuracy", "size_mb", "passed"]].copy()
        pareto["on_front"] = pareto_front(
            pareto["p50_ms_1t"].to_numpy(), pareto["accuracy"].to_numpy()
        )
        pareto.to_csv(d / "pareto.csv", index=False)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        front = pareto[pareto["on_front"]].sort_values("p50_ms_1t")
        ax.plot(
            front["p50_ms_1t"], front["accuracy"] * 100, "--", color="grey", label="Pareto front"
        )
        for ok, color in ((True, "tab:green"), (False, "tab:red")):
            sub = pareto[pareto["passed"] == ok]
            ax.scatter(
                sub["p50_ms_1t"],
                sub["accuracy"] * 100,
                c=color,
                label="passes gates" if ok else "fails a gate",
            )
        for _, row in pareto.iterrows():
            ax.annotate(row["model"], (row["p50_ms_1t"], row["accuracy"] * 100), fontsize=7)
        ax.set(
            xscale="log",
            xlabel="p50 latency, batch 1, 1 thread (ms)",
            ylabel="test accuracy (%)",
            title="Accuracy vs latency",
        )
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(d / "pareto.png", dpi=120)
        sizes = df[["model", "size_mb", "zipped_mb"]]
        sizes.to_csv(d / "size.csv", index=False)
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(sizes) + 1.5))
        pos = np.arange(len(sizes))
        ax.barh(pos - 0.2, sizes["size_mb"], 0.4, label="file")
        ax.barh(pos + 0.2, sizes["zipped_mb"], 0.4, label="zipped")
        ax.axvline(out["gates"]["max_size_mb"], color="red", ls="--", label="size gate")
        ax.set(
            yticks=pos, yticklabels=sizes["model"], xscale="log", xlabel="MB", title="Model size"
        )
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(d / "size.png", dpi=120)
        if out["serving"]:
            pd.DataFrame(out["serving"]["rows"]).to_csv(d / "serving.csv", index=False)
        plt.close("all")
