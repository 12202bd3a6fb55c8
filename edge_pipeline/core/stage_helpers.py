"""Helpers shared by the stages: params checks (keys, numbers), per-class count tables and bar
charts (clean, split, resample), and the test-set confusion-matrix figure (train, distill).

Each plot is a PNG (matplotlib, Agg) plus the CSV behind it, written atomically into the stage's
`plots/<stage>/` directory, which dvc.yaml declares as DVC plots (x = a count column, y = class).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from edge_pipeline.core.errors import ConfigError

if TYPE_CHECKING:
    pass


def number(
    cfg: dict,
    key: str,
    default: float | None,
    *,
    section: str,
    lo: float | None = None,
    hi: float | None = None,
    integer: bool = False,
    optional: bool = False,
) -> float | int | None:
    """Read a numeric `cfg[key]` (or `default`), failing with the key and the allowed range.

    `optional=True` lets `null` through (returned as None).
    """
    value = cfg.get(key, default)
    if value is None and optional:
        return None
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    ok = ok and not isinstance(value, bool)
    if ok and lo is not None:
        ok = value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        bounds = f" in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        extra = " or null" if optional else ""
        raise ConfigError(f"params.yaml {section}.{key}={value!r} must be {kind}{bounds}{extra}")
    return int(value) if integer else float(value)


def check_keys(cfg: Any, allowed: Collection[str], *, section: str) -> None:
    """Require `cfg` (params.yaml[section]) to be a mapping whose keys are all in `allowed`.

    Raises:
        ConfigError: not a mapping, or an unknown key; the message names it and the allowed keys.
    """
    if not isinstance(cfg, dict):
        raise ConfigError(f"params.yaml {section} must be a mapping with keys {sorted(allowed)}")
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ConfigError(
            f"params.yaml {section}.{unknown[0]} is not an option; allowed keys: {sorted(allowed)}"
        )
