"""What the train stage hands to later stages: data/train/ (with the ONNX parity gate) and metrics.

Shapes: N images of a split, K classes. data/train/ holds `catalog.TEACHER_STATE` (a plain
state_dict), `TEACHER_ONNX` (input `input` float32 (N, C, H, W) = x / 255, output `logits`
(N, K)), `TEACHER_LOGITS` for train and val (float32 (N_split, K)), `META` and `MODELS`. The folder
is built in a temporary sibling and renamed into place (`edge_pipeline.core.io.atomic_path`), so a
failed parity check or a crash leaves the previous outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from edge_pipeline.artifacts.catalog import (
    META,
    MODELS,
    TEACHER_LOGITS,
    TEACHER_ONNX,
    TEACHER_STATE,
)
from edge_pipeline.config.teacher import Train
from edge_pipeline.core.io import atomic_path, write_json
from edge_pipeline.teacher.fit import TrainedTeacher
from edge_pipeline.teacher.models import (
    count_macs,
    count_params,
    export_onnx,
    onnx_parity,
    resolve_stem,
)


def evaluate(y_true: np.ndarray, logits: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Test metrics from int (N,) labels and (N, K) logits.

    Accuracy, macro-F1, per-class precision/recall/F1/support, and the K x K confusion matrix
    (rows = true class, columns = predicted).
    """
    pred = logits.argmax(1)
    labels = list(range(len(classes)))
    prec, rec, f1, support = precision_recall_fscore_support(
        y_true, pred, labels=labels, zero_division=0
    )
    return {
        "test_accuracy": float(accuracy_score(y_true, pred)),
        "test_macro_f1": float(
            f1_score(y_true, pred, labels=labels, average="macro", zero_division=0)
        ),
        "n_test": len(y_true),
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, prec, rec, f1, support, strict=True)
        },
        "confusion_matrix": {
            "labels": classes,
            "matrix": confusion_matrix(y_true, pred, labels=labels).tolist(),
        },
    }


def teacher_meta(run: TrainedTeacher, p: Train, d: dict[str, Any]) -> dict[str, Any]:
    """meta.json: what a later stage needs to rebuild, feed and describe the teacher.

    `d` is `load_fit_sets()`: uint8 (N, H, W, C) images, the K class names.
    """
    model, result = run.model, run.result
    _, h, w, c = d["x_train"].shape
    return {
        "arch": p.arch,
        "weights": p.weights,
        "classes": d["classes"],
        "in_channels": c,
        "image_size": [h, w],
        "stem": resolve_stem(p.stem, (h, w)),
        "width": p.width,
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
        "seed": p.seed,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnx_opset": p.onnx_opset,
        "n_train": len(d["y_train"]),
        "n_val": len(d["y_val"]),
    }


def models_entry(meta: dict[str, Any]) -> dict[str, Any]:
    """The teacher's `models.json` entry (read by benchmark)."""
    return {
        "name": "teacher_fp32",
        "file": TEACHER_ONNX,
        "runtime": "onnxruntime",
        "layout": "NCHW",
        "dtype": "float32",
        "source": None,
        "params": meta["params"],
        "macs": meta["macs"],
        "description": f"{meta['arch']} teacher (PyTorch -> ONNX opset "
        f"{meta['onnx_opset']}), input float32 x / 255",
    }


def write_artifacts(
    out_dir: Path,
    model: torch.nn.Module,
    meta: dict[str, Any],
    logits: dict[str, np.ndarray],
    x_test: np.ndarray,
    *,
    min_top1_agreement: float,
) -> dict[str, float]:
    """Write data/train (state_dict, ONNX, logits, meta, models.json); returns the ONNX parity.

    Args:
        logits: "train", "val", "test" -> torch's float32 (N_split, K) logits.
        x_test: uint8 (N_test, H, W, C) test images, run through the ONNX model.
        min_top1_agreement: `train.onnx_min_top1_agreement`.

    Raises RuntimeError, writing nothing, if ONNX picks torch's class on fewer test images.
    """
    shape = (meta["in_channels"], *meta["image_size"])
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        torch.save(model.state_dict(), tmp / TEACHER_STATE)
        export_onnx(model, tmp / TEACHER_ONNX, input_shape=shape, opset=meta["onnx_opset"])
        x = np.ascontiguousarray(x_test.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
        parity = onnx_parity(tmp / TEACHER_ONNX, x, logits["test"])
        if parity["top1_agreement"] < min_top1_agreement:
            raise RuntimeError(
                f"{TEACHER_ONNX} disagrees with torch on {1 - parity['top1_agreement']:.2%} of "
                f"the test images (max |logit diff| {parity['max_abs_diff']:.3g}; "
                f"train.onnx_min_top1_agreement is {min_top1_agreement}); try another "
                "train.onnx_opset, or report the architecture as not exportable"
            )
        for split in ("train", "val"):
            np.save(tmp / TEACHER_LOGITS.format(split=split), logits[split].astype(np.float32))
        write_json(tmp / META, meta | {"onnx_parity": parity})
        write_json(tmp / MODELS, [models_entry(meta)])
    return parity


def stage_metrics(
    run: TrainedTeacher,
    meta: dict[str, Any],
    d: dict[str, Any],
    *,
    parity: dict[str, float],
    device: torch.device,
) -> dict[str, Any]:
    """metrics/train.json: `evaluate` on the test set plus training and model figures."""
    result = run.result
    return evaluate(d["y_test"], run.logits["test"], d["classes"]) | {
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
