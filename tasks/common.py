"""Helpers every stage shares: params, stage paths, atomic writes, progress, logging.

Kept free of heavy imports (no torch, no tensorflow) so any stage can use it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

PARAMS_FILE = Path(os.environ.get("PIPELINE_PARAMS", "params.yaml"))
T = TypeVar("T")


class ConfigError(ValueError):
    """A params.yaml value is missing or invalid; the message names the key and the fix."""


def load_all_params(path: Path | None = None) -> dict[str, Any]:
    path = path or PARAMS_FILE
    with open(path) as f:
        return yaml.safe_load(f) or {}


def load_params(stage: str, path: Path | None = None) -> dict[str, Any]:
    """Return `params.yaml[stage]` (the stage name is also the module name and the params key)."""
    params = load_all_params(path)
    if stage not in params:
        raise ConfigError(
            f"{path or PARAMS_FILE}: no '{stage}' section; "
            "add one (see the commented defaults in the repository's params.yaml)"
        )
    return params[stage] or {}


def choice(cfg: dict[str, Any], key: str, allowed: Iterable[str], *, section: str) -> str:
    """Read `cfg[key]` and fail with the allowed values if it is not one of them."""
    allowed = list(allowed)
    value = cfg.get(key)
    if value not in allowed:
        raise ConfigError(f"params.yaml {section}.{key}={value!r} is not one of {allowed}")
    return value


@dataclass(frozen=True)
class StagePaths:
    """Where a stage writes. Roots come from `params.yaml[paths]`, which dvc.yaml also templates."""

    data: Path  # artifacts for later stages (DVC-cached)
    reports: Path  # human-readable reports (CSV, JSON, PNG)
    metrics: Path  # one metrics JSON (DVC metrics)
    plots: Path  # plot data for `dvc plots show`


def stage_paths(stage: str, params_path: Path | None = None) -> StagePaths:
    roots = load_all_params(params_path).get("paths", {})
    return StagePaths(
        data=Path(roots.get("data", "data")) / stage,
        reports=Path(roots.get("reports", "reports")) / stage,
        metrics=Path(roots.get("metrics", "metrics")) / f"{stage}.json",
        plots=Path(roots.get("plots", "plots")) / stage,
    )


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    Works for files and directories, so a crash never leaves a half-written output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def setup_logging(stage: str) -> logging.Logger:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format=f"%(asctime)s {stage} %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    return logging.getLogger(f"tasks.{stage}")


def progress(
    items: Iterable[T], *, total: int | None, desc: str, every_s: float = 5.0
) -> Iterator[T]:
    """Yield `items`, logging `desc: i/total (rate/s)` every `every_s` seconds and at the end."""
    log = logging.getLogger("tasks.progress")
    start = last = time.perf_counter()
    i = 0
    for i, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last >= every_s:
            last = now
            log.info(
                "%s: %d/%s (%.0f/s)",
                desc,
                i,
                total if total is not None else "?",
                i / (now - start),
            )
    elapsed = time.perf_counter() - start
    log.info("%s: %d done in %.1fs", desc, i, elapsed)
