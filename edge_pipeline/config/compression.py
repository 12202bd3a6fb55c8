"""TEMPORARY permissive sections (compression); replaced by the typed schema."""

from pydantic import ConfigDict

from edge_pipeline.config.base import Section


class Prune(Section):
    model_config = ConfigDict(extra="allow", frozen=True)


class Qat(Section):
    model_config = ConfigDict(extra="allow", frozen=True)


class Export(Section):
    model_config = ConfigDict(extra="allow", frozen=True)
