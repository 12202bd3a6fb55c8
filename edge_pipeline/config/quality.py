"""TEMPORARY permissive sections (quality); replaced by the typed schema."""

from pydantic import ConfigDict

from edge_pipeline.config.base import Section


class Demo(Section):
    model_config = ConfigDict(extra="allow", frozen=True)


class Ingest(Section):
    model_config = ConfigDict(extra="allow", frozen=True)


class Agreement(Section):
    model_config = ConfigDict(extra="allow", frozen=True)


class Clean(Section):
    model_config = ConfigDict(extra="allow", frozen=True)


class Split(Section):
    model_config = ConfigDict(extra="allow", frozen=True)


class Resample(Section):
    model_config = ConfigDict(extra="allow", frozen=True)
