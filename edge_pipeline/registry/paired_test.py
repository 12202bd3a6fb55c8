"""McNemar's exact test on the paired predictions of the champion and the challenger.

Both models predict the same N test images. Only the discordant images carry evidence: b where
only the champion is right, c where only the challenger is right. Under "equally accurate" each
discordant image is a fair coin, so b ~ Binomial(b + c, 1/2).

- `p_worse` (the decision's p-value) is one-sided: P(B >= b), small when the challenger is worse.
- `p_two_sided` is statsmodels' `mcnemar(..., exact=True)`, reported next to it.
- Power rule: with n = b + c discordant images the smallest possible one-sided p-value is
  0.5 ** n (b = n, c = 0). When 0.5 ** n >= alpha no outcome could show the challenger worse, so
  there are not enough test images to tell: `min_discordant(alpha)` is the smallest n with
  0.5 ** n < alpha (5 at alpha = 0.05).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedTest:
    """Counts over the N paired test images and the exact McNemar p-values."""

    n_images: int
    both_right: int
    champion_only: int  # b: the champion right, the challenger wrong
    challenger_only: int  # c: the challenger right, the champion wrong
    both_wrong: int
    p_worse: float  # one-sided P(B >= b | b + c), B ~ Binomial(b + c, 1/2)
    p_two_sided: float  # statsmodels mcnemar(exact=True)
    alpha: float
    min_discordant: int  # the test can reach p < alpha only from this many discordant images

    @property
    def n_discordant(self) -> int:
        return self.champion_only + self.challenger_only

    @property
    def has_power(self) -> bool:
        """Whether any split of the discordant images could show the challenger worse."""
        return self.n_discordant >= self.min_discordant

    @property
    def significantly_worse(self) -> bool:
        return self.p_worse < self.alpha


def min_discordant(alpha: float) -> int:
    """Smallest n with 0.5 ** n < alpha: below it, even b = n, c = 0 is not significant."""
    return math.floor(math.log2(1 / alpha)) + 1


def mcnemar_exact(
    champion_right: np.ndarray, challenger_right: np.ndarray, *, alpha: float
) -> PairedTest:
    """The paired test of two boolean arrays (N,): whether each model got image i right."""
    from scipy.stats import binomtest
    from statsmodels.stats.contingency_tables import mcnemar

    old = np.asarray(champion_right, dtype=bool)
    new = np.asarray(challenger_right, dtype=bool)
    if old.shape != new.shape or old.ndim != 1:
        raise ValueError(f"paired predictions need equal 1-D shapes, got {old.shape}, {new.shape}")
    both, b = int((old & new).sum()), int((old & ~new).sum())
    c, neither = int((~old & new).sum()), int((~old & ~new).sum())
    table = [[both, b], [c, neither]]
    p_worse = binomtest(b, b + c, 0.5, alternative="greater").pvalue if b + c else 1.0
    return PairedTest(
        n_images=len(old), both_right=both, champion_only=b, challenger_only=c,
        both_wrong=neither, p_worse=float(p_worse),
        p_two_sided=float(mcnemar(table, exact=True).pvalue), alpha=alpha,
        min_discordant=min_discordant(alpha),
    )  # fmt: skip
