"""TEMPORARY permissive sections (teacher); replaced by the typed schema."""

from pydantic import ConfigDict

from edge_pipeline.config.base import Section


class Train(Section):
    model_config = ConfigDict(extra="allow", frozen=True)
