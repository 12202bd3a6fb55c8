"""The base of every params section: strict (unknown keys rejected), frozen, typed by pydantic.

`explain` turns a pydantic ValidationError into one line per problem that names the key as it is
written in params.yaml (`prune.target_sparsty`), what is wrong, and the fix, with the closest valid
key for a misspelling (`did you mean target_sparsity?`).
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError


class Section(BaseModel):
    """A params.yaml mapping: every key declared with its type, range and default."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) model that `loc` points into, [] when not a model.

    Follows nested sections, optional sections and mappings of sections (`dict[str, Section]`,
    whose key in `loc` is skipped).
    """
    parts = list(loc)
    while parts:
        field = model.model_fields.get(str(parts.pop(0)))
        if field is None:
            return []
        sub = field.annotation
        args = getattr(sub, "__args__", ())
        if getattr(sub, "__origin__", None) is dict and parts:
            parts.pop(0)  # the mapping's key: the value type is the section
            sub, args = args[1], ()
        candidates = [sub, *args]
        sub = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if sub is None:
            return []
        model = sub
    return list(model.model_fields)


def explain(err: ValidationError, *, prefix: str, model: type[BaseModel]) -> str:
    """One line per error: `params.yaml <prefix>.<key>=<value>: <problem>[; did you mean ...]`."""
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = ".".join(str(p) for p in (prefix, *loc) if p != "")
        if e["type"] == "extra_forbidden":
            valid = _fields_at(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"did you mean {close[0]}?" if close else f"valid keys: {', '.join(valid)}"
            lines.append(f"params.yaml {key}: not an option; {hint}")
        else:
            value = e.get("input")
            shown = "" if isinstance(value, dict) else f"={value!r}"
            lines.append(f"params.yaml {key}{shown}: {e['msg']}")
    return "\n".join(lines)


class Augment(Section):
    """Per-image training augmentation (torchvision v2 on the teacher, tf.data on the student)."""

    hflip: StrictBool = False  # off for digits and text: a mirrored 2 is not a 2
    rotation_deg: float = Field(10.0, ge=0, le=180)  # random rotation in [-deg, deg]
    crop_padding: int = Field(1, ge=0, le=64)  # pad every side, random-crop back to H x W
    color_jitter: float = Field(0.0, ge=0, le=1)  # brightness/contrast strength
