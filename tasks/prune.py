"""prune stage: channel pruning plus TF-MOT sparsity of the distilled student.

1. Channel pruning (edge_pipeline/compression/channels.py): remove the weakest `channel_fraction` of the hidden
   filters of every inverted-residual block (and of the head), rebuild a thinner model, refit the
   layers after them by least squares, and check the class agreement with the student BEFORE any
   fine-tuning (`min_agreement`).
2. Sparsity (edge_pipeline/compression/sparsity.py): TF-MOT `prune_low_magnitude` to `target_sparsity` over the ramp,
   fine-tuned with the distillation loss against the teacher logits, wrappers stripped, and the
   sparsity reached asserted per layer (within 2 points).

Reads data/distill/student.keras, data/train/logits_train.npy and the splits; writes
data/prune/{student_pruned.keras, meta.json}, metrics/prune.json (parameters, MACs and file size
before/after, test metrics) and plots/prune/ (per-layer sparsity and channel counts, CSV + PNG).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from edge_pipeline.artifacts.catalog import stage_paths  # noqa
from edge_pipeline.compression import finetune as cx  # noqa: E402
from edge_pipeline.compression.channels import SCOPES  # noqa: E402
from edge_pipeline.core.common import choice, load_params  # noqa
from edge_pipeline.core.errors import ConfigError  # noqa
from edge_pipeline.core.io import (  # noqa
    atomic_path,
    read_json,
    write_csv,  # noqa
    write_json,
)
from edge_pipeline.core.logs import setup_logging  # noqa
from edge_pipeline.core.stage_helpers import number  # noqa

STAGE = "prune"
log = setup_logging(STAGE)


def read_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validated `params.yaml[prune]` with defaults."""
    opt = {"section": STAGE}
    exclude = cfg.get("exclude") or []
    if not isinstance(exclude, list) or not all(isinstance(v, str) for v in exclude):
        raise ConfigError(f"params.yaml prune.exclude={exclude!r} must be a list of layer names")
    return {
        "target_sparsity": number(cfg, "target_sparsity", 0.5, lo=0.0, hi=0.99, **opt),
        "channel_fraction": number(cfg, "channel_fraction", 0.5, lo=0.0, hi=0.95, **opt),
        "channel_scope": choice({"channel_scope": "hidden", **cfg}, "channel_scope", SCOPES, **opt),
        "min_agreement": number(cfg, "min_agreement", 0.5, lo=0.0, hi=1.0, **opt),
        "calib_samples": number(cfg, "calib_samples", 256, lo=1, integer=True, **opt),
        "block_size": cx.int_pair(cfg, "block_size", [1, 1], **opt),
        "m_by_n": cx.int_pair(cfg, "sparsity_m_by_n", None, **opt),
        "frequency": number(cfg, "frequency", None, lo=1, integer=True, optional=True, **opt),
        "ramp_epochs": number(cfg, "ramp_epochs", 3, lo=1, integer=True, **opt),
        "exclude": exclude,
        "fit": cx.fit_options(cfg, section=STAGE, epochs=15),
    }


def prune_student(
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    teacher_logits: np.ndarray,
    *,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_check: np.ndarray,
    y_check: np.ndarray | None = None,
    channel_fraction: float,
    target_sparsity: float,
    channel_scope: str = "hidden",
    min_agreement: float = 0.5,
    calib_samples: int = 256,
    block_size: tuple[int, int] | None = (1, 1),
    m_by_n: tuple[int, int] | None = None,
    ramp_epochs: int = 3,
    frequency: int | None = None,
    exclude: list[str] | tuple[str, ...] = (),
    fit: dict[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """Channel-prune then sparsify `model` (module docstring), fine-tuning with distillation.

    Args:
        model: the student, float32 (N, H, W, C) in [0, 1] -> (N, K) logits.
        x_train: uint8 (N, H, W, C); y_train: int (N,); teacher_logits: float32 (N, K).
        x_val, y_val: uint8 (M, H, W, C), int (M,) for early stopping.
        x_check: uint8 (L, H, W, C) images for the agreement check before fine-tuning;
            y_check: their int (L,) labels, to report the accuracy there too (optional).
        fit: `compression.fit_options` (epochs = recovery epochs at constant sparsity).

    Returns:
        (stripped pruned model, report: "channels", "channel_pruned", "layers" (sparsity), ...).

    Raises:
        ValueError: agreement below `min_agreement`; SparsityShortfall: target not reached.
    """
    from edge_pipeline.compression.channels import channel_prune
    from edge_pipeline.compression.sparsity import prune_and_finetune

    seed = fit["seed"]
    calib = cx.calibration_sample(x_train, calib_samples, seed=seed)
    thin, channels = channel_prune(
        model, fraction=channel_fraction, x_calib=calib, exclude=exclude, scope=channel_scope,
        seed=seed,
    )  # fmt: skip
    x_float = x_check.astype(np.float32) / 255.0
    agreement = cx.prediction_agreement(model, thin, x_float)
    thin_facts = {**cx.keras_facts(thin), "agreement_before_finetune": round(agreement, 4)}
    if y_check is not None:
        pred = thin.predict(x_float, verbose=0).argmax(axis=1)
        thin_facts["accuracy_before_finetune"] = round(float(np.mean(pred == y_check)), 4)
    log.info("channel pruning %s; before fine-tuning %s", channels, thin_facts)
    if agreement < min_agreement:
        raise ValueError(
            f"after removing {channel_fraction:.0%} of the channels the model agrees with the "
            f"student on only {agreement:.1%} of {len(x_check)} images (prune.min_agreement="
            f"{min_agreement}); lower prune.channel_fraction or raise prune.calib_samples"
        )
    fit = dict(fit)
    recovery_epochs = fit.pop("epochs")
    n_classes = int(teacher_logits.shape[1])
    pruned, info = prune_and_finetune(
        thin, x_train, y_train, teacher_logits, target=target_sparsity, ramp_epochs=ramp_epochs,
        recovery_epochs=recovery_epochs, frequency=frequency, block_size=block_size or (1, 1),
        m_by_n=m_by_n, exclude=exclude, x_val=x_val, y_val=y_val, n_classes=n_classes, **fit,
    )  # fmt: skip
    return pruned, {
        "channels": channels,
        "agreement_before_finetune": agreement,
        "channel_pruned": thin_facts,
        **info,
    }


def write_plots(report: dict[str, Any], plots: Path) -> None:
    """plots/prune/sparsity.{csv,png} (per-layer sparsity) and channels.{csv,png}."""
    rows = [
        {"layer": name, **row, "target": report["expected"][name]}
        for name, row in report["layers"].items()
    ]
    sparsity = pd.DataFrame(rows).set_index("layer").round(6)
    write_csv(sparsity, plots / "sparsity.csv")
    _barh(
        sparsity[["sparsity", "target"]], plots / "sparsity.png",
        title="Weight sparsity per layer (pruned student)", xlabel="fraction of zero weights",
    )  # fmt: skip
    channels = pd.DataFrame(report["channels"]).T.rename_axis("layer")
    write_csv(channels, plots / "channels.csv")
    _barh(
        channels, plots / "channels.png",
        title="Filters per pruned layer", xlabel="filters (output channels)",
    )  # fmt: skip


def _barh(table: pd.DataFrame, path: Path, *, title: str, xlabel: str) -> None:
    """Grouped horizontal bars, a group per layer (row) and a bar per column; atomic PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.45 * len(table)))
    table.iloc[::-1].plot.barh(ax=ax, width=0.8)
    ax.set(title=title, xlabel=xlabel, ylabel="layer")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main() -> None:
    from edge_pipeline.core.tracking import stage_run
    from edge_pipeline.student.kd_training import evaluate

    cfg = load_params(STAGE)
    o = read_options(cfg)
    paths = stage_paths(STAGE)
    src = stage_paths("distill").data / "student.keras"
    student = cx.load_keras(src)
    d = cx.load_fit_data()
    start = time.perf_counter()
    with stage_run(STAGE, cfg) as mlflow:
        before = {**cx.keras_facts(student), **cx.file_stats(src)}
        before.update(_test_metrics(evaluate(student, d["x_test"], d["y_test"])))
        pruned, report = prune_student(  # read_options' keys are prune_student's keywords
            student, d["x_train"], d["y_train"], d["teacher"], x_val=d["x_val"],
            y_val=d["y_val"], x_check=d["x_test"], y_check=d["y_test"], **o,
        )  # fmt: skip
        out = paths.data / "student_pruned.keras"
        with atomic_path(out) as tmp:
            pruned.save(tmp)
        after = {**cx.keras_facts(pruned), **cx.file_stats(out)}
        after.update(_test_metrics(evaluate(pruned, d["x_test"], d["y_test"])))
        after["sparsity"] = report["overall_sparsity"]
        metrics = {
            "student": before,
            "channel_pruned": report["channel_pruned"],
            "pruned": after,
            "target_sparsity": o["target_sparsity"],
            "channel_fraction": o["channel_fraction"],
            "macs_ratio": round(before["macs"] / after["macs"], 3),
            "params_ratio": round(before["params"] / after["params"], 3),
            "accuracy_drop_pts": round(100 * (before["accuracy"] - after["accuracy"]), 2),
            "seconds": round(time.perf_counter() - start, 1),
        }
        write_json(paths.data / "meta.json", _meta(report, pruned, src))
        write_json(paths.metrics, metrics)
        write_plots(report, paths.plots)
        mlflow.log_metrics(
            {k: float(v) for k, v in _flat(metrics).items() if isinstance(v, int | float)}
        )
        mlflow.log_artifacts(str(paths.plots), artifact_path="plots")
    log.info(
        "pruned: %d -> %d params, %d -> %d MACs, sparsity %.1f%%, test accuracy %.4f -> %.4f",
        before["params"], after["params"], before["macs"], after["macs"],
        100 * after["sparsity"], before["accuracy"], after["accuracy"],
    )  # fmt: skip


def _test_metrics(m: dict[str, Any]) -> dict[str, float]:
    return {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4)}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _meta(report: dict[str, Any], pruned: Any, src: Path) -> dict[str, Any]:
    """meta.json: what was removed and zeroed; `student_config` rebuilds the thinner model."""
    meta: dict[str, Any] = {
        "source": str(src),
        "channels": report["channels"],
        "conv_channels": cx.conv_channels(pruned),
        "agreement_before_finetune": report["agreement_before_finetune"],
        "sparsity": report["layers"],
        "expected_sparsity": report["expected"],
        "overall_sparsity": report["overall_sparsity"],
        "schedule": report["plan"],
        "recovery_best_epoch": (report["recovery"] or report["ramp"])["best_epoch"],
    }
    distill_meta = src.parent / "meta.json"
    config = read_json(distill_meta).get("student_config") if distill_meta.exists() else None
    if isinstance(config, dict) and isinstance(config.get("channels"), dict):
        channels = {**config["channels"], **{k: v["after"] for k, v in report["channels"].items()}}
        meta["student_config"] = {**config, "channels": channels}
    return meta


if __name__ == "__main__":
    main()
