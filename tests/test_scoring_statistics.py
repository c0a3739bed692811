"""Scoring statistics against independent computations; undefined cases; bootstrap CIs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm, pointbiserialr, spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from vrp_bench.scoring import statistics as st
from vrp_bench.scoring.bootstrap import percentile_ci, resample_weights
from vrp_bench.scoring.signal_quality import ScoringOptions, score_auroc, score_signal
from vrp_bench.scoring.statistics import UndefinedStatistic
from vrp_bench.scoring.tally import Tally


@pytest.fixture(scope="module")
def tied_data() -> tuple[np.ndarray, np.ndarray]:
    """300 samples, a weakly informative signal rounded to one decimal (many ties)."""
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300)
    return np.round(rng.normal(size=300) + 0.7 * y, 1), y


def pair_count_auroc(s: np.ndarray, y: np.ndarray) -> float:
    """O(n^2): share of (correct, wrong) pairs ranked right, ties counting 1/2."""
    right, wrong = s[y == 1], s[y == 0]
    wins = sum((a > b) + 0.5 * (a == b) for a in right for b in wrong)
    return wins / (len(right) * len(wrong))


def kept_accuracies(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A(k) for k = 1..n, most confident first (continuous s: no ties)."""
    kept = y[np.argsort(-s)]
    return np.cumsum(kept) / np.arange(1, len(y) + 1)


# --- agreement with sklearn / scipy / brute force -------------------------------------------------


def test_auroc_matches_sklearn_and_pair_count(tied_data):
    s, y = tied_data
    assert st.auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert st.auroc(s, y) == pytest.approx(pair_count_auroc(s, y), abs=1e-12)


def test_auprc_matches_sklearn_average_precision(tied_data):
    s, y = tied_data
    assert st.auprc(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_correlations_match_scipy(tied_data):
    s, y = tied_data
    expected_r = pointbiserialr(y, s)
    r = st.point_biserial(s, y)
    assert r.statistic == pytest.approx(expected_r.statistic, abs=1e-12)
    assert r.pvalue == pytest.approx(expected_r.pvalue, rel=1e-8)
    expected_rho = spearmanr(s, y)
    rho = st.spearman(s, y)
    assert rho.statistic == pytest.approx(expected_rho.statistic, abs=1e-12)
    assert rho.pvalue == pytest.approx(expected_rho.pvalue, rel=1e-8)


def test_brier_matches_sklearn(tied_data):
    s, y = tied_data
    p = 1.0 / (1.0 + np.exp(-s))
    assert st.brier(p, y) == pytest.approx(brier_score_loss(y, p), abs=1e-12)


def test_kept_set_statistics_match_direct_computation_without_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = rng.normal(size=200) + y
    accuracy = kept_accuracies(s, y)
    oracle = np.cumsum(np.sort(y)[::-1]) / np.arange(1, len(y) + 1)
    expected_prr = (accuracy.mean() - y.mean()) / (oracle.mean() - y.mean())
    assert st.prr(s, y) == pytest.approx(expected_prr, abs=1e-12)
    assert st.aurc(s, y) == pytest.approx(np.mean(1.0 - accuracy), abs=1e-12)
    for coverage in (0.5, 0.8, 0.9):
        kept = math.ceil(coverage * len(y))
        assert st.selective_accuracy(s, y, coverage) == pytest.approx(accuracy[kept - 1], abs=1e-12)


# --- hand-computed small cases ------------------------------------------------------------------


def test_prr_aurc_selective_accuracy_by_hand():
    s, y = np.array([4.0, 3.0, 2.0, 1.0]), np.array([1, 0, 1, 0])
    # A(k) = 1, 1/2, 2/3, 1/2 -> AR = (8/3)/4 = 2/3; random = 1/2; oracle A = 1, 1, 2/3, 1/2 -> AR = 19/24
    assert st.aurc(s, y, min_samples=1) == pytest.approx(1 / 3)
    assert st.prr(s, y, min_samples=1) == pytest.approx((2 / 3 - 1 / 2) / (19 / 24 - 1 / 2))  # 4/7
    assert st.prr(-s, y, min_samples=1) == pytest.approx(-4 / 7)  # reversed: A = 0, 1/2, 1/3, 1/2 -> AR = 1/3
    assert st.selective_accuracy(s, y, 0.5, min_samples=1) == pytest.approx(1 / 2)  # top 2
    assert st.selective_accuracy(s, y, 0.75, min_samples=1) == pytest.approx(2 / 3)  # top 3
    assert st.selective_accuracy(s, y, 0.8, min_samples=1) == pytest.approx(1 / 2)  # ceil(3.2) = 4


def test_kept_set_statistics_average_over_tie_orderings():
    s, y = np.array([2.0, 1.0, 1.0, 0.0]), np.array([1, 1, 0, 0])
    # orderings of the tie: (right, wrong) A = 1, 1, 2/3, 1/2; (wrong, right) A = 1, 1/2, 2/3, 1/2
    # expected A = 1, 3/4, 2/3, 1/2 -> AR = (35/12)/4 = 35/48; oracle AR = 38/48; random = 24/48
    assert st.aurc(s, y, min_samples=1) == pytest.approx(13 / 48)
    assert st.prr(s, y, min_samples=1) == pytest.approx(11 / 14)
    assert st.selective_accuracy(s, y, 0.5, min_samples=1) == pytest.approx(3 / 4)
    assert st.auroc(s, y, min_samples=1) == pytest.approx((1 + 1 + 0.5 + 1) / 4)  # pairs (2,1) (2,0) (1,1) (1,0)


def test_ece_uniform_and_quantile_by_hand():
    p = np.array([0.1, 0.15, 0.4, 0.45, 0.9, 0.95])
    y = np.array([1, 0, 0, 1, 1, 0])
    # uniform, 2 bins: [0, .5): sum(y - p) = 2 - 1.1 = 0.9; [.5, 1]: 1 - 1.85 = -0.85 -> (0.9 + 0.85) / 6
    assert st.ece(p, y, n_bins=2, min_samples=1) == pytest.approx(1.75 / 6)
    # quantile, 2 bins of 3 by rank: 1 - 0.65 = 0.35; 2 - 2.3 = -0.3 -> (0.35 + 0.3) / 6
    assert st.ece(p, y, n_bins=2, strategy="quantile", min_samples=1) == pytest.approx(0.65 / 6)


def test_ece_bin_edges_and_ties():
    # 0.5 belongs to the upper of 2 equal-width bins: [0, .5): -0.2; [.5, 1]: 2 - 1.8 = 0.2 -> 0.4 / 4
    assert st.ece([0.5, 0.5, 0.2, 0.8], [1, 1, 0, 0], n_bins=2, min_samples=1) == pytest.approx(0.1)
    assert st.ece([1.0, 0.0], [1, 0], n_bins=15, min_samples=1) == pytest.approx(0.0)
    # quantile: the four tied 0.3 stay together in bin 0: 1 - 1.2 = -0.2; bin 1: 2 - 1.5 = 0.5 -> 0.7 / 6
    p, y = [0.3, 0.3, 0.3, 0.3, 0.6, 0.9], [1, 0, 0, 0, 1, 1]
    assert st.ece(p, y, n_bins=2, strategy="quantile", min_samples=1) == pytest.approx(0.7 / 6)


# --- undefined, never made up -------------------------------------------------------------------

RANKING = [st.auroc, st.auprc, st.point_biserial, st.spearman, st.prr, st.aurc]


@pytest.mark.parametrize("statistic", RANKING)
@pytest.mark.parametrize(
    ("s", "y", "reason"),
    [
        (np.arange(20.0), np.ones(20), "one class"),
        (np.ones(20), np.r_[np.ones(10), np.zeros(10)], "constant"),
        (np.arange(5.0), [1, 0, 1, 0, 1], "min_samples"),
        (np.r_[np.nan, np.arange(19.0)], np.r_[np.ones(10), np.zeros(10)], "NaN"),
    ],
)
def test_degenerate_inputs_are_undefined_with_reason(statistic, s, y, reason):
    with pytest.raises(UndefinedStatistic, match=reason):
        statistic(s, y)


def test_other_undefined_and_invalid_inputs():
    y = np.r_[np.ones(10), np.zeros(10)]
    with pytest.raises(UndefinedStatistic, match="infinite"):
        st.point_biserial(np.r_[np.inf, np.arange(19.0)], y)
    assert st.auroc(np.r_[np.inf, np.arange(19.0)], y) == pytest.approx(roc_auc_score(y, np.r_[1e9, np.arange(19.0)]))
    with pytest.raises(UndefinedStatistic, match="one class"):
        st.selective_accuracy(np.arange(20.0), np.zeros(20), 0.5)
    assert st.brier(np.full(20, 0.9), np.ones(20)) == pytest.approx(0.01)  # calibration: one class is fine
    with pytest.raises(ValueError, match="0/1"):
        st.auroc(np.arange(3.0), [0, 1, 2])
    with pytest.raises(UndefinedStatistic, match=r"\[0, 1\]"):
        st.ece(np.linspace(0, 2, 20), y)


def test_score_signal_reports_undefined_statistics_with_reasons_not_values():
    one_class = score_signal(list(np.arange(30.0)), np.ones(30), 1, options=ScoringOptions(seed=0))
    for name, entry in one_class["statistics"].items():
        assert entry["value"] is None and entry["ci"] is None and "one class" in entry["reason"], name
    empty = score_signal([None] * 12, [1, 0] * 6, 1, options=ScoringOptions(seed=0))
    assert empty["n"] == 0 and empty["n_dropped"] == 12 and empty["positive_rate"] is None
    assert all(e["value"] is None and e["reason"] for e in empty["statistics"].values())


def test_ci_is_null_with_reason_when_too_many_resamples_are_undefined():
    y = np.r_[np.zeros(1), np.ones(29)]  # a resample misses the one wrong sample with probability 0.36
    entry = score_signal(list(np.arange(30.0)), y, 1, options=ScoringOptions(seed=0, n_resamples=200))["statistics"]["auroc"]
    assert entry["value"] == pytest.approx(1.0)
    assert entry["ci"] is None and "resamples" in entry["reason"] and entry["n_undefined_resamples"] > 10
    few = percentile_ci(np.r_[np.full(3, np.nan), np.linspace(0, 1, 97)])
    assert few.interval is not None and few.n_undefined == 3


# --- score_signal ------------------------------------------------------------------------------


def test_score_signal_shape_orientation_and_dropping(tied_data):
    s, y = tied_data
    values = [None if i % 10 == 0 else float(v) for i, v in enumerate(s)]
    kept = np.array([i % 10 != 0 for i in range(len(s))])
    up = score_signal(values, y, 1, options=ScoringOptions(seed=1, n_resamples=300))
    down = score_signal([None if v is None else -v for v in values], y, -1, options=ScoringOptions(seed=1, n_resamples=300))
    assert up["n"] == kept.sum() and up["n_dropped"] == 30 and up["orientation"] == 1
    assert up["n_correct"] == y[kept].sum() and up["positive_rate"] == pytest.approx(y[kept].mean())
    assert set(up["statistics"]) == {
        "auroc", "auprc", "r_pb", "spearman", "prr", "aurc",
        "selective_accuracy_50", "selective_accuracy_80", "selective_accuracy_90",
    }
    for entry in up["statistics"].values():
        assert entry["n"] == kept.sum() and entry["reason"] is None
        assert entry["ci"][0] <= entry["value"] <= entry["ci"][1]
    assert up["statistics"]["auroc"]["value"] == pytest.approx(roc_auc_score(y[kept], s[kept]))
    assert up["statistics"]["auprc"]["positive_rate"] == up["positive_rate"]
    assert up["statistics"]["r_pb"]["p_value"] < 1e-3
    assert up["statistics"]["selective_accuracy_80"]["coverage"] == 0.8
    assert up["statistics"] == down["statistics"]  # -1 applied to negated values gives the same signal


def test_score_signal_probability_adds_calibration(tied_data):
    s, y = tied_data
    p = 1.0 / (1.0 + np.exp(-s))
    scored = score_signal(list(p), y, 1, probability=True, options=ScoringOptions(seed=0, n_resamples=200))
    assert scored["statistics"]["ece"]["binning"] == "15 equal-width bins on [0, 1]"
    assert scored["statistics"]["ece"]["value"] == pytest.approx(st.ece(p, y))
    assert scored["statistics"]["brier"]["value"] == pytest.approx(brier_score_loss(y, p))
    wrong_probability = score_signal(list(1.0 - p), y, -1, probability=True, options=ScoringOptions(seed=0, n_resamples=200))
    assert wrong_probability["statistics"]["brier"]["value"] == pytest.approx(brier_score_loss(y, p))
    assert "ece" not in score_signal(list(p), y, 1, options=ScoringOptions(seed=0, n_resamples=200))["statistics"]


def test_score_signal_is_seeded(tied_data):
    s, y = tied_data
    first = score_signal(list(s), y, 1, options=ScoringOptions(seed=5, n_resamples=200))
    assert first == score_signal(list(s), y, 1, options=ScoringOptions(seed=5, n_resamples=200))
    assert first != score_signal(list(s), y, 1, options=ScoringOptions(seed=6, n_resamples=200))
    one_per_group = score_signal(list(s), y, 1, options=ScoringOptions(seed=5, n_resamples=200), groups=np.arange(len(s)))
    assert one_per_group["statistics"] == first["statistics"] and one_per_group["bootstrap"]["unit"] == "group"


# --- bootstrap ---------------------------------------------------------------------------------


def test_batched_resamples_equal_statistics_of_the_explicit_resamples(tied_data):
    s, y = tied_data
    p = 1.0 / (1.0 + np.exp(-s))
    weights = resample_weights(len(s), 8, seed=11)
    assert (weights.sum(axis=1) == len(s)).all()
    resampled_signal, resampled_probability = Tally.from_samples(s, y, weights), Tally.from_samples(p, y, weights)
    for row, counts in enumerate(weights):
        idx = np.repeat(np.arange(len(s)), counts)
        rs, rp, ry = s[idx], p[idx], y[idx]
        assert resampled_signal.auroc()[row] == pytest.approx(roc_auc_score(ry, rs), abs=1e-12)
        assert resampled_signal.auprc()[row] == pytest.approx(average_precision_score(ry, rs), abs=1e-12)
        assert resampled_signal.point_biserial_r()[row] == pytest.approx(pointbiserialr(ry, rs).statistic, abs=1e-10)
        assert resampled_signal.spearman_rho()[row] == pytest.approx(spearmanr(rs, ry).statistic, abs=1e-10)
        assert resampled_signal.prr()[row] == pytest.approx(st.prr(rs, ry), abs=1e-12)
        assert resampled_signal.selective_accuracy(0.8)[row] == pytest.approx(st.selective_accuracy(rs, ry, 0.8))
        assert resampled_probability.ece(15, "quantile")[row] == pytest.approx(st.ece(rp, ry, strategy="quantile"))
        assert resampled_probability.brier()[row] == pytest.approx(brier_score_loss(ry, rp), abs=1e-12)


def test_group_bootstrap_draws_whole_groups():
    groups = np.repeat(np.arange(10), 3)
    weights = resample_weights(30, 50, seed=0, groups=groups)
    assert (weights.reshape(50, 10, 3) == weights.reshape(50, 10, 3)[:, :, :1]).all()
    assert (weights.sum(axis=1) == 30).all()


def test_percentile_ci_covers_the_true_auroc_of_two_normals():
    d, n, repetitions = 1.0, 200, 150
    truth = norm.cdf(d / math.sqrt(2))
    rng = np.random.default_rng(2024)
    covered = 0
    for repetition in range(repetitions):
        y = rng.integers(0, 2, n)
        s = rng.normal(size=n) + d * y
        ci = score_auroc(s, y, options=ScoringOptions(seed=repetition, n_resamples=400))["ci"]
        covered += ci[0] <= truth <= ci[1]
    assert 0.88 <= covered / repetitions <= 0.995
