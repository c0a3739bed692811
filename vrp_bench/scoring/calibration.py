"""Calibration error without the small-sample floor: a debiased binned L2 ECE and a calibrated reference.

Why the raw binned ECE is biased upward. With d_i = y_i - p_i and n_b samples in bin b, the raw ECE is
sum_b (n_b / n) |mean_{i in b} d_i|. Even for a perfectly calibrated probability (E[y_i | p_i] = p_i,
so E[d_i] = 0) every bin mean is noise with standard deviation sqrt(mean_b p (1 - p) / n_b), and its
absolute value has expectation about sqrt(2 / pi) times that: the raw ECE is O(sqrt(n_bins / n)) when the
truth is 0 (0.04 - 0.13 on 150 samples in 15 bins), and its percentile bootstrap CI, which only measures
spread around that inflated value, almost never contains 0. The squared gap has the same problem in
closed form: E[(mean_{i in b} d_i)^2] = (mean_{i in b} g_i)^2 + sum_{i in b} Var(d_i) / n_b^2, with
g_i = E[y_i | p_i] - p_i; the second term is the 1/n noise floor.

What this module estimates. Following the debiased estimator of Kumar, Liang & Ma (2019, "Verified
uncertainty calibration"), which subtracts a variance estimate from the plug-in squared gap, we use its
exact U-statistic form: the square of the bin's mean gap is estimated by the mean of d_i d_j over pairs
of *distinct* samples i != j of the bin. Samples are independent given their probabilities, so
E[d_i d_j] = g_i g_j and E[U_b] = sum_{i != j in b} g_i g_j / (n_b (n_b - 1)) exactly: 0 for a perfectly
calibrated probability (the estimate can then be negative) and e^2 for a constant gap e. Summed over
bins with weights n_b / n this is the squared binned L2 calibration error, sum_b (n_b / n) gap_b^2,
without the noise floor. Its percentile bootstrap CI covers 0 when the probability is calibrated, and
conservatively so: at 0 the U-statistic is degenerate and a resample's bins have gaps of order 1/sqrt(n_b)
instead of 0, so resampling overstates the spread there (coverage of 0 measured at 0.99 - 1.00 for
n = 150 - 500). It is also noisy at small n: a gap of 0.15 (squared 0.0225) against a sampling sd of
about 0.012 at n = 150 in 15 bins is excluded from 0 in about a third of the cases, nearly always at n = 500.

``expected_ece_if_calibrated`` gives the other half of the picture for the raw ECE: by consistency
resampling (Broecker & Smith 2007, "Increasing the reliability of reliability diagrams") the raw ECE that
a perfectly calibrated probability would show on the same p values, to print beside the raw ECE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vrp_bench.scoring import statistics
from vrp_bench.scoring.bootstrap import CONFIDENCE, N_RESAMPLES, percentile_ci, resample_weights
from vrp_bench.scoring.statistics import MIN_SAMPLES, ArrayLike, UndefinedStatistic
from vrp_bench.scoring.stratified import stratum_indices
from vrp_bench.scoring.tally import EceStrategy, Tally

REFERENCE_BAND = (0.025, 0.975)  # quantiles of the calibrated reference ECE reported as its band


def uniform_bins(probability: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index of each probability: bins [j/B, (j+1)/B), the last closed at 1 (as ``Tally.ece`` "uniform")."""
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.searchsorted(inner_edges, probability, side="right")


def debiased_squared_calibration_error(
    probability: np.ndarray,
    correct: np.ndarray,
    weights: np.ndarray | None = None,
    n_bins: int = 15,
) -> np.ndarray:
    """Unbiased estimate of the squared binned L2 calibration error, one per weighting: float [B].

    Bins as ``uniform_bins``. With d_i = y_i - p_i and multiplicities w_i (``weights`` [B, n], e.g.
    bootstrap counts; default one row of ones, B = 1), per bin b:
        S1_b = sum w_i d_i,  S2_b = sum w_i^2 d_i^2,  N_b = sum w_i,  Q_b = sum w_i^2,
        U_b = (S1_b^2 - S2_b) / (N_b^2 - Q_b) = sum_{i != j} w_i w_j d_i d_j / sum_{i != j} w_i w_j,
    the mean of d_i d_j over pairs of distinct samples (a sample is never paired with itself nor with its
    bootstrap copies, so duplicates do not inflate resamples). The estimate is
        sum_b (N_b / N) U_b,  N = sum_b N_b,
    where a bin without two distinct samples (N_b^2 = Q_b) contributes 0; NaN if no bin has such a pair.
    Its expectation is 0 under perfect calibration (values can be negative) and e^2 for a constant gap e.
    """
    p = np.asarray(probability, dtype=float)
    return _squared_error(uniform_bins(p, n_bins), np.asarray(correct, dtype=float) - p, weights, 1, n_bins)


def debiased_l2_ece_entry(
    probability: ArrayLike,
    correct: ArrayLike,
    *,
    seed: int,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    n_bins: int = 15,
    min_samples: int = MIN_SAMPLES,
    strata: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, Any]:
    """The debiased L2 ECE as a JSON-ready entry (keys of ``signal_quality.undefined_entry`` plus
    ``squared`` and ``binning``).

    ``squared`` = U, the estimate of ``debiased_squared_calibration_error``; ``value`` = sqrt(max(U, 0));
    ``ci`` = the percentile interval of U over ``n_resamples`` seeded bootstrap resamples mapped through
    sqrt(max(., 0)), so its lower bound is 0 exactly when the interval of U reaches 0 or below. With
    ``strata`` (one label per sample, e.g. task names) each stratum s is binned on its own and
    U = sum_s n_s U_s / sum_s n_s over the strata where U_s is defined, the sample-weighted mean of the
    strata's estimates (as ``stratified``; sqrt taken after the mean), and the bootstrap resamples within
    each stratum (``resample_weights(..., strata=...)``: every resample keeps every stratum's size).
    Invalid labels or shapes raise ValueError; fewer than ``min_samples`` samples, NaN or values outside
    [0, 1] (as ``statistics.probability_tally``), or no bin with two samples give a null value and a
    ``reason``."""
    p, y = statistics.as_samples(probability, correct)
    n = len(p)
    binning = statistics.ece_binning(n_bins, "uniform")
    labels = np.zeros(n, dtype=int) if strata is None else np.asarray(strata)
    if labels.shape != (n,):
        raise ValueError(f"strata must hold one label per sample, got shape {labels.shape} for {n} samples")
    distinct, stratum_of_sample = np.unique(labels, return_inverse=True)
    if strata is not None:
        binning += f", within each of {len(distinct)} strata"
    try:
        _require_probabilities(p, min_samples)
    except UndefinedStatistic as undefined:
        return _entry(None, None, None, n, None, undefined.reason, binning)
    cells = stratum_of_sample * n_bins + uniform_bins(p, n_bins)
    gap = y - p
    squared = float(_squared_error(cells, gap, None, len(distinct), n_bins)[0])
    if np.isnan(squared):
        return _entry(None, None, None, n, None, f"no bin holds two samples ({binning})", binning)
    weights = resample_weights(n, n_resamples, seed, strata=labels)
    ci = percentile_ci(_squared_error(cells, gap, weights, len(distinct), n_bins), confidence)
    interval = None if ci.interval is None else [_root(bound) for bound in ci.interval]
    return _entry(_root(squared), squared, interval, n, ci.n_undefined, ci.reason, binning)


def expected_ece_if_calibrated(
    probability: ArrayLike,
    *,
    n_bins: int = 15,
    strategy: EceStrategy = "uniform",
    n_draws: int = 200,
    seed: int,
    strata: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Consistency resampling (Broecker & Smith 2007): the raw ECE (``Tally.ece``, same binning) of
    ``n_draws`` label sets y*_i ~ Bernoulli(p_i), i.e. what a perfectly calibrated probability shows on
    these p values. With ``strata`` each draw's ECE is the sample-weighted mean of the strata's ECEs (as the
    within-task raw ECE). Returns {"mean": mean ECE*, "band": [q_2.5%, q_97.5%] of ECE*, "n_draws": n_draws}."""
    p = np.asarray(probability, dtype=float)
    if p.ndim != 1 or len(p) == 0 or not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probability must be a non-empty 1-D array of finite values in [0, 1]")
    drawn = (np.random.default_rng(seed).random((n_draws, len(p))) < p).astype(float)
    draws = np.zeros(n_draws)
    for idx in stratum_indices(strata, len(p)):
        # One tally row per draw: its correct weight per distinct value is the number of y* = 1 there.
        per_value = Tally.from_samples(p[idx], np.ones(len(idx)), drawn[:, idx])
        weight = Tally.from_samples(p[idx], np.ones(len(idx))).weight
        draws += len(idx) / len(p) * Tally(per_value.values, per_value.correct, weight - per_value.correct).ece(
            n_bins, strategy)
    return {"mean": float(draws.mean()), "band": np.quantile(draws, REFERENCE_BAND).tolist(), "n_draws": n_draws}


def _squared_error(
    cells: np.ndarray, gap: np.ndarray, weights: np.ndarray | None, n_strata: int, n_bins: int
) -> np.ndarray:
    """Per weighting, float [B]: sum_s N_s E_s / sum_s N_s over the strata s where E_s is defined, with
    E_s = sum_b (N_sb / N_s) U_sb the estimate of ``debiased_squared_calibration_error`` inside stratum s
    (defined when one of its bins has two distinct samples); NaN where no stratum is defined. Since a
    bin without a pair has U_sb = 0 this is sum_{s,b} N_sb U_sb / sum_{s defined} N_s. ``cells`` int [n]
    is stratum * n_bins + bin, ``gap`` d [n], ``weights`` [B, n] (default one row of ones)."""
    w = np.ones((1, len(gap))) if weights is None else np.asarray(weights, dtype=float)
    rows = w.shape[0]
    flat = (np.arange(rows)[:, None] * n_strata * n_bins + cells).ravel()

    def per_cell(x: np.ndarray) -> np.ndarray:
        summed = np.bincount(flat, weights=x.ravel(), minlength=rows * n_strata * n_bins)
        return summed.reshape(rows, n_strata, n_bins)

    total = per_cell(w)
    pairs = total**2 - per_cell(w**2)
    has_pair = pairs > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(has_pair, (per_cell(w * gap) ** 2 - per_cell((w * gap) ** 2)) / pairs, 0.0)
        defined_weight = np.sum(np.where(has_pair.any(axis=2), total.sum(axis=2), 0.0), axis=1)
        return np.where(defined_weight > 0, np.sum(total * u, axis=(1, 2)) / defined_weight, np.nan)


def _require_probabilities(p: np.ndarray, min_samples: int) -> None:
    """UndefinedStatistic unless there are min_samples finite probabilities in [0, 1]."""
    if len(p) < min_samples:
        raise UndefinedStatistic(f"n = {len(p)} samples, fewer than min_samples = {min_samples}")
    if np.isnan(p).any():
        raise UndefinedStatistic(f"probability is NaN for {int(np.isnan(p).sum())} of {len(p)} samples")
    if (p < 0).any() or (p > 1).any():
        raise UndefinedStatistic(f"not a probability: values must lie in [0, 1], got range [{p.min():g}, {p.max():g}]")


def _root(squared: float) -> float:
    """sqrt(max(squared, 0)): the L2 scale of a squared estimate that may be negative."""
    return float(np.sqrt(max(squared, 0.0)))


def _entry(
    value: float | None,
    squared: float | None,
    ci: list[float] | None,
    n: int,
    n_undefined: int | None,
    reason: str | None,
    binning: str,
) -> dict[str, Any]:
    """One statistic entry in the shape of ``signal_quality`` (value, ci, n, n_undefined_resamples, reason)."""
    return {
        "value": value, "squared": squared, "ci": ci, "n": n, "n_undefined_resamples": n_undefined,
        "reason": reason, "binning": binning,
    }
