"""params.yaml `register`: MLflow registry promotion (tasks/register.py)."""

from __future__ import annotations

from pydantic import Field

from edge_pipeline.config.base import Section


class Register(Section):
    """Champion/challenger rule of edge_pipeline/registry/promotion.py."""

    # registered model; the chosen edge model becomes alias `challenger`
    model_name: str = Field("edge-classifier", min_length=1)
    # promote to `champion` if accuracy >= champion's - this many points (and gates pass)
    tolerance_pts: float = Field(0.5, ge=0)
    # ALERT when accuracy is more than this % (relative) below the champion's
    alert_drop_pct: float = Field(5.0, ge=0)
