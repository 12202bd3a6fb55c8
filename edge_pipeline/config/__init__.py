"""The one typed source of every parameter: its type, range, allowed values and default.

params.yaml is read through `Params`, one `Section` per top-level key (section = stage = module
name in tasks/). A stage reads its own section with `load_section(stage)`; the flow validates the
whole file and every override with `load_params`/`apply_overrides` before any stage starts.
tests/config/test_schema.py proves params.yaml and these defaults agree key for key.
"""

from __future__ import annotations

import copy
import functools
import os
import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edge_pipeline.config.base import Section, explain
from edge_pipeline.config.compression import Export, Prune, Qat
from edge_pipeline.config.edge import Benchmark
from edge_pipeline.config.orchestration import Orchestration
from edge_pipeline.config.quality import Agreement, Clean, Demo, Ingest, Resample, Split
from edge_pipeline.config.registry import Register
from edge_pipeline.config.student import Distill
from edge_pipeline.config.teacher import Train
from edge_pipeline.core.errors import ConfigError

__all__ = ["Params", "Paths", "Section", "apply_overrides", "load_params", "load_section"]


class Paths(Section):
    """Output roots; dvc.yaml templates them, artifacts/catalog.py:stage_paths reads them."""

    data: str = "data"  # data/<stage>/: artifacts handed to later stages (DVC-cached)
    reports: str = "reports"  # reports/<stage>/: human-readable reports
    metrics: str = "metrics"  # metrics/<stage>.json
    plots: str = "plots"  # plots/<stage>/: plot data for `dvc plots show`


# `register` is also ABCMeta.register, a class attribute of every model; the field wins.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Params(Section):
    """The whole params.yaml."""

    paths: Paths = Paths()
    demo: Demo = Demo()
    ingest: Ingest = Ingest()
    agreement: Agreement = Agreement()
    clean: Clean = Clean()
    split: Split = Split()
    resample: Resample = Resample()
    train: Train = Train()
    distill: Distill = Distill()
    prune: Prune = Prune()
    qat: Qat = Qat()
    export: Export = Export()
    benchmark: Benchmark = Benchmark()
    register: Register = Register()
    orchestration: Orchestration = Orchestration()


def params_file() -> Path:
    return Path(os.environ.get("PIPELINE_PARAMS", "params.yaml"))


@functools.lru_cache(maxsize=4)
def _parse(text: str) -> Any:
    # A stage reads params.yaml ~20 times (its section, every stage_paths()); parsing is ~40 ms.
    return yaml.safe_load(text)


def read_yaml(path: Path | None = None) -> dict[str, Any]:
    """The raw mapping of params.yaml (a YAML error names the file and line); a fresh copy."""
    path = path or params_file()
    try:
        raw = copy.deepcopy(_parse(Path(path).read_text()))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the params file: {err.strerror}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def load_params(
    path: Path | None = None,
    *,
    raw: dict[str, Any] | None = None,
    model: type[Section] = Params,
) -> Any:
    """Validate the whole params file (or `raw`); a ConfigError lists every wrong key.

    `model` is the schema of the whole file (another one only for a test pipeline's workspace).
    """
    raw = read_yaml(path) if raw is None else raw
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(explain(err, prefix="", model=model)) from None


def load_section(name: str, path: Path | None = None) -> Any:
    """Validate and return `params.yaml[name]` as its typed Section (defaults filled in)."""
    field = Params.model_fields.get(name)
    if field is None:
        raise ConfigError(f"no params section {name!r}; sections: {', '.join(Params.model_fields)}")
    model: type[Section] = field.annotation  # type: ignore[assignment]
    value = read_yaml(path).get(name) or {}
    try:
        return model.model_validate(value)
    except ValidationError as err:
        raise ConfigError(explain(err, prefix=name, model=model)) from None


def apply_overrides(
    raw: dict[str, Any], overrides: dict[str, Any], *, model: type[Section] = Params
) -> dict[str, Any]:
    """`raw` with dotted `overrides` ({'train.epochs': 3}) set, validated against the schema.

    Raises ConfigError naming the first unknown or invalid key, before anything runs.
    """
    import copy

    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted}: {part} is not a section")
            node = child
        node[leaf] = value
    load_params(raw=out, model=model)
    return out
