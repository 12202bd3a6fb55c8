"""Facts about the models the compression stages (prune, qat, export) read and write.

- `load_keras`: a tf_keras model file (data/distill/student.keras, ...), or a clear InputError.
- `calibration_sample`: the train images a conversion or refit calibrates on.
- `keras_facts`, `conv_channels`, `file_stats`, `blob_stats`: parameters, MACs, filters, sizes.
- `prediction_agreement`: how often two models pick the same class.
- `model_entry`: one row of a stage's models.json.

Kept free of TensorFlow imports at module level: tf_keras is imported where a model is loaded.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_pipeline.core.errors import InputError


def calibration_sample(x: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """float32 (min(n, N), H, W, C) images in [0, 1] drawn without replacement from uint8 x."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(x), size=min(int(n), len(x)), replace=False))
    return x[rows].astype(np.float32) / 255.0


def blob_stats(raw: bytes) -> dict[str, int]:
    """{"bytes", "gzip_bytes"}: the size and gzip -9 size (what zeros save when shipped)."""
    return {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, compresslevel=9))}


def file_stats(path: str | Path) -> dict[str, int]:
    """`blob_stats` of the file at `path`."""
    return blob_stats(Path(path).read_bytes())


def keras_facts(model: Any) -> dict[str, int]:
    """{"params", "nonzero_params", "macs"} of a tf_keras model (MACs per image, student.model)."""
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
    """A tf_keras model from `path` (with the kd loss registered); InputError if it is missing."""
    if not Path(path).exists():
        raise InputError(f"{path} is missing; run the stage that writes it (dvc repro)")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tf_keras

    # registers DistillationLoss, for models saved compiled
    import edge_pipeline.student.kd_training  # noqa: F401

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
