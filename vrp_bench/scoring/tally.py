"""Correct / wrong weight per distinct signal value: the one representation every statistic uses.

Samples are grouped by distinct value v_1 < ... < v_K. For B weightings of the same samples
(B = 1: the data itself, every weight 1; B = n_resamples: bootstrap multiplicities, non-negative
integers) ``correct[b, k]`` / ``wrong[b, k]`` is the total weight of correct / wrong samples whose
value is v_k. Below, c = correct, w = wrong, m = c + w, N1 = sum_k c, N0 = sum_k w, n = N1 + N0,
and "before k" means summed over the values below v_k.

Ranking statistics treat samples with equal values as tied: AUROC counts a tie as 1/2, ranks are
averaged, and the kept-set curves use the expectation over uniformly random orderings within ties.
Every method is vectorised over b and returns NaN where it is undefined for that weighting
(ranking statistics: one class only, or fewer than two distinct values unless ``ties_allowed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

EceStrategy = Literal["uniform", "quantile"]


@dataclass(frozen=True)
class Tally:
    """Per-value correct / wrong weights of B weightings of one sample (see the module docstring)."""

    values: np.ndarray  # [K] distinct values, ascending
    correct: np.ndarray  # [B, K]
    wrong: np.ndarray  # [B, K]
    ties_allowed: bool = False
    """True: a weighting with a single value (every sample tied) is ranked by the tie rule (AUROC 1/2,
    PRR 0) instead of NaN; used for one task inside a within-task statistic."""

    @classmethod
    def from_samples(
        cls, values: np.ndarray, correct: np.ndarray, weights: np.ndarray | None = None, *, ties_allowed: bool = False
    ) -> Tally:
        """Tally ``values`` [n] with 0/1 ``correct`` [n]; ``weights`` [B, n] (default: one row of ones)."""
        order = np.argsort(values, kind="stable")
        ordered = values[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        w = np.ones((1, len(values))) if weights is None else np.asarray(weights, dtype=float)[:, order]
        weight = np.add.reduceat(w, starts, axis=1)
        right = np.add.reduceat(w * correct[order], starts, axis=1)
        return cls(ordered[starts], right, weight - right, ties_allowed)

    @cached_property
    def weight(self) -> np.ndarray:
        return self.correct + self.wrong

    @cached_property
    def n(self) -> np.ndarray:
        return self.weight.sum(axis=1)

    @cached_property
    def n_correct(self) -> np.ndarray:
        return self.correct.sum(axis=1)

    @cached_property
    def n_wrong(self) -> np.ndarray:
        return self.wrong.sum(axis=1)

    @cached_property
    def _ranking_defined(self) -> np.ndarray:
        both_classes = (self.n_correct > 0) & (self.n_wrong > 0)
        return both_classes if self.ties_allowed else both_classes & (self.distinct_values >= 2)

    @cached_property
    def distinct_values(self) -> np.ndarray:
        """Number of distinct values present (positive weight) in each weighting, [B]."""
        return (self.weight > 0).sum(axis=1)

    def _defined_only(self, statistic: np.ndarray) -> np.ndarray:
        return np.where(self._ranking_defined, statistic, np.nan)

    def auroc_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """(area, pairs): area = sum_k c_k (W_before_k + w_k / 2), the (correct, wrong) pairs ranked right
        (ties 1/2), and pairs = N1 N0; AUROC = area / pairs. Defined for any weighting (no NaN)."""
        wrong_before = np.cumsum(self.wrong, axis=1) - self.wrong
        return np.sum(self.correct * (wrong_before + self.wrong / 2), axis=1), self.n_correct * self.n_wrong

    def auroc(self) -> np.ndarray:
        """AUROC = P(s_correct > s_wrong) + P(tie)/2 = sum_k c_k (W_before_k + w_k / 2) / (N1 N0)."""
        area, pairs = self.auroc_parts()
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._defined_only(area / pairs)

    def auprc(self) -> np.ndarray:
        """Average precision (sklearn's): AP = sum_k (c_k / N1) * TP_k / (TP_k + FP_k), thresholds s >= v_k,
        TP_k = sum_{j >= k} c_j, FP_k = sum_{j >= k} w_j (no interpolation)."""
        true_pos = self.n_correct[:, None] - (np.cumsum(self.correct, axis=1) - self.correct)
        false_pos = self.n_wrong[:, None] - (np.cumsum(self.wrong, axis=1) - self.wrong)
        predicted = true_pos + false_pos
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(predicted > 0, true_pos / predicted, 0.0)
            average = np.sum(self.correct * precision, axis=1) / self.n_correct
        return self._defined_only(average)

    def pearson_parts(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cross, spread_x, spread_y) of x (per value, [K] or [B, K]) and y, centred on this weighting's
        means: cross = sum_k c_k (x_k - xbar), spread_x = sum_k m_k (x_k - xbar)^2, spread_y = N1 N0 / n;
        Pearson r = cross / sqrt(spread_x spread_y)."""
        weight, n = self.weight, self.n
        with np.errstate(divide="ignore", invalid="ignore"):
            centred = x - (np.sum(weight * x, axis=1) / n)[:, None]
            spread_y = self.n_correct * self.n_wrong / n
        return np.sum(self.correct * centred, axis=1), np.sum(weight * centred**2, axis=1), spread_y

    def _pearson_with_correct(self, x: np.ndarray) -> np.ndarray:
        """Weighted Pearson r of x (per value, [K] or [B, K]) with y (``pearson_parts``)."""
        cross, spread_x, spread_y = self.pearson_parts(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = cross / np.sqrt(spread_x * spread_y)
        return self._defined_only(np.clip(r, -1.0, 1.0))

    def point_biserial_r(self) -> np.ndarray:
        """Point-biserial r: the Pearson correlation of s and y (see ``_pearson_with_correct``)."""
        return self._pearson_with_correct(self.values)

    @cached_property
    def ranks(self) -> np.ndarray:
        """Tie-averaged rank of each value under each weighting: M_before_k + (m_k + 1) / 2, [B, K]."""
        weight = self.weight
        return np.cumsum(weight, axis=1) - weight + (weight + 1) / 2

    def spearman_rho(self) -> np.ndarray:
        """Spearman rho: Pearson r of the tie-averaged ranks of s and of y. The average rank of y is
        affine in y, so rho = r(rank(s), y) with ``ranks``."""
        return self._pearson_with_correct(self.ranks)

    @cached_property
    def _kept_set_blocks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Values in decreasing order (most confident first): for each value, the kept-set size before
        it (start, integer), its weight m (integer), the correct weight before it, and its correct
        rate c / m. Within a tie block the expected number correct among the first j kept grows
        linearly: C(start + j) = correct_before + j * rate, 0 <= j <= m."""
        weight = np.rint(self.weight[:, ::-1]).astype(np.int64)
        correct = self.correct[:, ::-1]
        start = np.cumsum(weight, axis=1) - weight
        correct_before = np.cumsum(correct, axis=1) - correct
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(weight > 0, correct / weight, 0.0)
        return start, weight, correct_before, rate

    @cached_property
    def _mean_kept_accuracy(self) -> np.ndarray:
        """AR = (1/n) sum_{k=1}^{n} A(k), A(k) = C(k) / k the accuracy of the k most confident samples
        (ties: expectation over random orderings). Per tie block, with H_j = sum_{i<=j} 1/i:
        sum_{k=a+1}^{a+m} C(k)/k = (C_before - a * rate) (H_{a+m} - H_a) + c."""
        start, weight, correct_before, rate = self._kept_set_blocks
        harmonic = _harmonic_numbers(int(weight.sum(axis=1).max()))
        span = harmonic[start + weight] - harmonic[start]
        total = np.sum((correct_before - start * rate) * span + rate * weight, axis=1)
        return self._defined_only(total / self.n)

    def aurc(self) -> np.ndarray:
        """AURC = (1/n) sum_{k=1}^{n} (1 - A(k)) = 1 - AR: mean risk over coverages k/n."""
        return 1.0 - self._mean_kept_accuracy

    def prr(self) -> np.ndarray:
        """PRR = (AR - AR_random) / (AR_oracle - AR_random), with AR as in ``_mean_kept_accuracy``,
        AR_random = N1/n (E[A(k)] = N1/n for every k under a random order) and
        AR_oracle = (N1 + N1 (H_n - H_N1)) / n (all correct first: A(k) = 1 for k <= N1, N1/k after)."""
        n = np.rint(self.n).astype(np.int64)
        right = np.rint(self.n_correct).astype(np.int64)
        harmonic = _harmonic_numbers(int(n.max()))
        random = right / n
        oracle = (right + right * (harmonic[n] - harmonic[right])) / n
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self._mean_kept_accuracy - random) / (oracle - random)

    def selective_accuracy(self, coverage: float) -> np.ndarray:
        """Accuracy of the k = ceil(coverage * n) most confident samples, A(k) = C(k) / k; a tie block
        straddling the cut contributes its expected share: C(k) = sum_blocks clip(k - start, 0, m) rate."""
        start, weight, _, rate = self._kept_set_blocks
        kept = np.ceil(coverage * np.rint(self.n) - 1e-9)[:, None]
        right = np.sum(np.clip(kept - start, 0, weight) * rate, axis=1)
        return self._defined_only(right / kept[:, 0])

    def ece(self, n_bins: int = 15, strategy: EceStrategy = "uniform") -> np.ndarray:
        """ECE = sum_b (n_b / n) |acc_b - conf_b| = (1/n) sum_b |sum_{i in b} (y_i - p_i)|.

        "uniform": bins [j/B, (j+1)/B), the last closed at 1. "quantile" (equal mass): a value goes
        to bin floor(B * M_before / n), M_before = the weight of smaller values, so each bin holds
        about n/B samples and tied values are never split across bins. Empty bins contribute 0."""
        rows, n = self.weight.shape[0], np.rint(self.n).astype(np.int64)
        if strategy == "uniform":
            inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
            bins = np.broadcast_to(np.searchsorted(inner_edges, self.values, side="right"), self.weight.shape)
        elif strategy == "quantile":
            weight = np.rint(self.weight).astype(np.int64)
            bins = np.minimum(n_bins * (np.cumsum(weight, axis=1) - weight) // n[:, None], n_bins - 1)
        else:
            raise ValueError(f"ECE strategy must be 'uniform' or 'quantile', not {strategy!r}")
        gap = self.correct - self.weight * self.values
        flat = (np.arange(rows)[:, None] * n_bins + bins).ravel()
        per_bin = np.bincount(flat, weights=gap.ravel(), minlength=rows * n_bins).reshape(rows, n_bins)
        return np.abs(per_bin).sum(axis=1) / self.n

    def brier(self) -> np.ndarray:
        """Brier = (1/n) sum_i (p_i - y_i)^2 = (1/n) sum_k (c_k (1 - v_k)^2 + w_k v_k^2)."""
        squared = self.correct * (1.0 - self.values) ** 2 + self.wrong * self.values**2
        return squared.sum(axis=1) / self.n


def _harmonic_numbers(up_to: int) -> np.ndarray:
    """H_0 .. H_up_to with H_j = sum_{i=1}^{j} 1/i."""
    return np.r_[0.0, np.cumsum(1.0 / np.arange(1, up_to + 1))]
