"""TEMPORARY permissive sections (edge); replaced by the typed schema."""

from pydantic import ConfigDict

from edge_pipeline.config.base import Section


class Benchmark(Section):
    model_config = ConfigDict(extra="allow", frozen=True)
