"""train: the PyTorch teacher (a torchvision architecture), exported to ONNX, tracked in MLflow.

Reads data/ingest, data/split and data/resample through `edge_pipeline.artifacts.datasets`; writes
- data/train/: teacher.pt (plain state_dict), teacher.onnx (input `input` float32 (N, C, H, W) =
  x / 255, output `logits` (N, K)), logits_train.npy (N_train, K) row-aligned with
  data/resample/train.npz, logits_val.npy row-aligned with `load_split("val")`, meta.json,
  models.json;
- reports/train/report.md (+ confusion_matrix.png, training_curves.png), metrics/train.json,
  plots/train/ (history.csv, test_predictions.csv, confusion_matrix.png, training_curves.png).
The ONNX export must agree with torch on every test image's top-1 class, or the stage fails.
Model code: edge_pipeline/teacher/models.py; training loop: edge_pipeline/teacher/fit.py; report: edge_pipeline/teacher/outputs.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.artifacts.catalog import stage_paths
from edge_pipeline.core.common import choice, load_params
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.core.io import write_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.core.stage_helpers import check_keys, number

STAGE = "train"
DEFAULTS: dict[str, Any] = {
    "arch": "resnet18",
    "weights": None,
    "epochs": 8,
    "batch_size": 64,
    "lr": 0.002,
    "weight_decay": 0.05,
    "patience": 3,
    "seed": 0,
    "device": "cpu",
    "use_class_weights": False,
    "augment": {"hflip": False, "rotation_deg": 10.0, "crop_padding": 1, "color_jitter": 0.0},
    "threads": None,
    "onnx_opset": 18,
}
DEVICES = ["cpu", "cuda", "auto"]
FLAGS = ("use_class_weights", "hflip")
# key: (lowest, highest, integer?, null allowed?)
RANGES: dict[str, tuple[float, float | None, bool, bool]] = {
    "epochs": (1, 1000, True, False),
    "batch_size": (2, 4096, True, False),
    "lr": (1e-7, 1.0, False, False),
    "weight_decay": (0, 1, False, False),
    "patience": (1, None, True, False),
    "seed": (0, 2**32 - 1, True, False),
    "threads": (1, 256, True, True),
    "onnx_opset": (18, 23, True, False),  # the torch.export-based exporter starts at 18
    "rotation_deg": (0, 180, False, False),
    "crop_padding": (0, 64, True, False),
    "color_jitter": (0, 1, False, False),
}
SETS = ("train", "val", "test")
log = setup_logging(STAGE)


def _check_section(
    cfg: Any, defaults: dict[str, Any], *, section: str, choices: dict[str, list[str]]
) -> dict[str, Any]:
    """Fill `defaults` into the mapping `cfg`, checking every key against its allowed values."""
    check_keys(cfg, defaults, section=section)
    out = {}
    for key, default in defaults.items():
        value = cfg.get(key, default)
        if key in choices:
            out[key] = choice({key: value}, key, choices[key], section=section)
        elif key in FLAGS:
            if not isinstance(value, bool):
                raise ConfigError(f"params.yaml {section}.{key}={value!r} must be true or false")
            out[key] = value
        elif key in RANGES:
            lo, hi, integer, optional = RANGES[key]
            out[key] = number(
                cfg, key, default, section=section, lo=lo, hi=hi, integer=integer, optional=optional
            )
        else:
            out[key] = value
    return out


def parse_params(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check `params.yaml[train]` and fill defaults; any mistake raises ConfigError naming the key
    and the allowed values. Runs before any data is read or any model is built."""
    from edge_pipeline.teacher.models import (  # torch: imported only when the stage runs
        ARCHS,
        resolve_weights,
    )

    choices = {"arch": sorted(ARCHS), "device": DEVICES}
    p = _check_section(cfg, DEFAULTS, section=STAGE, choices=choices)
    p["augment"] = _check_section(
        cfg.get("augment") or {}, DEFAULTS["augment"], section=f"{STAGE}.augment", choices={}
    )
    if p["weights"] is not None and not isinstance(p["weights"], str):
        raise ConfigError(f"params.yaml train.weights={p['weights']!r} must be null or a name")
    resolve_weights(p["arch"], p["weights"])
    return p


def load_inputs() -> dict[str, Any]:
    """Classes, resampled train set, val and test splits and class weights, shape-checked."""
    return data.load_fit_sets(check_shapes=True)


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, H, W, C) images scaled to [0, 1] (std floored)."""
    pixels = x.reshape(-1, x.shape[-1]).astype(np.float64) / 255.0
    return pixels.mean(0).tolist(), np.maximum(pixels.std(0), 1e-3).tolist()


def build_meta(model: Any, p: dict[str, Any], d: dict[str, Any], result: Any) -> dict[str, Any]:
    """meta.json: what a later stage needs to rebuild, feed and describe the teacher."""
    import torch

    from edge_pipeline.teacher.models import count_macs, count_params

    _, h, w, c = d["x_train"].shape
    return {
        "arch": p["arch"],
        "weights": p["weights"],
        "classes": d["classes"],
        "in_channels": c,
        "image_size": [h, w],
        "layout": "NCHW",
        "input": "input",
        "output": "logits",
        "input_scale": "float32 x / 255; normalisation (mean, std) is inside the model",
        "mean": model.mean.flatten().tolist(),
        "std": model.std.flatten().tolist(),
        "params": count_params(model),
        "macs": count_macs(model, (c, h, w)),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "seed": p["seed"],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnx_opset": p["onnx_opset"],
        "n_train": len(d["y_train"]),
        "n_val": len(d["y_val"]),
    }


def main() -> None:
    import torch

    from edge_pipeline.core.tracking import stage_run
    from edge_pipeline.teacher import outputs as train_report
    from edge_pipeline.teacher.fit import (
        Augment,
        deterministic,
        fit,
        predict_logits,
        resolve_device,
    )
    from edge_pipeline.teacher.models import build_teacher

    p = parse_params(load_params(STAGE))
    paths = stage_paths(STAGE)
    d = load_inputs()
    if p["threads"]:
        torch.set_num_threads(p["threads"])
    device = resolve_device(p["device"])
    _, h, w, c = d["x_train"].shape
    log.info(
        "%s on %s (%d threads): %d train (%d synthetic), %d val, %d test, %dx%dx%d, K=%d",
        p["arch"], device, torch.get_num_threads(), len(d["y_train"]), d["synthetic"].sum(),
        len(d["y_val"]), len(d["y_test"]), h, w, c, len(d["classes"]),
    )  # fmt: skip
    counts = np.bincount(d["y_train"], minlength=len(d["classes"]))
    if p["use_class_weights"] and counts.max() <= 1.5 * max(counts.min(), 1):
        log.warning("train.use_class_weights on a train set already resampled to balance")
    # From scratch the input stats are the train set's; pretrained weights bring their own.
    mean, std = channel_stats(d["x_train"]) if p["weights"] is None else (None, None)
    with deterministic(p["seed"], strict=device.type == "cpu"), stage_run(STAGE, p) as mlflow:
        model = build_teacher(
            p["arch"], num_classes=len(d["classes"]), in_channels=c, image_size=(h, w),
            weights=p["weights"], mean=mean, std=std,
        )  # fmt: skip

        def on_epoch(row: dict[str, float]) -> None:
            mlflow.log_metrics(
                {
                    "train/loss": row["train_loss"],
                    "val/macro_f1": row["val_macro_f1"],
                    "val/accuracy": row["val_acc"],
                    "train/lr": row["lr"],
                },
                step=int(row["epoch"]),
            )

        result = fit(
            model, d["x_train"], d["y_train"], d["x_val"], d["y_val"],
            epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"],
            weight_decay=p["weight_decay"], patience=p["patience"],
            class_weights=d["class_weights"] if p["use_class_weights"] else None,
            augment=Augment(**p["augment"]), seed=p["seed"], device=device, on_epoch=on_epoch,
        )  # fmt: skip
        logits = {s: predict_logits(model, d[f"x_{s}"], device=device) for s in SETS}
        model = model.cpu()
        meta = build_meta(model, p, d, result)
        parity = train_report.write_artifacts(paths.data, model, meta, logits, d["x_test"])
        metrics = train_report.evaluate(d["y_test"], logits["test"], d["classes"]) | {
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "best_val_macro_f1": result.best_val_macro_f1,
            "train_seconds": round(result.train_seconds, 2),
            "train_images_per_s": round(result.images_per_s, 1),
            "threads": meta["threads"],
            "device": str(device),
            "params": meta["params"],
            "macs": meta["macs"],
            "onnx": parity,
        }
        figures = train_report.write_outputs(
            paths, metrics, result.history, d["y_test"], logits["test"], d["classes"], meta
        )
        write_json(paths.metrics, metrics)
        train_report.log_to_mlflow(mlflow, model, metrics, figures, paths.reports, d["x_test"][:2])
    log.info(
        "test macro-F1 %.4f accuracy %.4f; best epoch %d; %.1fs (%.0f img/s); ONNX max|diff| %.2e",
        metrics["test_macro_f1"], metrics["test_accuracy"], result.best_epoch,
        result.train_seconds, result.images_per_s, parity["max_abs_diff"],
    )  # fmt: skip


if __name__ == "__main__":
    main()
