"""Helpers shared by the compression stages (prune, qat, export): options, inputs, model facts.

Kept free of TensorFlow imports at module level, like every stage helper.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.core.stage_helpers import number


def fit_options(cfg: dict[str, Any], *, section: str, epochs: int) -> dict[str, Any]:
    """Validated distillation fine-tuning options of `params.yaml[section]` (kd.fit_distilled)."""
    opt = {"section": section}
    return {
        "alpha": number(cfg, "alpha", 0.3, lo=0.0, hi=1.0, **opt),
        "temperature": number(cfg, "temperature", 4.0, lo=1e-6, **opt),
        "batch_size": number(cfg, "batch_size", 64, lo=1, integer=True, **opt),
        "lr": number(cfg, "lr", 5e-4, lo=1e-9, **opt),
        "patience": number(cfg, "patience", 3, lo=1, integer=True, **opt),
        "seed": number(cfg, "seed", 0, integer=True, **opt),
        "epochs": number(cfg, "epochs", epochs, lo=0, integer=True, **opt),
        "augment": augment_policy(cfg, section=section),
    }


def augment_policy(cfg: dict[str, Any], *, section: str) -> dict[str, Any] | None:
    """`cfg["augment"]`: null or a policy of `edge_pipeline.student.kd_training.make_augment` (the teacher's schema)."""
    policy = cfg.get("augment")
    if policy is None:
        return None
    from edge_pipeline.student.kd_training import make_augment

    try:
        if not isinstance(policy, dict):
            raise ValueError("expected a mapping")
        make_augment(policy, image_size=(8, 8), seed=0)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"params.yaml {section}.augment={policy!r}: {err}; use null or the keys of "
            "train.augment (hflip, rotation_deg, crop_padding, color_jitter)"
        ) from err
    return dict(policy)


def int_pair(
    cfg: dict[str, Any], key: str, default: Any, *, section: str
) -> tuple[int, int] | None:
    """`cfg[key]` as two positive ints (or None when null), failing with the key and the fix."""
    value = cfg.get(key, default)
    if value is None:
        return None
    ok = isinstance(value, list | tuple) and len(value) == 2
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ConfigError(f"params.yaml {section}.{key}={value!r} must be [int, int] (> 0) or null")
    return int(value[0]), int(value[1])


def load_fit_data() -> dict[str, Any]:
    """Everything a distillation fine-tune needs, by the contracts of docs/architecture.md.

    Returns:
        {"classes": K names, "x_train": uint8 (N, H, W, C), "y_train": int64 (N,),
         "teacher": float32 (N, K), "x_val", "y_val", "x_test", "y_test"}.
    """
    classes = data.load_classes()
    x_train, y_train, _, _ = data.load_train()
    x_val, y_val, _ = data.load_split("val")
    x_test, y_test, _ = data.load_split("test")
    teacher = data.read_teacher_logits("train", n_rows=len(x_train), n_classes=len(classes))
    return {
        "classes": classes, "x_train": x_train, "y_train": y_train, "teacher": teacher,
        "x_val": x_val, "y_val": y_val, "x_test": x_test, "y_test": y_test,
    }  # fmt: skip


def calibration_sample(x: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """float32 (min(n, N), H, W, C) images in [0, 1] drawn without replacement from uint8 x."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(x), size=min(int(n), len(x)), replace=False))
    return x[rows].astype(np.float32) / 255.0


def file_stats(path: str | Path) -> dict[str, int]:
    """{"bytes", "gzip_bytes"}: the size on disk and gzip -9 (what zeros save when shipped)."""
    raw = Path(path).read_bytes()
    return {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, compresslevel=9))}


def keras_facts(model: Any) -> dict[str, int]:
    """{"params", "nonzero_params", "macs"} of a tf_keras model (MACs per image, edge_pipeline.student.model)."""
    from edge_pipeline.student.model import count_macs

    nonzero = sum(int(np.count_nonzero(w)) for w in model.get_weights())
    return {
        "params": int(model.count_params()),
        "nonzero_params": nonzero,
        "macs": count_macs(model),
    }


def conv_channels(model: Any) -> dict[str, int]:
    """Filters (output channels) of every Conv2D / DepthwiseConv2D / Dense by layer name."""
    out = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # TF-MOT wrappers
        if type(inner).__name__ in {"Conv2D", "DepthwiseConv2D", "Dense"}:
            out[inner.name] = int(layer.output.shape[-1])
    return out


def prediction_agreement(a: Any, b: Any, x: np.ndarray, *, batch_size: int = 256) -> float:
    """Fraction of the N float32 images x (N, H, W, C) on which models a and b pick one class."""
    pa = np.argmax(a.predict(x, batch_size=batch_size, verbose=0), axis=1)
    pb = np.argmax(b.predict(x, batch_size=batch_size, verbose=0), axis=1)
    return float(np.mean(pa == pb))


def load_keras(path: str | Path) -> Any:
    """A tf_keras model from `path` (with the kd loss registered), or a clear error if missing."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tf_keras

    import edge_pipeline.student.kd_training  # noqa: F401  (registers DistillationLoss for models saved compiled)

    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is missing; run the stage that writes it (dvc repro)")
    return tf_keras.models.load_model(path, compile=False)


def model_entry(
    name: str, file: str, *, runtime: str, layout: str = "NHWC", dtype: str = "float32",
    source: str | None, params: int, macs: int, description: str,
) -> dict[str, Any]:  # fmt: skip
    """One row of a stage's models.json (docs/architecture.md, "Models")."""
    return {
        "name": name, "file": file, "runtime": runtime, "layout": layout, "dtype": dtype,
        "source": source, "params": int(params), "macs": int(macs), "description": description,
    }  # fmt: skip
