"""Within-task statistics: a cross-task figure compares samples of the same task only.

Concatenating the samples of several tasks lets the task mix drive a statistic: a "signal" that is
each sample's task accuracy carries no information about any one sample, yet gets a high concatenated
AUROC because easy tasks have both high values and many correct answers. The primary cross-task figure of
every statistic is therefore task-stratified. With tasks (strata) t = 1..T, each tallied on its own
(``Tally``; inside a task, tied values follow the tie rule, so a signal constant within a task counts
its pairs as ties there):

- AUROC_within = sum_t area_t / sum_t N1_t N0_t: the AUROC over (correct, wrong) pairs from the same
  task, i.e. the per-task AUROCs weighted by their number of pairs.
- r_within = sum_t cross_t / sqrt(sum_t spread_s_t * sum_t spread_y_t): the pooled within-task
  correlation (s and y centred on their task's means; Spearman: on ranks within the task). Its t-test
  has n - T - 1 degrees of freedom.
- every other statistic (AUPRC, PRR, AURC, selective accuracy, ECE, Brier): sum_t n_t stat_t / sum_t n_t,
  the sample-weighted mean over the tasks where stat_t is defined (ranking statistics: both classes).

With one stratum each equals the plain statistic of ``Tally``. A ranking statistic is undefined (NaN)
for a weighting in which no task has both classes and two distinct signal values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from vrp_bench.scoring.tally import EceStrategy, Tally


def stratum_indices(strata: Sequence[Any] | np.ndarray | None, n_samples: int) -> list[np.ndarray]:
    """Sample positions of each stratum (in order of first appearance); one stratum when ``strata`` is None."""
    if strata is None:
        return [np.arange(n_samples)]
    labels = np.asarray(strata)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    return [np.flatnonzero(inverse == stratum) for stratum in np.argsort(first)]


@dataclass(frozen=True)
class StratifiedTally:
    """One ``Tally`` per stratum, over the same B weightings (see the module docstring)."""

    strata: tuple[Tally, ...]

    @classmethod
    def from_samples(
        cls,
        values: np.ndarray,
        correct: np.ndarray,
        strata: Sequence[Any] | np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> StratifiedTally:
        """Tally ``values`` [n] with 0/1 ``correct`` [n] per stratum; ``weights`` [B, n] (default: ones)."""
        return cls(tuple(
            Tally.from_samples(values[idx], correct[idx], None if weights is None else weights[:, idx], ties_allowed=True)
            for idx in stratum_indices(strata, len(values))
        ))

    def _stack(self, statistic: Callable[[Tally], np.ndarray]) -> np.ndarray:
        return np.stack([statistic(tally) for tally in self.strata])  # [T, B]

    @cached_property
    def n(self) -> np.ndarray:
        return self._stack(lambda tally: tally.n).sum(axis=0)

    @cached_property
    def can_rank(self) -> np.ndarray:
        """Per weighting: some stratum has both classes and at least two distinct values."""
        return self._stack(lambda t: (t.n_correct > 0) & (t.n_wrong > 0) & (t.distinct_values >= 2)).any(axis=0)

    def _ranking(self, statistic: np.ndarray) -> np.ndarray:
        return np.where(self.can_rank, statistic, np.nan)

    def auroc(self) -> np.ndarray:
        """AUROC over within-stratum pairs: sum_t area_t / sum_t N1_t N0_t."""
        parts = [tally.auroc_parts() for tally in self.strata]
        area, pairs = sum(a for a, _ in parts), sum(p for _, p in parts)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._ranking(area / pairs)

    def _within_correlation(self, x_of: Callable[[Tally], np.ndarray]) -> np.ndarray:
        parts = [tally.pearson_parts(x_of(tally)) for tally in self.strata]
        cross, spread_x, spread_y = (np.nansum(np.stack([p[i] for p in parts]), axis=0) for i in range(3))
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._ranking(np.clip(cross / np.sqrt(spread_x * spread_y), -1.0, 1.0))

    def point_biserial_r(self) -> np.ndarray:
        """Pooled within-stratum Pearson r of s and y."""
        return self._within_correlation(lambda tally: tally.values)

    def spearman_rho(self) -> np.ndarray:
        """Pooled within-stratum Pearson r of the within-stratum ranks of s and y."""
        return self._within_correlation(lambda tally: tally.ranks)

    def _weighted_mean(self, statistic: Callable[[Tally], np.ndarray]) -> np.ndarray:
        """sum_t n_t stat_t / sum_t n_t over the strata where stat_t is defined (NaN if none is)."""
        values, sizes = self._stack(statistic), self._stack(lambda tally: tally.n)
        present = ~np.isnan(values)
        total = np.where(present, sizes, 0.0).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(present, values * sizes, 0.0).sum(axis=0) / np.where(total > 0, total, np.nan)

    def auprc(self) -> np.ndarray:
        return self._ranking(self._weighted_mean(Tally.auprc))

    def prr(self) -> np.ndarray:
        return self._ranking(self._weighted_mean(Tally.prr))

    def aurc(self) -> np.ndarray:
        return self._ranking(self._weighted_mean(Tally.aurc))

    def selective_accuracy(self, coverage: float) -> np.ndarray:
        return self._ranking(self._weighted_mean(lambda tally: tally.selective_accuracy(coverage)))

    def ece(self, n_bins: int = 15, strategy: EceStrategy = "uniform") -> np.ndarray:
        return self._weighted_mean(lambda tally: tally.ece(n_bins, strategy))

    def brier(self) -> np.ndarray:
        return self._weighted_mean(Tally.brier)
