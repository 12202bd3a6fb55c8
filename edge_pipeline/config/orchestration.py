"""TEMPORARY permissive sections (orchestration); replaced by the typed schema."""

from pydantic import ConfigDict

from edge_pipeline.config.base import Section


class Orchestration(Section):
    model_config = ConfigDict(extra="allow", frozen=True)
