"""Scoring registered model versions on the current test split, in a child process of their own.

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


def predict_registered(requests: list[tuple[str, np.ndarray]]) -> list[dict[str, Any]]:
    """(Child process.) For each (model_uri, uint8 images x (N, H, W, C)): {"pred": int64 (N,),
    "n_outputs": K of the model}, x fed as float32 pixels in [0, 1] to the pyfunc at model_uri.
    Each model is loaded once, however many image sets it scores."""
    import mlflow

    from edge_pipeline.core.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    models: dict[str, Any] = {}
    out = []
    for uri, x in requests:
        if uri not in models:
            models[uri] = mlflow.pyfunc.load_model(uri)
        logits = [
            np.asarray(models[uri].predict(x[i : i + CHUNK].astype(np.float32) / 255.0))
            for i in range(0, len(x), CHUNK)
        ]
        pred = np.concatenate(logits).argmax(axis=1) if logits else np.zeros(0, np.int64)
        out.append({"pred": pred, "n_outputs": logits[0].shape[1] if logits else None})
    return out


def score_versions(
    model_name: str,
    requests: dict[str, tuple[str | int, np.ndarray, np.ndarray, str]],
    classes: list[str],
    *,
    timeout_s: float,
) -> dict[str, dict[str, Any]]:
    """Figures of registered versions on image sets, all in one child process (one MLflow import
    and one model load per version; a process per set cost the demo's register stage ~9 s).

    Args:
        requests: {key: (version, x (N, H, W, C) uint8, labels y (N,) into `classes` (K), role)};
            `role` (champion/challenger) names the version in errors.

    Returns:
        {key: {"version", "uri", "pred" (N,), accuracy, balanced_accuracy, macro_f1,
        per_class_recall}} (figures of an empty set: `pred` only).
    """
    if not requests:
        return {}
    uris = {key: f"models:/{model_name}/{version}" for key, (version, *_) in requests.items()}
    preds = run_isolated(
        "edge_pipeline.registry.scoring:predict_registered",
        {"requests": [(uris[key], x) for key, (_, x, *_) in requests.items()]},
        timeout_s=timeout_s, timeout_fix="raise register.timeout_s",
    )  # fmt: skip
    scores = {}
    for (key, (version, _, y, role)), out in zip(requests.items(), preds, strict=True):
        if out["n_outputs"] not in (None, len(classes)):
            raise InputError(
                f"MLflow model {model_name!r} v{version} ({role}) has {out['n_outputs']} outputs "
                f"but the test split has {len(classes)} classes, so the two cannot be compared on "
                "the same images; delete the `champion` alias (MlflowClient()."
                "delete_registered_model_alias) to start afresh with the new classes"
            )
        figures = classification_figures(out["pred"], y, classes) if len(y) else {}
        scores[key] = {"version": str(version), "uri": uris[key], "pred": out["pred"]} | figures
    return scores
