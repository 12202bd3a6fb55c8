"""MLflow pyfunc wrapper of an edge model file, so the registry serves what the benchmark measured.

`mlflow.pyfunc.load_model("models:/<name>@champion").predict(x)` takes float32 (N, H, W, C) pixels
in [0, 1] and returns float32 logits (N, K), running the TFLite file in LiteRT or the ONNX file in
ONNX Runtime through `edge_pipeline.edge.runtimes` (the code the benchmark used).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np


class EdgeModel(mlflow.pyfunc.PythonModel):
    """Runs artifact `model` (the chosen edge model) in `runtime` with `threads` threads."""

    def __init__(self, *, runtime: str, layout: str, threads: int = 1) -> None:
        self.runtime, self.layout, self.threads = runtime, layout, threads

    def load_context(self, context: Any) -> None:
        from edge_pipeline.edge.runtimes import open_runner

        self.runner = open_runner(
            context.artifacts["model"],
            runtime=self.runtime,
            layout=self.layout,
            threads=self.threads,
        )

    # No type hints on predict: MLflow would try to derive a (list-based) schema from them; the
    # logged ModelSignature states the tensor shapes instead.
    def predict(self, context, model_input, params=None):
        """float32 (N, H, W, C) pixels in [0, 1] -> float32 logits (N, K)."""
        return self.runner.predict(np.asarray(model_input, dtype=np.float32))
