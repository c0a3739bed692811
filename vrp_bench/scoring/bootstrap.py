"""Seeded percentile bootstrap, vectorised over resamples.

A resample draws n units (samples, or groups such as docs; within each task when stratified) uniformly
with replacement; it is held as integer multiplicities per sample, so one ``Tally`` of shape [B, K]
carries all B resamples and every statistic is computed for all of them at once (no per-resample sort).
The CI is the percentile interval [q_(1-c)/2, q_(1+c)/2] of the statistic over the resamples where it
is defined; undefined resamples (NaN) are skipped and counted, and if more than
``max_undefined_fraction`` of them are undefined there is no CI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

N_RESAMPLES = 1000
CONFIDENCE = 0.95
MAX_UNDEFINED_FRACTION = 0.05


class PercentileCI(NamedTuple):
    interval: list[float] | None  # [lo, hi], None when too many resamples are undefined
    n_resamples: int
    n_undefined: int
    reason: str | None


def resample_weights(
    n_samples: int,
    n_resamples: int,
    seed: int,
    groups: Sequence[Any] | np.ndarray | None = None,
    strata: Sequence[Any] | np.ndarray | None = None,
) -> np.ndarray:
    """Multiplicity of each sample in each resample, int [n_resamples, n_samples]. Without ``groups``
    samples are drawn; with ``groups`` (one id per sample) the G distinct groups are drawn G times
    and a drawn group brings all its samples (cluster bootstrap). With ``strata`` (one label per
    sample, e.g. its task) each stratum is resampled on its own, so every resample keeps each
    stratum's size (stratified bootstrap); a group must not span strata."""
    rng = np.random.default_rng(seed)
    group_ids = np.arange(n_samples) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    stratum_ids = np.zeros(n_samples, int) if strata is None else np.unique(np.asarray(strata), return_inverse=True)[1]
    weights = np.zeros((n_resamples, n_samples), dtype=np.int64)
    for stratum in range(int(stratum_ids.max(initial=-1)) + 1):
        members = np.flatnonzero(stratum_ids == stratum)
        distinct, group_of_member = np.unique(group_ids[members], return_inverse=True)
        n_groups = len(distinct)
        draws = rng.integers(0, n_groups, size=(n_resamples, n_groups))
        draws += np.arange(n_resamples)[:, None] * n_groups
        counts = np.bincount(draws.ravel(), minlength=n_resamples * n_groups).reshape(n_resamples, n_groups)
        weights[:, members] = counts[:, group_of_member]
    return weights


def percentile_ci(
    replicates: np.ndarray,
    confidence: float = CONFIDENCE,
    max_undefined_fraction: float = MAX_UNDEFINED_FRACTION,
) -> PercentileCI:
    """Percentile interval of the defined (non-NaN) ``replicates``."""
    undefined = int(np.isnan(replicates).sum())
    total = len(replicates)
    if undefined > max_undefined_fraction * total:
        reason = (
            f"CI undefined: the statistic is undefined in {undefined} of {total} resamples "
            f"(more than {max_undefined_fraction:.0%})"
        )
        return PercentileCI(None, total, undefined, reason)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates[~np.isnan(replicates)], [tail, 1.0 - tail])
    return PercentileCI([float(low), float(high)], total, undefined, None)
