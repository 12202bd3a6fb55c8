"""The Run form of the deployments: `overrides` lists every parameter a person may set.

`overrides` stays a mapping of dotted params.yaml keys (`{"train.epochs": 3}`, what `-S` gives),
but its JSON schema, the one Prefect's Run form draws, is generated from the typed params schema
(edge_pipeline.config `Params`, or PIPELINE_PARAMS_SCHEMA's class): one optional property per
leaf key with its type, range and choices from pydantic's `model_json_schema()`, and as its
description the key's params.yaml comment and default. Nested sections are flattened into dotted
keys; `additionalProperties: false` makes the form refuse an unknown key (the flow would too).
No property has a default, so a field left empty is no override.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edge_pipeline.config import read_yaml

MAX_DESCRIPTION = 300


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """`node` with every `$ref` replaced by its definition (the form has no $defs)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _resolve(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _resolve(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _section(node: dict[str, Any]) -> dict[str, Any] | None:
    """The object schema of a nested section (also inside `X | None`), else None."""
    for option in [node, *node.get("anyOf", [])]:
        if option.get("type") == "object" and "properties" in option:
            return option
    return None


def yaml_comments(params_file: Path) -> dict[str, str]:
    """Dotted key -> its end-of-line comment in params.yaml (ruamel keeps them; {} when none)."""
    from ruamel.yaml import YAML

    try:
        data = YAML().load(params_file.read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if not (hasattr(node, "ca") and hasattr(node, "items")):
            return
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            token = (node.ca.items.get(key) or [None] * 4)[2]
            if token is not None:
                text = token.value.strip().lstrip("#").strip().splitlines()
                if text:
                    out[dotted] = text[0]
            walk(value, dotted + ".")

    walk(data, "")
    return out


def overrides_properties(model: type[BaseModel], params_file: Path) -> dict[str, Any]:
    """One JSON-schema property per leaf key of `model`, dotted, with type and description."""
    full = model.model_json_schema()
    defs = full.get("$defs", {})
    comments = yaml_comments(params_file)
    current = read_yaml(params_file) if params_file.is_file() else {}
    props: dict[str, Any] = {}

    def value_at(dotted: str) -> Any:
        node: Any = current
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def walk(node: dict[str, Any], prefix: str) -> None:
        for name, raw in node.get("properties", {}).items():
            dotted = f"{prefix}{name}"
            sub = _resolve(raw, defs)
            section = _section(sub)
            if section is not None:
                walk(section, dotted + ".")
                continue
            leaf = {k: v for k, v in sub.items() if k not in ("default", "title")}
            text = comments.get(dotted, "")
            now = value_at(dotted)
            note = f"{text} (params.yaml: {now!r})" if text else f"params.yaml: {now!r}"
            leaf["title"] = dotted
            leaf["description"] = note[:MAX_DESCRIPTION]
            props[dotted] = leaf

    walk(full, "")
    return props


def overrides_json_schema(model: type[BaseModel], params_file: Path) -> dict[str, Any]:
    """`json_schema_extra` of the `overrides` parameter: every key, no defaults, no other key."""
    return {"properties": overrides_properties(model, params_file), "additionalProperties": False}
