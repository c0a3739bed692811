"""Hand-computed values of the attention-structure signals (vrp_bench.signals.structural)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vrp_bench.signals.structural import (
    cluster_count_components,
    cluster_count_dbscan,
    early_lock_layer,
    entropy_deltas,
    late_diffusion,
    normalize_map,
    spatial_entropy,
    spatial_entropy_peruzzo,
)


def blob(shape: tuple[int, int], centers: list[tuple[int, int]]) -> np.ndarray:
    """3x3 blobs: centre 5, its 8 neighbours 1, zero elsewhere."""
    m = np.zeros(shape)
    for r, c in centers:
        m[r - 1 : r + 2, c - 1 : c + 2] = 1.0
        m[r, c] = 5.0
    return m


def test_normalize_map_sums_to_one_and_rejects_bad_maps():
    assert normalize_map(np.array([[1.0, 3.0]])).tolist() == [[0.25, 0.75]]
    for bad in (np.zeros((2, 2)), np.array([[1.0, -0.5]]), np.array([[np.nan, 1.0]])):
        with pytest.raises(ValueError):
            normalize_map(bad)


def test_spatial_entropy_uniform_is_ln_n_and_one_hot_is_zero():
    assert spatial_entropy(np.full((24, 24), 7.0)) == pytest.approx(math.log(576), abs=1e-6)
    one_hot = np.zeros((24, 24))
    one_hot[3, 5] = 0.2
    assert spatial_entropy(one_hot) == pytest.approx(0.0, abs=1e-6)
    # two equal cells: ln 2, whatever the raw scale
    assert spatial_entropy(np.array([[0.0, 0.3], [0.3, 0.0]])) == pytest.approx(math.log(2), abs=1e-6)


def test_peruzzo_entropy_over_above_mean_components():
    m = np.zeros((6, 6))
    m[0:2, 0:2] = 1.0
    m[4:6, 3:5] = 1.0
    assert spatial_entropy_peruzzo(m) == pytest.approx(math.log(2))
    m[4:6, 3:5] = 3.0  # masses 4 : 12 -> p = (1/4, 3/4)
    assert spatial_entropy_peruzzo(m) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    diagonal = np.eye(4)  # diagonal cells are 8-connected: one component
    assert spatial_entropy_peruzzo(diagonal) == 0.0
    assert spatial_entropy_peruzzo(np.ones((4, 4))) == 0.0


def test_dbscan_counts_separated_blobs():
    assert cluster_count_dbscan(blob((12, 12), [(2, 2), (8, 8)])) == 2
    assert cluster_count_dbscan(blob((6, 6), [(2, 2)])) == 1
    # a 3x3 map of distinct values keeps only its maximum (< min_samples): 0
    assert cluster_count_dbscan(np.arange(9.0).reshape(3, 3)) == 0


def test_components_counts_extra_foci():
    assert cluster_count_components(blob((12, 12), [(2, 2), (8, 8)])) == 1
    assert cluster_count_components(blob((12, 12), [(2, 2)])) == 0
    # top 30% of mass in a uniform 10x10 map: the first 30 cells in row-major order, one block
    assert cluster_count_components(np.ones((10, 10))) == 0
    with pytest.raises(ValueError):
        cluster_count_components(np.ones((2, 2)), top_mass=0.0)


# The study's LLaVA profile: a big drop landing at layer 2, flat, a rise at the last layer.
LLAVA_PROFILE = [5.8, 5.6, 3.1] + [3.1] * 28 + [4.1]


def test_entropy_deltas_early_lock_and_late_diffusion_on_llava_profile():
    deltas = entropy_deltas(LLAVA_PROFILE)
    assert len(deltas) == 31
    assert deltas[1] == pytest.approx(-2.5) and deltas[30] == pytest.approx(1.0)
    assert early_lock_layer(LLAVA_PROFILE) == 2
    # k = ceil(0.25 * 32) = 8: H_s[31] - H_s[24]
    assert late_diffusion(LLAVA_PROFILE) == pytest.approx(1.0)
    assert late_diffusion(LLAVA_PROFILE, fraction=1.0) == pytest.approx(4.1 - 5.8)


def test_layer_profile_edge_cases():
    assert entropy_deltas([3.0]) == []
    assert early_lock_layer([3.0]) is None and late_diffusion([3.0]) is None
    assert late_diffusion([1.0, 2.0, 4.0], fraction=0.1) == pytest.approx(2.0)  # k = max(2, 1)
    assert late_diffusion([float(i) for i in range(10)], fraction=0.3) == pytest.approx(2.0)  # k = 3, not 4
    with pytest.raises(ValueError):
        late_diffusion([1.0, 2.0], fraction=0.0)
