"""The params schema is the one source of every default, and it rejects mistakes by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge_pipeline.config import Params, apply_overrides, load_params, load_section
from edge_pipeline.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
RAW = yaml.safe_load((REPO / "params.yaml").read_text())


def _leaves(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_leaves(v, f"{key}."))
        else:
            out[key] = v
    return out


def test_params_yaml_states_exactly_the_schema_defaults() -> None:
    """Every key of params.yaml is in the schema, every schema key is in params.yaml, and each
    value is the schema's default: a default stated twice cannot drift."""
    shipped = _leaves(load_params(REPO / "params.yaml").model_dump(mode="json"))
    defaults = _leaves(Params().model_dump(mode="json"))
    raw = _leaves(RAW)
    assert sorted(raw) == sorted(defaults), set(raw) ^ set(defaults)
    diffs = {k: (shipped[k], defaults[k]) for k in defaults if shipped[k] != defaults[k]}
    assert not diffs, f"params.yaml value != schema default: {diffs}"


@pytest.mark.parametrize(
    ("section", "key", "close"),
    [
        ("prune", "target_sparsty", "target_sparsity"),
        ("train", "epoch", "epochs"),
        ("clean", "polcy", "policy"),
        ("benchmark", "choose_bi", "choose_by"),
    ],
)
def test_a_misspelt_key_names_the_closest_valid_one(
    tmp_path: Path, section: str, key: str, close: str
) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw[section][key] = raw[section].get(close)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(
        ConfigError, match=rf"{section}\.{key}: not an option; did you mean {close}"
    ):
        load_section(section, path)
    with pytest.raises(ConfigError, match=rf"{section}\.{key}"):
        load_params(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"train.epochs": "many"}, r"train\.epochs='many'"),
        ({"split.seed": -5}, r"split\.seed=-5"),
        ({"register.tolerance_pts": "x"}, r"register\.tolerance_pts='x'"),
        ({"prune.target_sparsity": 1.5}, r"prune\.target_sparsity=1\.5"),
        ({"agreement.policy": "maybe"}, r"agreement\.policy='maybe'"),
    ],
)
def test_a_wrong_value_fails_before_anything_runs(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RAW, override)


def test_an_override_of_a_valid_key_is_applied() -> None:
    before = RAW["train"]["epochs"]
    out = apply_overrides(RAW, {"train.epochs": before + 1})
    assert out["train"]["epochs"] == before + 1
    assert RAW["train"]["epochs"] == before  # the input mapping is not modified
    assert load_params(raw=out).train.epochs == before + 1


def test_a_missing_section_takes_the_schema_defaults(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochs": 2}}))
    assert load_section("train", path).epochs == 2
    assert load_section("prune", path) == Params().prune
