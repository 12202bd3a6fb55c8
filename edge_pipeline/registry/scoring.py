"""Scoring registered model versions on the current test split, each in its own child process.

A version is scored as the registry serves it: `mlflow.pyfunc.load_model("models:/<name>/<v>")`
downloads the version's artifacts (the edge model file and the code it was registered with) and
its `predict` runs them (edge_pipeline/registry/edge_model.py). The child process keeps that
code's imports out of the stage's process; the parent gets the predicted classes back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_pipeline.core.errors import InputError
from edge_pipeline.edge.classification import classification_figures
from edge_pipeline.edge.measure import run_isolated

CHUNK = 256  # images per predict call: bounds the float32 copy of a large test split


def predict_registered(model_uri: str, x: np.ndarray) -> dict[str, Any]:
    """(Child process.) {"pred": int64 (N,), "n_outputs": K of the model} for uint8 images x
    (N, H, W, C), fed as float32 pixels in [0, 1] to the pyfunc at `model_uri`."""
    import mlflow

    from edge_pipeline.core.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    model = mlflow.pyfunc.load_model(model_uri)
    logits = [
        np.asarray(model.predict(x[i : i + CHUNK].astype(np.float32) / 255.0))
        for i in range(0, len(x), CHUNK)
    ]
    return {"pred": np.concatenate(logits).argmax(axis=1), "n_outputs": logits[0].shape[1]}


def score_version(
    model_name: str,
    version: str | int,
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    *,
    role: str,
    timeout_s: float,
) -> dict[str, Any]:
    """Figures of registered version `version` on test images x (N, H, W, C) uint8, labels y (N,)
    into `classes` (K): {"version", "uri", "pred" (N,), accuracy, balanced_accuracy, macro_f1,
    per_class_recall}. `role` (champion/challenger) names the version in errors."""
    uri = f"models:/{model_name}/{version}"
    out = run_isolated(
        "edge_pipeline.registry.scoring:predict_registered", {"model_uri": uri, "x": x},
        timeout_s=timeout_s, timeout_fix="raise register.timeout_s",
    )  # fmt: skip
    if out["n_outputs"] != len(classes):
        raise InputError(
            f"MLflow model {model_name!r} v{version} ({role}) has {out['n_outputs']} outputs but "
            f"the test split has {len(classes)} classes, so the two cannot be compared on the "
            "same images; delete the `champion` alias (MlflowClient()."
            "delete_registered_model_alias) to start afresh with the new classes"
        )
    return {"version": str(version), "uri": uri, "pred": out["pred"]} | classification_figures(
        out["pred"], y, classes
    )
