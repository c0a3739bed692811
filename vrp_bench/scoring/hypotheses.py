"""Hypothesis tests on bootstrap replicates, and multiplicity corrections.

A bootstrap p-value here is the dual of the percentile interval: H0 "theta <= theta0" is rejected at
level alpha exactly when theta0 lies below the alpha-quantile of the replicates, so
p(theta > theta0) = (1 + #{theta* <= theta0}) / (B + 1) over the B defined replicates (the +1 keeps
p > 0 with finitely many resamples). From it:

- two-sided "no effect": p = min(1, 2 min(p(theta > theta0), p(theta < theta0)));
- equivalence (TOST, Schuirmann 1987) within theta0 +/- margin:
  p = max(p(theta > theta0 - margin), p(theta < theta0 + margin)): small only when the whole interval
  lies inside the margin, so "not significant" is never read as "no effect";
- beyond the margin: p = min(1, 2 min(p(theta > theta0 + margin), p(theta < theta0 - margin))).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def p_greater(replicates: np.ndarray, threshold: float) -> float | None:
    """Bootstrap p-value of H1: theta > threshold (None when no replicate is defined)."""
    defined = replicates[~np.isnan(replicates)]
    if not len(defined):
        return None
    return float((1 + np.sum(defined <= threshold)) / (len(defined) + 1))


def p_less(replicates: np.ndarray, threshold: float) -> float | None:
    """Bootstrap p-value of H1: theta < threshold (None when no replicate is defined)."""
    return p_greater(-replicates, -threshold)


def effect_tests(replicates: np.ndarray, null: float, margin: float) -> dict[str, float | None]:
    """The three tests of the module docstring for one statistic's replicates around ``null``."""
    if np.isnan(replicates).all():
        return {"p_value": None, "p_equivalent": None, "p_beyond_margin": None}
    return {
        "p_value": min(1.0, 2 * min(p_greater(replicates, null), p_less(replicates, null))),
        "p_equivalent": max(p_greater(replicates, null - margin), p_less(replicates, null + margin)),
        "p_beyond_margin": min(1.0, 2 * min(p_greater(replicates, null + margin), p_less(replicates, null - margin))),
    }


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm (1979) step-down adjusted p-values: sort the m defined p-values ascending,
    p_adj(i) = max_{j <= i} min(1, (m - j + 1) p_(j)). Controls the family-wise error rate; None stays None."""
    return _adjusted(p_values, lambda p, rank, m: (m - rank) * p, step_down=True)


def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg (1995) adjusted p-values: p_adj(i) = min_{j >= i} min(1, m p_(j) / j) over the
    m defined p-values sorted ascending. Controls the false discovery rate; None stays None."""
    return _adjusted(p_values, lambda p, rank, m: m * p / (rank + 1), step_down=False)


def _adjusted(
    p_values: Sequence[float | None], scale: Callable[[float, int, int], float], *, step_down: bool
) -> list[float | None]:
    present = [i for i, p in enumerate(p_values) if p is not None]
    m = len(present)
    order = sorted(present, key=lambda i: p_values[i])
    scaled = np.array([min(1.0, scale(p_values[i], rank, m)) for rank, i in enumerate(order)])
    monotone = np.maximum.accumulate(scaled) if step_down else np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted: list[float | None] = [None] * len(p_values)
    for i, value in zip(order, monotone):
        adjusted[i] = float(value)
    return adjusted
