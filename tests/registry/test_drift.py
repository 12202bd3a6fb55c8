"""edge_pipeline/registry/drift.py: the champion on tonight's new images against its accuracy at
promotion (issue 12 item 4)."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from edge_pipeline.registry.drift import drift_check

RULE = {"reference_kind": "at promotion (v3)", "alert_drop_pct": 5.0, "min_images": 20}


def right(k: int, n: int) -> np.ndarray:
    return np.arange(n) < k


def test_a_drop_beyond_the_threshold_alerts_with_figures() -> None:
    out = drift_check(right(36, 50), reference=0.9, **RULE)  # 72% vs 90%: 20% below
    assert out["alert"] and out["n"] == 50 and out["accuracy"] == pytest.approx(0.72)
    assert out["drop_pct"] == pytest.approx(20.0)
    assert out["ci95"] == pytest.approx(list(proportion_confint(36, 50, method="wilson")))
    assert out["reason"].startswith("drift: the champion's accuracy on 50 new images is 72.00%")
    assert "20.0% below its 90.00% at promotion (v3)" in out["reason"]


def test_within_the_threshold_or_better_does_not_alert() -> None:
    exactly = drift_check(right(171, 200), reference=0.9, **RULE)  # 85.5%: exactly 5% below
    assert not exactly["alert"] and exactly["drop_pct"] == pytest.approx(5.0)
    better = drift_check(right(48, 50), reference=0.9, **RULE)
    assert not better["alert"] and "above its 90.00%" in better["reason"]


def test_too_few_new_images_report_but_do_not_alert() -> None:
    out = drift_check(right(2, 5), reference=0.9, **RULE)  # 40% on 5 images
    assert not out["alert"] and out["accuracy"] == pytest.approx(0.4)
    assert out["reason"].startswith("too few new images to call drift")
    assert "register.drift_min_images" in out["reason"]


def test_no_new_images() -> None:
    out = drift_check(np.zeros(0, dtype=bool), reference=0.9, **RULE)
    assert out == out | {"n": 0, "accuracy": None, "alert": False}
    assert out["reason"] == "no new images tonight"
