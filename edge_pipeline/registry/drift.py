"""Drift: the champion scored on the images that are new tonight, against its accuracy at promotion.

The champion never saw tonight's new images (they arrived after it was trained), so its accuracy on
them is an honest estimate of how it serves tonight's data. The reference is the accuracy the
champion version was registered with (its `accuracy` tag: the test split of its own night); a
version without that tag is compared with its accuracy on today's test split.

The alert follows issue 12's rule: accuracy on the new images more than `alert_drop_pct` percent
(relative) below the reference. A handful of new images says little (one image of five is 20
points), so below `drift_min_images` the check reports the figure and does not alert; the report
gives the 95% Wilson interval of the new-image accuracy either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPS = 1e-9  # float slack: a drop of exactly the threshold does not alert


def drift_check(
    correct: np.ndarray,
    *,
    reference: float,
    reference_kind: str,
    alert_drop_pct: float,
    min_images: int,
) -> dict[str, Any]:
    """The drift figures of the champion on N new images.

    Args:
        correct: bool (N,), True where the champion predicts an image's label.
        reference: the champion's accuracy in [0, 1] that tonight is compared with.
        reference_kind: where `reference` comes from (`at promotion` or `today's test split`).
        alert_drop_pct: relative drop (percent) above which the check alerts.
        min_images: fewest new images the check alerts on.

    Returns:
        {"n", "accuracy", "ci95": [low, high], "reference", "reference_kind", "drop_pct",
        "alert", "reason"} (accuracy, ci95 and drop_pct are None when N = 0).
    """
    from statsmodels.stats.proportion import proportion_confint

    n = int(len(correct))
    out: dict[str, Any] = {
        "n": n, "accuracy": None, "ci95": None, "reference": reference,
        "reference_kind": reference_kind, "drop_pct": None, "alert": False, "reason": "",
    }  # fmt: skip
    if n == 0:
        out["reason"] = "no new images tonight"
        return out
    k = int(np.count_nonzero(correct))
    acc = k / n
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    drop_pct = (reference - acc) / reference * 100 if reference > 0 else 0.0
    out |= {"accuracy": acc, "ci95": [float(low), float(high)], "drop_pct": drop_pct}
    figure = (
        f"the champion's accuracy on {n} new images is {acc:.2%} (95% CI {low:.0%}-{high:.0%}), "
        f"{abs(drop_pct):.1f}% {'below' if drop_pct > 0 else 'above'} its {reference:.2%} "
        f"{reference_kind}"
    )
    if drop_pct <= alert_drop_pct + EPS:
        out["reason"] = f"no drift: {figure}"
    elif n < min_images:
        out["reason"] = (
            f"too few new images to call drift: {figure}; the alert needs at least {min_images} "
            "(register.drift_min_images)"
        )
    else:
        out |= {"alert": True, "reason": f"drift: {figure} (alert threshold {alert_drop_pct:g}%)"}
    return out
