"""Outputs of the prune stage: metrics/prune.json, data/prune/meta.json and plots/prune/.

meta.json is read by later stages: its `student_config` rebuilds the thinner model with
`edge_pipeline.student.model.build_student(**config)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edge_pipeline.compression import model_facts as mf
from edge_pipeline.config.compression import Prune
from edge_pipeline.core.io import write_csv
from edge_pipeline.core.plots import write_bar_png


def model_summary(model: Any, path: Path, x_test: np.ndarray, y_test: np.ndarray) -> dict:
    """Parameters, MACs, file sizes of `path` and test accuracy / macro-F1 (4 decimals) of a
    tf_keras model on uint8 x_test (N, H, W, C) with labels y_test (N,)."""
    from edge_pipeline.student.kd_training import evaluate

    m = evaluate(model, x_test, y_test)
    return {
        **mf.keras_facts(model),
        **mf.file_stats(path),
        "accuracy": round(m["accuracy"], 4),
        "macro_f1": round(m["macro_f1"], 4),
    }


def prune_metrics(
    before: dict[str, Any], after: dict[str, Any], report: dict[str, Any], *, options: Prune,
    seconds: float,
) -> dict[str, Any]:  # fmt: skip
    """metrics/prune.json: the student, the channel-pruned model and the pruned one, ratios."""
    return {
        "student": before,
        "channel_pruned": report["channel_pruned"],
        "pruned": {**after, "sparsity": report["overall_sparsity"]},
        "target_sparsity": options.target_sparsity,
        # the fraction removed: below prune.min_agreement the stage halves it (pruning.py)
        "channel_fraction": report.get("channel_fraction") or options.channel_fraction,
        "macs_ratio": round(before["macs"] / after["macs"], 3),
        "params_ratio": round(before["params"] / after["params"], 3),
        "accuracy_drop_pts": round(100 * (before["accuracy"] - after["accuracy"]), 2),
        "rows_per_epoch": report["rows_per_pass"],  # train rows of one pass (a recovery epoch)
        "seconds": round(seconds, 1),
    }


def prune_meta(
    report: dict[str, Any], pruned: Any, src: Path, *, options: Prune, classes: list[str],
    lineage: dict[str, Any], student_config: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    """meta.json: what was removed and zeroed; `student_config` (the distilled student's, from
    data/distill/meta.json; None = unknown) with the pruned channels rebuilds the thinner model;
    `classes`, `recipe` and the lineage (where it started, its own MLflow run) serve warm starts."""
    meta: dict[str, Any] = {
        "source": str(src),
        **lineage,
        "classes": [str(c) for c in classes],
        "recipe": options.recipe(),
        "channels": report["channels"],
        "conv_channels": mf.conv_channels(pruned),
        "agreement_before_finetune": report["agreement_before_finetune"],
        "sparsity": report["layers"],
        "expected_sparsity": report["expected"],
        "overall_sparsity": report["overall_sparsity"],
        "schedule": report["plan"],
        "recovery_best_epoch": (report["recovery"] or report["ramp"] or {}).get("best_epoch"),
    }
    config = student_config
    if isinstance(config, dict) and isinstance(config.get("channels"), dict):
        channels = {**config["channels"], **{k: v["after"] for k, v in report["channels"].items()}}
        meta["student_config"] = {**config, "channels": channels}
    return meta


def write_prune_plots(report: dict[str, Any], plots: Path) -> None:
    """plots/prune/sparsity.{csv,png} (per-layer sparsity) and channels.{csv,png}."""
    rows = [
        {"layer": name, **row, "target": report["expected"][name]}
        for name, row in report["layers"].items()
    ]
    sparsity = pd.DataFrame(rows).set_index("layer").round(6)
    write_csv(sparsity, plots / "sparsity.csv")
    write_bar_png(
        sparsity[["sparsity", "target"]], plots / "sparsity.png", ylabel="layer",
        title="Weight sparsity per layer (pruned student)", xlabel="fraction of zero weights",
    )  # fmt: skip
    channels = pd.DataFrame(report["channels"]).T.rename_axis("layer")
    write_csv(channels, plots / "channels.csv")
    write_bar_png(
        channels, plots / "channels.png", ylabel="layer",
        title="Filters per pruned layer", xlabel="filters (output channels)",
    )  # fmt: skip
