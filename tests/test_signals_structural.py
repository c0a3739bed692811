"""Hand-computed values of the attention-structure signals (vrp_bench.signals.structural)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from vrp_bench.report.comparability import differences
from vrp_bench.signals.compute import compute_signals
from vrp_bench.signals.inputs import SignalInputs, SignalSettings
from vrp_bench.signals.structural import (
    cluster_count_components,
    cluster_count_dbscan,
    early_lock_layer,
    entropy_deltas,
    late_diffusion,
    normalize_map,
    spatial_entropy,
    spatial_entropy_peruzzo,
    top_cell_count,
    top_cells,
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


def test_dbscan_keeps_exactly_k_top_cells_with_ties_broken_by_position():
    # k = ceil((100 - percentile) / 100 * N): the study's top 10% at percentile 90
    assert [top_cell_count(n, 90.0) for n in (9, 16, 100, 576)] == [1, 2, 10, 58]
    assert top_cell_count(1000, 90.1) == 99 and top_cell_count(10, 100.0) == 0 and top_cell_count(10, 0.0) == 10
    for bad in (-1.0, 100.5):
        with pytest.raises(ValueError):
            top_cell_count(10, bad)
    # a mostly-zero map keeps k = 10 cells, not its 97 zeros tied with P90 = 0: its 3 hot cells, then the
    # earliest zeros in row-major order
    sparse = np.zeros((10, 10))
    sparse[[9, 5, 0], [9, 5, 5]] = [3.0, 2.0, 1.0]
    kept = top_cells(sparse).tolist()
    assert len(kept) == 10
    assert kept == [[0, c] for c in range(8)] + [[5, 5], [9, 9]]
    # ties broken by position: three equal maxima, k = 2 keeps the two earliest in row-major order
    tied = np.ones((4, 4))
    tied[[3, 2, 0], [3, 0, 2]] = 5.0
    assert top_cells(tied).tolist() == [[0, 2], [2, 0]]
    assert top_cells(np.ones((4, 4))).tolist() == [[0, 0], [0, 1]]
    # the old rule (M >= P90) kept all 16 cells of a one-hot 4x4 map: one cluster; now k = 2 < min_samples: 0
    one_hot = np.zeros((4, 4))
    one_hot[2, 2] = 1.0
    assert cluster_count_dbscan(one_hot) == 0


def test_connectivity_4_and_8_differ_on_a_diagonal_and_is_a_setting():
    diagonal = np.eye(4)  # the 4 diagonal cells touch only at corners
    assert spatial_entropy_peruzzo(diagonal) == 0.0  # default 8: one component
    assert spatial_entropy_peruzzo(diagonal, connectivity=8) == 0.0
    assert spatial_entropy_peruzzo(diagonal, connectivity=4) == pytest.approx(math.log(4))  # 4 equal components
    # top 30% of mass: the first two diagonal cells (0.25 each), one 8-connected focus, two 4-connected ones
    assert cluster_count_components(diagonal) == 0 and cluster_count_components(diagonal, connectivity=8) == 0
    assert cluster_count_components(diagonal, connectivity=4) == 1
    for bad in (0, 6, 9):
        with pytest.raises(ValueError, match="connectivity"):
            spatial_entropy_peruzzo(diagonal, connectivity=bad)
        with pytest.raises(ValueError, match="connectivity"):
            cluster_count_components(diagonal, connectivity=bad)
        with pytest.raises(ValueError, match="connectivity"):
            SignalSettings(connectivity=bad)
    # SignalSettings.connectivity reaches every component signal, per layer too
    stack = np.stack([diagonal, diagonal])
    names = ("h_s_peruzzo", "h_s_peruzzo_layers", "c_k_components", "c_k_components_layers")
    eight = compute_signals(SignalInputs.of(answer_attention_mean=stack), names=names).values
    four = compute_signals(SignalInputs.of(SignalSettings(connectivity=4), answer_attention_mean=stack),
                           names=names).values
    assert eight == {"h_s_peruzzo": 0.0, "h_s_peruzzo_layers": [0.0, 0.0], "c_k_components": 0,
                     "c_k_components_layers": [0, 0]}
    assert four["h_s_peruzzo"] == pytest.approx(math.log(4)) and four["c_k_components_layers"] == [1, 1]


def report_with_signals(signals: dict | None) -> dict:
    return {"config": {"signals": signals}, "results": {"t": {}}, "versions": {"t": 1}, "doc_sets": {"t": "x"}}


def test_connectivity_is_part_of_the_comparison_and_older_reports_count_as_8():
    current = dataclasses.asdict(SignalSettings())
    assert current["connectivity"] == 8
    older = {k: v for k, v in current.items() if k != "connectivity"}  # written before the setting existed
    assert differences(report_with_signals(older), report_with_signals(current)) == []
    four = report_with_signals({**current, "connectivity": 4})
    assert differences(report_with_signals(older), four) == ["different signal settings: connectivity"]
    assert differences(report_with_signals(current), four) == ["different signal settings: connectivity"]


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
