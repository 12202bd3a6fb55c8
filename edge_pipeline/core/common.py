"""Legacy params readers, kept until every stage reads its typed section (config)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from edge_pipeline.core.errors import ConfigError

PARAMS_FILE = Path(os.environ.get("PIPELINE_PARAMS", "params.yaml"))


def load_all_params(path: Path | None = None) -> dict[str, Any]:
    path = path or PARAMS_FILE
    with open(path) as f:
        return yaml.safe_load(f) or {}


def load_params(stage: str, path: Path | None = None) -> dict[str, Any]:
    """Return `params.yaml[stage]` (the stage name is also the module name and the params key)."""
    params = load_all_params(path)
    if stage not in params:
        raise ConfigError(f"{path or PARAMS_FILE}: no '{stage}' section")
    return params[stage] or {}


def choice(cfg: dict[str, Any], key: str, allowed: Iterable[str], *, section: str) -> str:
    """Read `cfg[key]` and fail with the allowed values if it is not one of them."""
    allowed = list(allowed)
    value = cfg.get(key)
    if value not in allowed:
        raise ConfigError(f"params.yaml {section}.{key}={value!r} is not one of {allowed}")
    return value
