"""Edge model runners (ONNX Runtime, LiteRT) behind one interface, and the models.json contract.

Every runner takes float32 NHWC pixels in [0, 1] (the contract of docs/architecture.md) and returns
float32 logits (N, K); it converts to the model's layout (NCHW/NHWC) and, for integer TFLite models,
quantises inputs with the input tensor's scale and zero point and dequantises outputs.

Only numpy is imported at module level: this module runs inside the benchmark's child processes,
whose memory figures must show the runtime, not TensorFlow or torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_pipeline.artifacts.catalog import MODELS
from edge_pipeline.core.errors import ConfigError, InputError

EDGE_RUNTIMES = ("onnxruntime", "litert")
REQUIRED_KEYS = ("name", "file", "runtime", "layout", "dtype", "source", "params", "macs")
LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float32", "int8", "uint8")


@dataclass(frozen=True)
class ModelSpec:
    """One runtime artifact from a stage's `models.json` (see docs/architecture.md, "Models")."""

    id: str  # unique across the benchmark: `name`, or `stage/name` when two stages share a name
    name: str
    stage: str
    path: str  # file path as the pipeline sees it (data/<stage>/<file>)
    runtime: str
    layout: str
    dtype: str
    source: str | None
    params: int
    macs: int
    description: str = ""

    @property
    def is_int(self) -> bool:
        return self.dtype in ("int8", "uint8")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_models_json(path: Path, *, stage: str) -> list[ModelSpec]:
    """Parse one `data/<stage>/models.json`, keeping the entries an edge runtime runs.

    Entries of other runtimes (keras, torch) are skipped. An InputError names the file, entry,
    key and the fix.
    """
    if not path.is_file():
        raise InputError(f"{path}: not found; run `dvc repro {stage}` first")
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path} line {e.lineno}: invalid JSON ({e.msg}); re-run {stage}") from e
    if not isinstance(entries, list):
        raise InputError(
            f"{path}: expected a JSON list of model entries, got {type(entries).__name__}"
        )
    specs = []
    for i, entry in enumerate(entries):
        where = f"{path} entry {i} ({entry.get('name', '?') if isinstance(entry, dict) else '?'})"
        missing = [k for k in REQUIRED_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise InputError(f"{where}: missing keys {missing}; the {stage} stage must write them")
        if entry["runtime"] not in EDGE_RUNTIMES:
            continue
        for key, allowed in (("layout", LAYOUTS), ("dtype", DTYPES)):
            if entry[key] not in allowed:
                raise InputError(f"{where}: {key}={entry[key]!r} is not one of {list(allowed)}")
        file = path.parent / entry["file"]
        if not file.is_file():
            raise InputError(f"{where}: model file {file} does not exist; re-run {stage}")
        specs.append(
            ModelSpec(
                id=str(entry["name"]),
                name=str(entry["name"]),
                stage=stage,
                path=str(file),
                runtime=entry["runtime"],
                layout=entry["layout"],
                dtype=entry["dtype"],
                source=entry["source"],
                params=int(entry["params"] or 0),
                macs=int(entry["macs"] or 0),
                description=str(entry.get("description", "")),
            )
        )
    return specs


def load_models(data_root: Path, stages: list[str]) -> list[ModelSpec]:
    """The edge-runtime models of `data_root/<stage>/models.json` for `stages`, ids unique."""
    specs = [
        s for stage in stages for s in read_models_json(data_root / stage / MODELS, stage=stage)
    ]
    names = [s.name for s in specs]
    return [
        ModelSpec(**{**s.to_dict(), "id": f"{s.stage}/{s.name}"}) if names.count(s.name) > 1 else s
        for s in specs
    ]


def find_model(specs: list[ModelSpec], key: str, *, param: str) -> ModelSpec:
    """The model whose id, `stage/name` or unique name is `key` (else ConfigError on `param`)."""
    hits = [s for s in specs if key in (s.id, f"{s.stage}/{s.name}")] or [
        s for s in specs if s.name == key
    ]
    if len(hits) != 1:
        problem = "is ambiguous" if hits else "matches no model"
        raise ConfigError(
            f"params.yaml {param}={key!r} {problem}; use one of {[s.id for s in specs]}"
        )
    return hits[0]


class Runner(Protocol):
    def predict(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, H, W, C) pixels in [0, 1] -> float32 logits (N, K)."""
        ...


class OrtRunner:
    """ONNX Runtime CPU session with `threads` intra-op threads (inter-op 1: sequential graph)."""

    def __init__(self, path: str, *, layout: str, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.layout = layout
        # A fixed leading dimension (e.g. an export without dynamic axes) forces chunked calls.
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def predict(self, x: np.ndarray) -> np.ndarray:
        feed = np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.layout == "NCHW" else x)
        step = self.fixed_batch or len(feed)
        outs = [
            self.session.run(None, {self.input_name: feed[i : i + step]})[0]
            for i in range(0, len(feed), step)
        ]
        return np.concatenate(outs).astype(np.float32, copy=False)


class LiteRTRunner:
    """ai-edge-litert interpreter with `threads` threads; resizes the batch dimension on demand.

    The model is a .tflite path or its flatbuffer bytes.
    """

    def __init__(self, model: str | bytes, *, layout: str, threads: int) -> None:
        self.interpreter = litert_interpreter(model, threads=threads)
        self.layout = layout
        self._refresh()

    def _refresh(self) -> None:
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]
        self.batch = int(self.inp["shape"][0])

    def _resize(self, batch: int) -> None:
        if batch != self.batch:
            shape = [batch, *self.inp["shape"][1:]]
            self.interpreter.resize_tensor_input(self.inp["index"], shape)
            self.interpreter.allocate_tensors()
            self._refresh()

    def predict(self, x: np.ndarray) -> np.ndarray:
        feed = x.transpose(0, 3, 1, 2) if self.layout == "NCHW" else x
        self._resize(len(feed))
        self.interpreter.set_tensor(self.inp["index"], quantize(feed, self.inp))
        self.interpreter.invoke()
        return dequantize(self.interpreter.get_tensor(self.out["index"]), self.out)


def litert_interpreter(model: str | bytes, *, threads: int, default_delegates: bool = True) -> Any:
    """An allocated ai-edge-litert Interpreter of `model` (a .tflite path or its bytes).

    default_delegates: LiteRT's default XNNPACK delegate (what the benchmark measures); False runs
    the plain builtin kernels.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    source = {"model_content": model} if isinstance(model, bytes) else {"model_path": model}
    resolver = (
        OpResolverType.AUTO
        if default_delegates
        else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter = Interpreter(**source, num_threads=threads, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    return interpreter


def quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """float32 -> the tensor's dtype with its (scale, zero point); float tensors pass through."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(dtype, np.integer) or scale == 0:
        return np.ascontiguousarray(x, dtype=dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """The tensor's integer values -> float32 with its (scale, zero point)."""
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(q.dtype, np.integer) or scale == 0:
        return q.astype(np.float32, copy=False)
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


def open_runner(path: str, *, runtime: str, layout: str, threads: int) -> Runner:
    """A runner for `path` in `runtime` ("onnxruntime" | "litert")."""
    if runtime == "onnxruntime":
        return OrtRunner(path, layout=layout, threads=threads)
    if runtime == "litert":
        return LiteRTRunner(path, layout=layout, threads=threads)
    raise ValueError(f"{path}: runtime {runtime!r} is not one of {list(EDGE_RUNTIMES)}")


def predict_batched(runner: Runner, x: np.ndarray, *, batch: int) -> np.ndarray:
    """Logits (N, K) of float32 images (N, H, W, C) in chunks of `batch` (the last one padded).

    Padding keeps one tensor shape, so LiteRT never re-allocates for the tail.
    """
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        outs.append(runner.predict(chunk)[: batch - pad])
    return np.concatenate(outs)
