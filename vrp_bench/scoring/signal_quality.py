"""Every statistic of one reliability signal with its bootstrap CI, as a JSON-ready dict.

Each statistic entry has the same keys: ``value``, ``ci`` ([lo, hi] percentile interval), ``n``,
``n_undefined_resamples`` and ``reason`` (why ``value`` or ``ci`` is null; null otherwise), plus
``p_value`` (r_pb, spearman), ``positive_rate`` (auprc), ``coverage`` (selective accuracy) or
``binning`` (ece). All statistics of one call share one set of bootstrap resamples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property, partial
from typing import Any

import numpy as np

from vrp_bench.scoring import statistics
from vrp_bench.scoring.bootstrap import (
    CONFIDENCE,
    MAX_UNDEFINED_FRACTION,
    N_RESAMPLES,
    bootstrap_tally,
    percentile_ci,
)
from vrp_bench.scoring.statistics import MIN_SAMPLES, Correlation, UndefinedStatistic
from vrp_bench.scoring.tally import EceStrategy, Tally

COVERAGES = (0.5, 0.8, 0.9)

PointStatistic = Callable[..., float | Correlation]
BatchedStatistic = Callable[[Tally], np.ndarray]

RANKING_STATISTICS: dict[str, tuple[PointStatistic, BatchedStatistic]] = {
    "auroc": (statistics.auroc, Tally.auroc),
    "auprc": (statistics.auprc, Tally.auprc),
    "r_pb": (statistics.point_biserial, Tally.point_biserial_r),
    "spearman": (statistics.spearman, Tally.spearman_rho),
    "prr": (statistics.prr, Tally.prr),
    "aurc": (statistics.aurc, Tally.aurc),
    **{
        f"selective_accuracy_{round(coverage * 100)}": (
            partial(statistics.selective_accuracy, coverage=coverage),
            partial(Tally.selective_accuracy, coverage=coverage),
        )
        for coverage in COVERAGES
    },
}


class _Scorer:
    """Point estimates and bootstrap CIs for one (signal, correct) pair; resamples drawn once, lazily."""

    def __init__(
        self,
        signal: np.ndarray,
        correct: np.ndarray,
        *,
        seed: int,
        n_resamples: int,
        confidence: float,
        min_samples: int,
        groups: np.ndarray | None,
    ) -> None:
        self.signal, self.correct = signal, correct
        self.seed, self.n_resamples, self.confidence = seed, n_resamples, confidence
        self.min_samples, self.groups = min_samples, groups

    @cached_property
    def resampled(self) -> Tally:
        return bootstrap_tally(
            self.signal, self.correct, n_resamples=self.n_resamples, seed=self.seed, groups=self.groups
        )

    def entry(self, point: PointStatistic, batched: BatchedStatistic) -> dict[str, Any]:
        n = len(self.signal)
        try:
            result = point(self.signal, self.correct, min_samples=self.min_samples)
        except UndefinedStatistic as undefined:
            return undefined_entry(n, undefined.reason)
        ci = percentile_ci(batched(self.resampled), self.confidence)
        value = result.statistic if isinstance(result, Correlation) else result
        entry = {
            "value": value, "ci": ci.interval, "n": n, "n_undefined_resamples": ci.n_undefined, "reason": ci.reason,
        }
        if isinstance(result, Correlation):
            entry["p_value"] = result.pvalue
        return entry


def undefined_entry(n: int, reason: str) -> dict[str, Any]:
    """The entry of a statistic that has no value."""
    return {"value": None, "ci": None, "n": n, "n_undefined_resamples": None, "reason": reason}


def oriented(values: np.ndarray, orientation: int, probability: bool) -> np.ndarray:
    """s = values for orientation +1; for -1, s = -values, or 1 - values for a probability (the
    probability of being wrong becomes that of being right). Both rank identically."""
    if orientation == 1:
        return values
    if orientation == -1:
        return 1.0 - values if probability else -values
    raise ValueError(f"orientation must be +1 or -1, got {orientation!r}")


def score_signal(
    values: Sequence[float | None] | np.ndarray,
    correct: Sequence[int | bool] | np.ndarray,
    orientation: int,
    *,
    probability: bool = False,
    seed: int,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    min_samples: int = MIN_SAMPLES,
    groups: Sequence[Any] | np.ndarray | None = None,
    n_bins: int = 15,
    ece_strategy: EceStrategy = "uniform",
) -> dict[str, Any]:
    """Score one signal: samples whose value is None (signal inapplicable) are dropped, the rest
    oriented (``oriented``) and scored by every ranking statistic; with ``probability=True`` also by
    ECE and Brier on the oriented probability. ``groups`` (one id per sample, e.g. image or doc ids)
    makes the bootstrap resample groups instead of samples."""
    labels = statistics.binary_labels(correct)
    if len(values) != len(labels):
        raise ValueError(f"{len(values)} signal values for {len(labels)} samples")
    present = np.array([v is not None for v in values], dtype=bool)
    raw = np.array([np.nan if v is None else v for v in values], dtype=float)
    signal, correct_kept = oriented(raw[present], orientation, probability), labels[present]
    scorer = _Scorer(
        signal, correct_kept, seed=seed, n_resamples=n_resamples, confidence=confidence,
        min_samples=min_samples, groups=None if groups is None else np.asarray(groups)[present],
    )
    n, n_correct = len(signal), int(correct_kept.sum())
    positive_rate = n_correct / n if n else None
    scores = {name: scorer.entry(point, batched) for name, (point, batched) in RANKING_STATISTICS.items()}
    scores["auprc"]["positive_rate"] = positive_rate
    for coverage in COVERAGES:
        scores[f"selective_accuracy_{round(coverage * 100)}"]["coverage"] = coverage
    if probability:
        scores["ece"] = scorer.entry(
            partial(statistics.ece, n_bins=n_bins, strategy=ece_strategy),
            partial(Tally.ece, n_bins=n_bins, strategy=ece_strategy),
        )
        scores["ece"]["binning"] = statistics.ece_binning(n_bins, ece_strategy)
        scores["brier"] = scorer.entry(statistics.brier, Tally.brier)
    return {
        "orientation": orientation,
        "probability": probability,
        "n": n,
        "n_dropped": int((~present).sum()),
        "n_correct": n_correct,
        "positive_rate": positive_rate,
        "bootstrap": {
            "method": "percentile",
            "unit": "sample" if groups is None else "group",
            "n_resamples": n_resamples,
            "seed": seed,
            "confidence": confidence,
            "max_undefined_fraction": MAX_UNDEFINED_FRACTION,
        },
        "statistics": scores,
    }


def score_auroc(
    signal: np.ndarray,
    correct: np.ndarray,
    *,
    seed: int,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    min_samples: int = MIN_SAMPLES,
    groups: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, Any]:
    """AUROC of an already oriented signal as one statistic entry (value, ci, n, ...)."""
    scorer = _Scorer(
        *statistics.as_samples(signal, correct), seed=seed, n_resamples=n_resamples, confidence=confidence,
        min_samples=min_samples, groups=None if groups is None else np.asarray(groups),
    )
    return scorer.entry(statistics.auroc, Tally.auroc)
