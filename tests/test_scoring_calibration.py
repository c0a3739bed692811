"""Debiased L2 ECE against brute force; coverage of 0 under planted calibration; the calibrated reference."""

from __future__ import annotations

import numpy as np
import pytest

from vrp_bench.scoring import statistics as st
from vrp_bench.scoring.bootstrap import percentile_ci, resample_weights
from vrp_bench.scoring.calibration import (
    debiased_l2_ece_entry,
    debiased_squared_calibration_error,
    expected_ece_if_calibrated,
    uniform_bins,
)

N_SEEDS = 50
N_SAMPLES = 150
N_RESAMPLES = 400


def planted(seed: int, shift: float = 0.0, n: int = N_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """p ~ Uniform(0.05, 0.95) and y ~ Bernoulli(clip(p - shift, 0, 1)): calibrated for shift 0."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, n)
    return p, (rng.random(n) < np.clip(p - shift, 0.0, 1.0)).astype(int)


def pair_loop_squared_error(p: np.ndarray, y: np.ndarray, w: np.ndarray, n_bins: int) -> float:
    """O(n^2) per bin: sum_b (N_b / N) * mean of d_i d_j over pairs of distinct original samples i != j,
    each pair counted w_i w_j times; bins without such a pair contribute 0."""
    bins = np.minimum(np.floor(p * n_bins).astype(int), n_bins - 1)
    d = y - p
    total = 0.0
    for b in range(n_bins):
        members = np.flatnonzero(bins == b)
        products = [(w[i] * w[j] * d[i] * d[j], w[i] * w[j]) for i in members for j in members if i != j]
        pair_weight = sum(weight for _, weight in products)
        if pair_weight > 0:
            total += w[members].sum() * sum(product for product, _ in products) / pair_weight
    return total / w.sum()


@pytest.fixture(scope="module")
def small_example() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """40 samples off the bin edges (plus p = 0 and p = 1), 6 bootstrap-like weightings."""
    rng = np.random.default_rng(3)
    p = np.r_[0.0, 1.0, rng.uniform(0.01, 0.99, 38)]
    y = (rng.random(40) < p**2).astype(float)
    return p, y, resample_weights(40, 6, seed=11)


# --- formula ----------------------------------------------------------------------------------------


def test_uniform_bins_match_tally_ece_binning():
    assert uniform_bins(np.array([0.0, 0.19, 0.2, 0.5, 0.999, 1.0]), 5).tolist() == [0, 0, 1, 2, 4, 4]


def test_matches_pair_loop_without_weights(small_example):
    p, y, _ = small_example
    estimate = debiased_squared_calibration_error(p, y, n_bins=5)
    assert estimate.shape == (1,)
    assert estimate[0] == pytest.approx(pair_loop_squared_error(p, y, np.ones(len(p)), 5), abs=1e-12)
    ones = debiased_squared_calibration_error(p, y, np.ones((1, len(p))), n_bins=5)
    assert ones[0] == pytest.approx(estimate[0], abs=1e-15)


def test_matches_pair_loop_with_bootstrap_weights(small_example):
    p, y, weights = small_example
    estimates = debiased_squared_calibration_error(p, y, weights, n_bins=5)
    assert estimates.shape == (len(weights),)
    for row, estimate in zip(weights, estimates):
        assert estimate == pytest.approx(pair_loop_squared_error(p, y, row.astype(float), 5), abs=1e-12)


def test_no_pair_in_any_bin_is_nan_and_constant_gap_is_exact():
    assert np.isnan(debiased_squared_calibration_error(np.array([0.1, 0.5, 0.9]), np.array([1, 0, 1]))[0])
    # y = 1 at p = 0.7: every d_i = 0.3, so U_b = 0.3^2 exactly.
    p = np.full(20, 0.7)
    assert debiased_squared_calibration_error(p, np.ones(20))[0] == pytest.approx(0.3**2, abs=1e-12)


# --- planted calibration / miscalibration -----------------------------------------------------------


def test_calibrated_estimate_is_unbiased_and_ci_covers_zero():
    squared, covered = [], 0
    for seed in range(N_SEEDS):
        p, y = planted(seed)
        entry = debiased_l2_ece_entry(p, y, seed=seed, n_resamples=N_RESAMPLES)
        assert entry["squared"] == pytest.approx(debiased_squared_calibration_error(p, y)[0], abs=1e-15)
        assert entry["value"] == pytest.approx(np.sqrt(max(entry["squared"], 0.0)), abs=1e-15)
        squared.append(entry["squared"])
        covered += entry["ci"][0] == 0.0
    squared = np.array(squared)
    assert abs(squared.mean()) <= 2 * squared.std(ddof=1) / np.sqrt(N_SEEDS)
    assert covered >= 0.9 * N_SEEDS


def test_raw_ece_is_biased_where_the_debiased_one_is_not():
    p, y = planted(0)
    raw = st.ece(p, y)
    reference = expected_ece_if_calibrated(p, seed=0)
    assert raw > 0.03 and reference["band"][0] > 0.03
    assert reference["band"][0] <= raw <= reference["band"][1]
    assert debiased_l2_ece_entry(p, y, seed=0, n_resamples=N_RESAMPLES)["ci"][0] == 0.0


def test_miscalibration_is_detected_near_its_size():
    """A 0.15 gap has squared size 0.0225 against a sampling sd of about 0.012 at n = 150 (detected in
    about a third of the seeds there), 0.0056 at n = 500: the power test uses n = 500."""
    values, excluded = [], 0
    n_seeds = 20
    for seed in range(n_seeds):
        p, y = planted(seed, shift=0.15, n=500)
        entry = debiased_l2_ece_entry(p, y, seed=seed, n_resamples=N_RESAMPLES)
        values.append(entry["value"])
        excluded += entry["ci"][0] > 0.0
    assert excluded >= 0.9 * n_seeds
    assert np.mean(values) == pytest.approx(0.15, abs=0.02)


# --- strata -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stratified() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three tasks of unequal size, one of them miscalibrated."""
    tasks = np.repeat(np.array(["count", "ocr", "vqa"]), [40, 90, 70])
    p, y = planted(5, n=len(tasks))
    y[tasks == "ocr"] = planted(6, shift=0.2, n=90)[1]
    return p, y, tasks


def test_stratified_estimate_is_the_sample_weighted_mean_of_strata(stratified):
    p, y, tasks = stratified
    entry = debiased_l2_ece_entry(p, y, seed=1, n_resamples=200, strata=tasks)
    per_task = {task: debiased_squared_calibration_error(p[tasks == task], y[tasks == task])[0] for task in set(tasks)}
    expected = sum(np.mean(tasks == task) * squared for task, squared in per_task.items())
    assert entry["squared"] == pytest.approx(expected, abs=1e-14)
    assert entry["value"] == pytest.approx(np.sqrt(max(expected, 0.0)), abs=1e-14)
    assert entry["binning"] == "15 equal-width bins on [0, 1], within each of 3 strata"
    unstratified = debiased_l2_ece_entry(p, y, seed=1, n_resamples=200)
    assert unstratified["squared"] != pytest.approx(entry["squared"])


def test_a_stratum_without_a_pair_is_left_out_of_the_mean(stratified):
    p, y, tasks = stratified
    single = debiased_l2_ece_entry(np.r_[p, 0.5], np.r_[y, 1], seed=1, n_resamples=50, strata=np.append(tasks, "one"))
    without = debiased_l2_ece_entry(p, y, seed=1, n_resamples=50, strata=tasks)
    assert single["squared"] == pytest.approx(without["squared"], abs=1e-15)


def test_stratified_resamples_keep_sizes_and_give_the_ci(stratified):
    p, y, tasks = stratified
    weights = resample_weights(len(p), 200, seed=1, strata=tasks)
    members = [tasks == task for task in set(tasks)]
    for task in members:
        assert (weights[:, task].sum(axis=1) == task.sum()).all()
    per_task = [
        (np.mean(task), debiased_squared_calibration_error(p[task], y[task], weights[:, task])) for task in members
    ]
    assert not any(np.isnan(replicates).any() for _, replicates in per_task)
    low, high = percentile_ci(sum(share * replicates for share, replicates in per_task)).interval
    entry = debiased_l2_ece_entry(p, y, seed=1, n_resamples=200, strata=tasks)
    assert entry["ci"] == pytest.approx([np.sqrt(max(low, 0.0)), np.sqrt(max(high, 0.0))], abs=1e-14)
    assert entry["n_undefined_resamples"] == 0


def test_one_stratum_is_the_plain_estimate_and_bootstrap():
    p, y = planted(8)
    plain = debiased_l2_ece_entry(p, y, seed=2, n_resamples=100)
    one = debiased_l2_ece_entry(p, y, seed=2, n_resamples=100, strata=["all"] * len(p))
    assert one["binning"] == plain["binning"] + ", within each of 1 strata"
    assert {**one, "binning": None} == {**plain, "binning": None}


# --- undefined and invalid input --------------------------------------------------------------------


def test_undefined_entries_carry_a_reason():
    p, y = planted(0, n=8)
    few = debiased_l2_ece_entry(p, y, seed=0)
    assert few["value"] is None and few["ci"] is None and few["squared"] is None
    assert few["n"] == 8 and "min_samples" in few["reason"]
    outside = debiased_l2_ece_entry(np.r_[p, 1.5, 0.2], np.r_[y, 1, 0], seed=0)
    assert outside["value"] is None and "[0, 1]" in outside["reason"]
    spread = debiased_l2_ece_entry(np.linspace(0.01, 0.99, 12), np.ones(12), seed=0, n_bins=15)
    assert spread["value"] is None and "two samples" in spread["reason"]
    assert set(few) == {"value", "squared", "ci", "n", "n_undefined_resamples", "reason", "binning"}


def test_invalid_labels_and_strata_raise():
    p, y = planted(0, n=20)
    with pytest.raises(ValueError):
        debiased_l2_ece_entry(p, np.r_[y[:-1], 2], seed=0)
    with pytest.raises(ValueError):
        debiased_l2_ece_entry(p, y, seed=0, strata=["a"] * 19)
    with pytest.raises(ValueError):
        expected_ece_if_calibrated(np.r_[p, 1.5], seed=0)


# --- calibrated reference for the raw ECE -----------------------------------------------------------


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_expected_ece_if_calibrated_matches_fresh_calibrated_draws(strategy):
    p, _ = planted(9)
    reference = expected_ece_if_calibrated(p, strategy=strategy, n_draws=300, seed=0)
    assert reference["n_draws"] == 300
    assert 0.0 < reference["band"][0] < reference["mean"] < reference["band"][1]
    rng = np.random.default_rng(100)
    fresh = np.array([st.ece(p, (rng.random(len(p)) < p).astype(int), strategy=strategy) for _ in range(300)])
    standard_error = fresh.std(ddof=1) * np.sqrt(2.0 / len(fresh))
    assert reference["mean"] == pytest.approx(fresh.mean(), abs=4 * standard_error)
    assert reference == expected_ece_if_calibrated(p, strategy=strategy, n_draws=300, seed=0)
