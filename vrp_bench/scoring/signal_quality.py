"""Every statistic of one reliability signal with its bootstrap CI, as a JSON-ready dict.

Each statistic entry has the same keys: ``value``, ``ci`` ([lo, hi] percentile interval), ``n``,
``n_undefined_resamples`` and ``reason`` (why ``value`` or ``ci`` is null; null otherwise), plus
``p_value`` (r_pb, spearman: t-test; auroc: bootstrap test of 0.5, with ``p_equivalent`` and
``p_beyond_margin``, see ``hypotheses``), ``positive_rate`` (auprc), ``coverage`` (selective accuracy)
or ``binning`` (calibration). All ranking statistics of one call share one set of bootstrap resamples.
With ``strata`` every statistic is the within-stratum one of ``stratified``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

import numpy as np

from vrp_bench.scoring import statistics
from vrp_bench.scoring.bootstrap import CONFIDENCE, MAX_UNDEFINED_FRACTION, N_RESAMPLES, percentile_ci, resample_weights
from vrp_bench.scoring.calibration import debiased_l2_ece_entry, expected_ece_if_calibrated
from vrp_bench.scoring.hypotheses import effect_tests
from vrp_bench.scoring.statistics import MIN_SAMPLES, UndefinedStatistic
from vrp_bench.scoring.stratified import StratifiedTally, stratum_indices
from vrp_bench.scoring.tally import EceStrategy

COVERAGES = (0.5, 0.8, 0.9)
EQUIVALENCE_MARGIN = 0.05
"""Default margin of the AUROC equivalence test: "no relation" means AUROC within 0.5 +/- this."""
RAW_ECE_NOTE = ("no CI: the raw binned ECE is biased upward at small n (see ece_l2_debiased and "
                "expected_if_calibrated)")

BatchedStatistic = Callable[[StratifiedTally], np.ndarray]

RANKING_STATISTICS: dict[str, BatchedStatistic] = {
    "auroc": StratifiedTally.auroc,
    "auprc": StratifiedTally.auprc,
    "r_pb": StratifiedTally.point_biserial_r,
    "spearman": StratifiedTally.spearman_rho,
    "prr": StratifiedTally.prr,
    "aurc": StratifiedTally.aurc,
    **{f"selective_accuracy_{round(coverage * 100)}": partial(StratifiedTally.selective_accuracy, coverage=coverage)
       for coverage in COVERAGES},
}
CORRELATIONS = ("r_pb", "spearman")


@dataclass(frozen=True)
class ScoringOptions:
    """How one signal is scored: bootstrap, minimum sample size, ECE binning, equivalence margin."""

    seed: int = 0
    n_resamples: int = N_RESAMPLES
    confidence: float = CONFIDENCE
    min_samples: int = MIN_SAMPLES
    n_bins: int = 15
    ece_strategy: EceStrategy = "uniform"
    equivalence_margin: float = EQUIVALENCE_MARGIN


class _Scorer:
    """Point estimates and bootstrap CIs of (signal, correct) within ``strata``; resamples drawn once, lazily."""

    def __init__(
        self, signal: np.ndarray, correct: np.ndarray, strata: np.ndarray | None, groups: np.ndarray | None,
        options: ScoringOptions,
    ) -> None:
        self.signal, self.correct, self.strata, self.groups, self.options = signal, correct, strata, groups, options
        self.n = len(signal)
        self.n_strata = len(stratum_indices(strata, self.n)) if self.n else 0

    @cached_property
    def observed(self) -> StratifiedTally:
        return StratifiedTally.from_samples(self.signal, self.correct, self.strata)

    @cached_property
    def resampled(self) -> StratifiedTally:
        o = self.options
        weights = resample_weights(self.n, o.n_resamples, o.seed, self.groups, self.strata)
        return StratifiedTally.from_samples(self.signal, self.correct, self.strata, weights)

    def entry(self, batched: BatchedStatistic, problem: str | None) -> tuple[dict[str, Any], np.ndarray | None]:
        """The statistic's entry and its bootstrap replicates (None when the statistic is undefined)."""
        if problem is not None:
            return undefined_entry(self.n, problem), None
        value = float(batched(self.observed)[0])
        replicates = batched(self.resampled)
        ci = percentile_ci(replicates, self.options.confidence)
        entry = {"value": value, "ci": ci.interval, "n": self.n, "n_undefined_resamples": ci.n_undefined,
                 "reason": ci.reason}
        return entry, replicates

    def ranking_problem(self) -> str | None:
        """Why this signal cannot rank these samples within their strata, or None."""
        s, y = self.signal, self.correct
        if self.n < self.options.min_samples:
            return f"n = {self.n} samples, fewer than min_samples = {self.options.min_samples}"
        if np.isnan(s).any():
            return f"signal is NaN for {int(np.isnan(s).sum())} of {self.n} samples"
        if y.min() == y.max():
            return f"all {self.n} samples are {'correct' if y[0] else 'wrong'}: one class only"
        if s.min() == s.max():
            return f"signal is constant ({s[0]:g}) over all {self.n} samples: it cannot rank them"
        if not self.observed.can_rank[0]:
            return (f"no task has both correct and wrong samples and two distinct signal values: the signal cannot "
                    f"rank samples within a task (of {self.n_strata})")
        return None

    def correlation_pvalue(self, r: float) -> float:
        """t-test of a pooled within-stratum correlation: n - T - 1 degrees of freedom (n - 2 for T = 1)."""
        return statistics.correlation_pvalue(r, self.n - self.n_strata + 1)


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


def _present(values: Sequence[float | None] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the values that are not None, values as floats with NaN for None)."""
    present = np.array([v is not None for v in values], dtype=bool)
    return present, np.array([np.nan if v is None else v for v in values], dtype=float)


def _subset(labels: Sequence[Any] | np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
    return None if labels is None else np.asarray(labels)[keep]


def score_signal(
    values: Sequence[float | None] | np.ndarray,
    correct: Sequence[int | bool] | np.ndarray,
    orientation: int,
    *,
    probability: bool = False,
    strata: Sequence[Any] | np.ndarray | None = None,
    calibration_correct: Sequence[int | bool | None] | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    options: ScoringOptions = ScoringOptions(),
) -> dict[str, Any]:
    """Score one signal: samples whose value is None (signal inapplicable) are dropped, the rest
    oriented (``oriented``) and scored by every ranking statistic; with ``probability=True`` also
    calibrated (raw ECE with the ECE expected under perfect calibration, the debiased L2 ECE, Brier) on
    the oriented probability, against ``calibration_correct`` when given (e.g. the majority answer's
    correctness for a self-consistency agreement; None entries are dropped there).

    ``strata`` (one label per sample, e.g. its task) makes every statistic within-stratum
    (``stratified``) and the bootstrap resample within each stratum; ``groups`` makes it resample groups.
    The AUROC entry carries the tests of ``hypotheses.effect_tests`` against 0.5 with
    ``options.equivalence_margin``; correlations carry their t-test p-value."""
    labels = statistics.binary_labels(correct)
    if len(values) != len(labels):
        raise ValueError(f"{len(values)} signal values for {len(labels)} samples")
    present, raw = _present(values)
    signal, correct_kept = oriented(raw[present], orientation, probability), labels[present]
    scorer = _Scorer(signal, correct_kept, _subset(strata, present), _subset(groups, present), options)
    problem = scorer.ranking_problem()
    scores: dict[str, dict[str, Any]] = {}
    for name, batched in RANKING_STATISTICS.items():
        entry_problem = problem
        if problem is None and name == "r_pb" and not np.isfinite(signal).all():
            entry_problem = "signal has infinite values: Pearson correlation is undefined"
        scores[name], replicates = scorer.entry(batched, entry_problem)
        if name in CORRELATIONS and scores[name]["value"] is not None:
            scores[name]["p_value"] = scorer.correlation_pvalue(scores[name]["value"])
        if name == "auroc":
            scores[name].update(margin=options.equivalence_margin, **effect_tests(
                np.full(1, np.nan) if replicates is None else replicates, 0.5, options.equivalence_margin))
    n, n_correct = len(signal), int(correct_kept.sum())
    positive_rate = n_correct / n if n else None
    scores["auprc"]["positive_rate"] = positive_rate
    for coverage in COVERAGES:
        scores[f"selective_accuracy_{round(coverage * 100)}"]["coverage"] = coverage
    if probability:
        scores.update(_calibration(raw, present, labels, orientation, strata, calibration_correct, options))
    return {
        "orientation": orientation,
        "probability": probability,
        "n": n,
        "n_dropped": int((~present).sum()),
        "n_correct": n_correct,
        "positive_rate": positive_rate,
        "n_strata": scorer.n_strata,
        "bootstrap": {
            "method": "percentile",
            "unit": "sample" if groups is None else "group",
            "stratified": strata is not None,
            "n_resamples": options.n_resamples,
            "seed": options.seed,
            "confidence": options.confidence,
            "max_undefined_fraction": MAX_UNDEFINED_FRACTION,
        },
        "statistics": scores,
    }


def _calibration(
    raw: np.ndarray, present: np.ndarray, labels: np.ndarray, orientation: int,
    strata: Sequence[Any] | np.ndarray | None, calibration_correct: Sequence[int | bool | None] | None,
    options: ScoringOptions,
) -> dict[str, dict[str, Any]]:
    """Raw ECE (+ its value under perfect calibration), debiased L2 ECE and Brier of the oriented probability."""
    labelled = present.copy()
    if calibration_correct is not None:
        if len(calibration_correct) != len(labels):
            raise ValueError(f"{len(calibration_correct)} calibration labels for {len(labels)} samples")
        labelled &= np.array([c is not None for c in calibration_correct], dtype=bool)
        labels = np.array([0 if c is None else int(bool(c)) for c in calibration_correct], dtype=float)
    p, y = oriented(raw[labelled], orientation, True), labels[labelled]
    scorer = _Scorer(p, y, _subset(strata, labelled), None, options)
    problem = _probability_problem(p, options.min_samples)
    binning = statistics.ece_binning(options.n_bins, options.ece_strategy)
    if scorer.n_strata > 1:
        binning += f", within each of {scorer.n_strata} strata"
    ece = undefined_entry(len(p), problem) if problem else {
        "value": float(StratifiedTally.ece(scorer.observed, options.n_bins, options.ece_strategy)[0]),
        "ci": None, "n": len(p), "n_undefined_resamples": None, "reason": RAW_ECE_NOTE,
        "expected_if_calibrated": expected_ece_if_calibrated(
            p, n_bins=options.n_bins, strategy=options.ece_strategy, seed=options.seed, strata=scorer.strata),
    }
    ece["binning"] = binning
    brier, _ = scorer.entry(StratifiedTally.brier, problem)
    debiased = debiased_l2_ece_entry(
        p, y, seed=options.seed, n_resamples=options.n_resamples, confidence=options.confidence,
        n_bins=options.n_bins, min_samples=options.min_samples, strata=scorer.strata)
    labelled_by = "correct" if calibration_correct is None else "calibration label"
    return {name: {**entry, "labels": labelled_by}
            for name, entry in (("ece", ece), ("ece_l2_debiased", debiased), ("brier", brier))}


def _probability_problem(p: np.ndarray, min_samples: int) -> str | None:
    """Why ``p`` cannot be scored as a probability, or None."""
    try:
        statistics.probability_tally(p, np.zeros(len(p)), min_samples=min_samples)
    except UndefinedStatistic as undefined:
        return undefined.reason
    return None


def score_auroc(
    signal: np.ndarray,
    correct: np.ndarray,
    *,
    strata: Sequence[Any] | np.ndarray | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    options: ScoringOptions = ScoringOptions(),
) -> dict[str, Any]:
    """AUROC (within ``strata`` when given) of an already oriented signal as one statistic entry."""
    s, y = statistics.as_samples(signal, correct)
    scorer = _Scorer(s, y, None if strata is None else np.asarray(strata),
                     None if groups is None else np.asarray(groups), options)
    return scorer.entry(StratifiedTally.auroc, scorer.ranking_problem())[0]
