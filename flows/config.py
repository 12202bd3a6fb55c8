"""The params of a flow run: the workspace's params.yaml and the run's overrides, both validated.

The schema is edge_pipeline.config (`Params`, one typed section per key; the `orchestration`
section is edge_pipeline/config/orchestration.py). The whole file is validated first, then the
overrides with `apply_overrides`, so a misspelt key fails the run before any stage starts, naming
the key and the closest valid one. `PIPELINE_PARAMS_SCHEMA=module:Class` names another schema for
a workspace that is not this project (tests/flows_repo.py's tiny pipeline).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge_pipeline.config import Params, Section, apply_overrides, load_params, read_yaml
from edge_pipeline.config.orchestration import Alerts, Orchestration
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.core.lineage import FLOATING, SCRATCH

SCHEMA_ENV = "PIPELINE_PARAMS_SCHEMA"


def schema() -> type[Section]:
    """The model of the whole params.yaml: `Params`, or the class `$PIPELINE_PARAMS_SCHEMA`."""
    spec = os.environ.get(SCHEMA_ENV)
    if not spec:
        return Params
    module, _, name = spec.partition(":")
    try:
        model = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{SCHEMA_ENV}={spec}: {err}; use module:Class") from None
    return model


def run_params(
    params_file: Path, overrides: Mapping[str, Any]
) -> tuple[dict[str, Any], Orchestration]:
    """(params.yaml with the overrides set, its orchestration section); ConfigError when wrong.

    `overrides` are dotted keys (`{"train.epochs": 3}`), as `-S key=value` and the UI give them.
    """
    model = schema()
    raw = read_yaml(params_file)
    parsed = load_params(raw=raw, model=model)
    if not overrides:
        return raw, parsed.orchestration
    try:
        effective = apply_overrides(raw, dict(overrides), model=model)
    except ConfigError as err:
        raise ConfigError(
            f"{err}\n(in this run's overrides {sorted(overrides)}; nothing was run)"
        ) from None
    return effective, load_params(raw=effective, model=model).orchestration


def committed_alerts(params_file: Path) -> Alerts:
    """`orchestration.alerts` of a params.yaml that may be invalid elsewhere (so that its failure
    can still be sent); the defaults (events only) when that section is unreadable too."""
    try:
        section = ((read_yaml(params_file).get("orchestration") or {}).get("alerts")) or {}
        return Alerts.model_validate(section)
    except (ConfigError, ValidationError, AttributeError):
        return Alerts()


def warm_started(params: Mapping[str, Any]) -> set[str]:
    """The params sections whose stage starts from a model the registry picks tonight (`init`
    champion or previous).

    DVC's run cache must not restore such a stage: its start model comes from the MLflow registry,
    which DVC does not hash, so an entry with tonight's data and params may have started from
    another champion, or from a run this MLflow store does not hold (the next night's lineage
    would end there). A pinned start (`init: runs:/<id>`) is in the params DVC hashes, so the run
    cache may restore it. Defaults come from the schema: a section without `init` in params.yaml
    is warm when the schema's default is.
    """
    parsed = load_params(raw=dict(params), model=schema())
    return {
        name
        for name in type(parsed).model_fields
        if getattr(getattr(parsed, name, None), "init", SCRATCH) in FLOATING
    }


def changed_only(params_file: Path, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides whose value differs from params.yaml's: the Run form sends every boolean
    field (unset = false), and a value equal to params.yaml's changes nothing."""
    raw = read_yaml(params_file)
    missing = object()

    def current(dotted: str) -> Any:
        node: Any = raw
        for part in dotted.split("."):
            node = node.get(part, missing) if isinstance(node, Mapping) else missing
        return node

    return {k: v for k, v in overrides.items() if current(k) != v}
