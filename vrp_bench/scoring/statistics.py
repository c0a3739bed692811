"""How well a signal predicts correctness: one function per statistic, on plain arrays.

``signal`` s is oriented so that higher means "more likely correct"; ``correct`` y is 0/1. The
formulas (and tie handling) are in the docstrings of ``Tally``, which computes each of them once for
both the point estimate and the bootstrap. A statistic that is undefined for the data raises
``UndefinedStatistic`` with the reason; no function ever substitutes a value such as 0.5.

Ranking statistics (AUROC ... selective accuracy) are undefined when n < min_samples, s has a NaN,
all samples are in one class, or s is constant. A constant signal is refused even where a tie rule
would give a number (AUROC 0.5, PRR 0): a signal that cannot rank the samples is reported as such,
never as chance. Calibration statistics (ECE, Brier) need finite probabilities in [0, 1] and
n >= min_samples; one class is allowed there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats

from vrp_bench.scoring.tally import EceStrategy, Tally

MIN_SAMPLES = 10

ArrayLike = Sequence[float] | np.ndarray

_BINNING = {
    "uniform": "{} equal-width bins on [0, 1]",
    "quantile": "{} equal-mass bins by rank (tied probabilities share a bin)",
}


class UndefinedStatistic(Exception):
    """A statistic has no value for these data; ``reason`` says why (for reports). Not a ValueError:
    invalid input (labels other than 0/1, probabilities outside [0, 1]) raises ValueError instead."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Correlation(NamedTuple):
    statistic: float
    pvalue: float


def binary_labels(correct: Sequence[int | bool] | np.ndarray) -> np.ndarray:
    """Correctness as a 1-D float array of 0/1 (ValueError for anything else)."""
    y = np.asarray(correct)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ValueError("correct must be 1-D and hold only 0/1 (or False/True)")
    return y.astype(float)


def as_samples(signal: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Float signal and 0/1 correctness as 1-D arrays of equal length (ValueError otherwise)."""
    s, y = np.asarray(signal, dtype=float), binary_labels(correct)
    if s.ndim != 1 or len(s) != len(y):
        raise ValueError(f"signal must be 1-D with one value per sample, got shape {s.shape} for {len(y)} samples")
    return s, y


def ranking_tally(signal: ArrayLike, correct: ArrayLike, *, min_samples: int = MIN_SAMPLES) -> Tally:
    """The tally of (s, y) for a ranking statistic; UndefinedStatistic when it cannot rank."""
    s, y = as_samples(signal, correct)
    _require_enough(len(s), min_samples)
    if np.isnan(s).any():
        raise UndefinedStatistic(f"signal is NaN for {int(np.isnan(s).sum())} of {len(s)} samples")
    if y.min() == y.max():
        label = "correct" if y[0] else "wrong"
        raise UndefinedStatistic(f"all {len(y)} samples are {label}: one class only")
    if s.min() == s.max():
        raise UndefinedStatistic(f"signal is constant ({s[0]:g}) over all {len(s)} samples: it cannot rank them")
    return Tally.from_samples(s, y)


def probability_tally(probability: ArrayLike, correct: ArrayLike, *, min_samples: int = MIN_SAMPLES) -> Tally:
    """The tally of (p, y) for a calibration statistic; undefined if p leaves [0, 1] (not a probability)."""
    p, y = as_samples(probability, correct)
    _require_enough(len(p), min_samples)
    if np.isnan(p).any():
        raise UndefinedStatistic(f"probability is NaN for {int(np.isnan(p).sum())} of {len(p)} samples")
    if (p < 0).any() or (p > 1).any():
        raise UndefinedStatistic(f"not a probability: values must lie in [0, 1], got range [{p.min():g}, {p.max():g}]")
    return Tally.from_samples(p, y)


def _require_enough(n: int, min_samples: int) -> None:
    if n < min_samples:
        raise UndefinedStatistic(f"n = {n} samples, fewer than min_samples = {min_samples}")


def correlation_pvalue(r: float, n: int) -> float:
    """Two-sided p-value of H0: rho = 0 from t = r sqrt((n - 2) / (1 - r^2)), t ~ Student t(n - 2)
    (as scipy's pearsonr / pointbiserialr / spearmanr)."""
    if abs(r) >= 1.0:
        return 0.0
    t = r * np.sqrt((n - 2) / (1.0 - r * r))
    return float(2.0 * stats.t.sf(abs(t), n - 2))


def auroc(signal: ArrayLike, correct: ArrayLike, *, min_samples: int = MIN_SAMPLES) -> float:
    """AUROC = P(s_correct > s_wrong) + P(s_correct = s_wrong) / 2 over all (correct, wrong) pairs."""
    return float(ranking_tally(signal, correct, min_samples=min_samples).auroc()[0])


def auprc(signal: ArrayLike, correct: ArrayLike, *, min_samples: int = MIN_SAMPLES) -> float:
    """Average precision AP = sum_t (R_t - R_{t-1}) P_t over thresholds s >= t at the distinct values
    (sklearn's average_precision_score). Its chance level is the positive rate: report it beside."""
    return float(ranking_tally(signal, correct, min_samples=min_samples).auprc()[0])


def point_biserial(signal: ArrayLike, correct: ArrayLike, *, min_samples: int = MIN_SAMPLES) -> Correlation:
    """Point-biserial r = Pearson r(s, y) = (mean_1 - mean_0) / sd_s * sqrt(N1 N0 / n^2) (sd with ddof 0),
    with its two-sided t-test p-value; undefined if s has an infinite value."""
    tally = ranking_tally(signal, correct, min_samples=min_samples)
    if not np.isfinite(tally.values).all():
        raise UndefinedStatistic("signal has infinite values: Pearson correlation is undefined")
    r = float(tally.point_biserial_r()[0])
    return Correlation(r, correlation_pvalue(r, int(tally.n[0])))


def spearman(signal: ArrayLike, correct: ArrayLike, *, min_samples: int = MIN_SAMPLES) -> Correlation:
    """Spearman rho = Pearson r of the tie-averaged ranks of s and y, with its two-sided t-test p-value."""
    tally = ranking_tally(signal, correct, min_samples=min_samples)
    rho = float(tally.spearman_rho()[0])
    return Correlation(rho, correlation_pvalue(rho, int(tally.n[0])))


def prr(signal: ArrayLike, correct: ArrayLike, *, min_samples: int = MIN_SAMPLES) -> float:
    """Prediction-rejection ratio (LM-Polygraph): reject in order of increasing s. With A(k) the accuracy
    of the k highest-s samples (ties: expected over random orderings) and AR = (1/n) sum_{k=1}^{n} A(k)
    the area under accuracy vs rejection rate 1 - k/n,
    PRR = (AR - AR_random) / (AR_oracle - AR_random), AR_random = N1/n,
    AR_oracle = (1/n) (N1 + sum_{k=N1+1}^{n} N1/k). Random = 0, oracle = 1, reversed ranking < 0."""
    return float(ranking_tally(signal, correct, min_samples=min_samples).prr()[0])


def aurc(signal: ArrayLike, correct: ArrayLike, *, min_samples: int = MIN_SAMPLES) -> float:
    """Area under the risk-coverage curve, AURC = (1/n) sum_{k=1}^{n} (1 - A(k)) with A(k) as in ``prr``
    (risk at coverage k/n = error rate of the k highest-s samples). Lower is better."""
    return float(ranking_tally(signal, correct, min_samples=min_samples).aurc()[0])


def selective_accuracy(
    signal: ArrayLike, correct: ArrayLike, coverage: float, *, min_samples: int = MIN_SAMPLES
) -> float:
    """Accuracy of the k = ceil(coverage * n) highest-s samples. A tie group straddling the cut counts
    with its expected share (its accuracy times the number of its samples kept), i.e. ties broken at random
    in expectation."""
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must lie in (0, 1], got {coverage}")
    return float(ranking_tally(signal, correct, min_samples=min_samples).selective_accuracy(coverage)[0])


def ece(
    probability: ArrayLike,
    correct: ArrayLike,
    n_bins: int = 15,
    strategy: EceStrategy = "uniform",
    *,
    min_samples: int = MIN_SAMPLES,
) -> float:
    """Expected calibration error ECE = sum_b (n_b / N) |acc_b - conf_b|, acc_b = mean y and conf_b = mean p
    in bin b. "uniform": n_bins equal-width bins [j/B, (j+1)/B), the last closed at 1. "quantile":
    n_bins equal-mass bins by rank (the sample at sorted position i goes to bin floor(B i / N); tied
    probabilities share the bin of the first of them). Empty bins contribute 0."""
    return float(probability_tally(probability, correct, min_samples=min_samples).ece(n_bins, strategy)[0])


def ece_binning(n_bins: int, strategy: EceStrategy) -> str:
    """The binning of ``ece`` in words, for reports."""
    if strategy not in _BINNING:
        raise ValueError(f"ECE strategy must be one of {sorted(_BINNING)}, not {strategy!r}")
    return _BINNING[strategy].format(n_bins)


def brier(probability: ArrayLike, correct: ArrayLike, *, min_samples: int = MIN_SAMPLES) -> float:
    """Brier score = (1/N) sum_i (p_i - y_i)^2."""
    return float(probability_tally(probability, correct, min_samples=min_samples).brier()[0])
