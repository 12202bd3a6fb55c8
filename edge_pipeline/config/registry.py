"""params.yaml `register`: MLflow registry promotion (tasks/register.py)."""

from __future__ import annotations

from pydantic import Field

from edge_pipeline.config.base import Section


class Register(Section):
    """Champion/challenger rule of edge_pipeline/registry/promotion.py.

    Both models are scored on the same, current test split in the same run; the rule sees their
    paired predictions (McNemar's exact test) and the accuracy difference.
    """

    # registered model; the chosen edge model becomes alias `challenger`
    model_name: str = Field("edge-classifier", min_length=1)
    # promote when accuracy >= champion's - this many points on the same test images (and gates
    # pass) ...
    tolerance_pts: float = Field(0.5, ge=0)
    # ... or when McNemar's exact test (one-sided) does not find the challenger worse at this level
    alpha: float = Field(0.05, gt=0, lt=1)
    # ALERT when accuracy is more than this % (relative) below the champion's
    alert_drop_pct: float = Field(5.0, ge=0)
    # ... and when the champion's accuracy on tonight's new images is that far below its accuracy
    # at promotion, if there are at least this many new images (fewer: reported, no alert)
    drift_min_images: int = Field(20, ge=1)
    timeout_s: float = Field(600, gt=0)  # per child process scoring a registered version
