"""Tiny models and data for the compression tests (prune, qat, export): seconds, not minutes."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

TINY = {"blocks": [[1, 8, 1, 1], [3, 8, 2, 2]], "stem_channels": 8, "head_channels": 16}


def digits(n_classes: int = 3, per_class: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as uint8 (N, 8, 8, 1) images and int64 (N,) labels 0..K-1."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rows = np.concatenate([np.flatnonzero(d.target == k)[:per_class] for k in range(n_classes)])
    x = (d.images[rows] * (255.0 / 16.0)).round().astype(np.uint8)[..., None]
    return x, d.target[rows].astype(np.int64)


def tiny_student(n_classes: int = 3, *, size: int = 8, seed: int = 0) -> Any:
    """A MobileNetV2-style student (edge_pipeline.student.model), two residual blocks, ~2k params.

    BatchNorm momentum is lowered to 0.8 so a few dozen training steps give usable moving
    statistics (at Keras' 0.99 the inference-mode model would still be near its initialisation).
    """
    import tf_keras

    from edge_pipeline.student.model import build_student

    config = build_student((size, size, 1), n_classes, seed=seed, **TINY).get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "BatchNormalization":
            layer["config"]["momentum"] = 0.8
    return tf_keras.Model.from_config(config)


def trained_student(x: np.ndarray, y: np.ndarray, *, epochs: int = 8, seed: int = 0) -> Any:
    """`tiny_student` fitted with plain cross-entropy (kd with alpha=1) on uint8 images x."""
    from edge_pipeline.student.kd_training import fit_distilled

    n_classes = int(y.max()) + 1
    model = tiny_student(n_classes, size=x.shape[1], seed=seed)
    fit_distilled(
        model, x, y, np.zeros((len(x), n_classes), np.float32), x_val=x, y_val=y,
        n_classes=n_classes, alpha=1.0, temperature=1.0, epochs=epochs, batch_size=32, lr=1e-2,
        patience=epochs, seed=seed,
    )  # fmt: skip
    return model


def zero_smallest(model: Any, fraction: float) -> Any:
    """Zero the `fraction` smallest-magnitude weights of every Conv2D / Dense kernel, in place."""
    for layer in model.layers:
        if type(layer).__name__ in ("Conv2D", "Dense"):
            weights = layer.get_weights()
            kernel = weights[0]
            cut = np.quantile(np.abs(kernel), fraction)
            weights[0] = np.where(np.abs(kernel) <= cut, 0.0, kernel).astype(kernel.dtype)
            layer.set_weights(weights)
    return model


def load_with(section: str, values: dict[str, Any], tmp_dir: Any) -> Any:
    """`load_section(section)` of a params file holding only `{section: values}` (in tmp_dir)."""
    import yaml

    from edge_pipeline.config import load_section

    path = tmp_dir / "params.yaml"
    path.write_text(yaml.safe_dump({section: values}))
    return load_section(section, path)
