"""Hand-computed values of the detachment measure (vrp_bench.signals.detachment): the gaze divergence between the
vision encoder and each decoder layer, the early-late correlation of the decoder, and both signals through
compute_signals, with a planted dependence of correctness on detachment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import spatial, stats

from vrp_bench.signals.catalogue import SIGNALS
from vrp_bench.signals.compute import compute_signals
from vrp_bench.signals.detachment import early_late_correlation, gaze_divergence_layers, jensen_shannon, pool_to_grid
from vrp_bench.signals.inputs import SignalInputs, SignalSettings

LN2 = math.log(2)
NAMES = ("gaze_divergence", "gaze_divergence_layers", "early_late_correlation")


def region(shape: tuple[int, int], rows: slice, cols: slice, value: float = 1.0) -> np.ndarray:
    """A map of ``value`` on the block [rows, cols], zero elsewhere."""
    m = np.zeros(shape)
    m[rows, cols] = value
    return m


# --- pooling ------------------------------------------------------------------------------------------------


def test_pool_to_grid_sums_blocks_and_keeps_mass():
    m = np.arange(16.0).reshape(4, 4)
    assert pool_to_grid(m, (2, 2)).tolist() == [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]
    assert pool_to_grid(m, (4, 4)).tolist() == m.tolist()  # same grid: identity
    assert pool_to_grid(m, (1, 1)).tolist() == [[m.sum()]]
    rectangle = np.arange(24.0).reshape(4, 6)  # rows and columns pooled by their own factors (2 and 3)
    assert pool_to_grid(rectangle, (2, 2)).tolist() == [[0 + 1 + 2 + 6 + 7 + 8, 3 + 4 + 5 + 9 + 10 + 11],
                                                        [12 + 13 + 14 + 18 + 19 + 20, 15 + 16 + 17 + 21 + 22 + 23]]


def test_pool_to_grid_refuses_incompatible_grids():
    for shape in ((3, 3), (4, 3), (8, 8), (0, 2)):
        with pytest.raises(ValueError, match=r"cannot sum-pool a 4x4 map onto"):
            pool_to_grid(np.ones((4, 4)), shape)


# --- Jensen-Shannon -----------------------------------------------------------------------------------------


def test_jensen_shannon_by_hand_on_a_2x2_grid():
    # P = (1, 0, 0, 0), Q = (1/2, 1/2, 0, 0), A = (3/4, 1/4, 0, 0):
    # KL(P || A) = ln(4/3), KL(Q || A) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3): JS = 3/4 ln(4/3)
    p, q = np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[3.0, 3.0], [0.0, 0.0]])  # raw scales differ
    assert jensen_shannon(p, q) == pytest.approx(0.75 * math.log(4 / 3))
    assert jensen_shannon(q, p) == pytest.approx(0.75 * math.log(4 / 3))  # symmetric


def test_jensen_shannon_is_scipys_square_on_a_4x4_grid():
    rng = np.random.default_rng(16)
    for _ in range(5):
        p, q = rng.random((4, 4)), 7.0 * rng.random((4, 4))
        p[rng.random((4, 4)) < 0.3] = 0.0  # some empty cells: 0 ln 0 = 0
        assert jensen_shannon(p, q) == pytest.approx(spatial.distance.jensenshannon(p.ravel(), q.ravel()) ** 2)


def test_jensen_shannon_bounds_equal_and_disjoint_maps():
    m = np.random.default_rng(0).random((4, 4))
    assert jensen_shannon(m, m) == 0.0
    assert jensen_shannon(m, 5.0 * m) == pytest.approx(0.0, abs=1e-15)  # proportional: the same gaze
    left, right = region((4, 4), slice(None), slice(0, 2)), region((4, 4), slice(None), slice(2, 4), 3.0)
    assert jensen_shannon(left, right) == pytest.approx(LN2)


def test_jensen_shannon_refuses_maps_without_a_gaze_or_on_other_grids():
    with pytest.raises(ValueError, match="zero total mass"):
        jensen_shannon(np.zeros((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        jensen_shannon(np.array([[1.0, -1.0]]), np.ones((1, 2)))
    with pytest.raises(ValueError, match="not on one grid"):
        jensen_shannon(np.ones((2, 2)), np.ones((4, 4)))


# --- gaze divergence per decoder layer ----------------------------------------------------------------------


def test_gaze_divergence_layers_pools_the_vision_map_onto_the_decoder_grid():
    vision = np.zeros((4, 4))
    vision[0, 0], vision[1, 1], vision[0, 3] = 1.0, 2.0, 1.0  # pooled: [[3, 1], [0, 0]] -> (3/4, 1/4, 0, 0)
    decoder = np.stack([
        [[6.0, 2.0], [0.0, 0.0]],  # the pooled vision gaze, scaled: 0
        [[1.0, 0.0], [0.0, 0.0]],  # (1, 0, 0, 0), A = (7/8, 1/8, 0, 0)
        [[0.0, 0.0], [1.0, 1.0]],  # disjoint: ln 2
    ])
    by_hand = (0.75 * math.log(0.75 / 0.875) + 0.25 * math.log(0.25 / 0.125) + math.log(1 / 0.875)) / 2
    assert gaze_divergence_layers(vision, decoder) == pytest.approx([0.0, by_hand, LN2])
    with pytest.raises(ValueError, match="cannot sum-pool a 3x3 map onto a 2x2 grid"):
        gaze_divergence_layers(np.ones((3, 3)), decoder)


def test_planted_gaze_built_from_the_vision_map_has_no_divergence_and_elsewhere_a_large_one():
    rng = np.random.default_rng(4)
    vision = region((8, 8), slice(0, 4), slice(0, 4)) * rng.random((8, 8))  # the encoder looks top-left
    followed = np.stack([scale * pool_to_grid(vision, (4, 4)) for scale in (0.1, 0.5, 2.0)])
    assert gaze_divergence_layers(vision, followed) == pytest.approx([0.0] * 3, abs=1e-12)
    elsewhere = region((4, 4), slice(2, 4), slice(2, 4)) * rng.random((4, 4))  # the decoder looks bottom-right
    assert gaze_divergence_layers(vision, elsewhere[None]) == pytest.approx([LN2])
    mixed = 0.8 * pool_to_grid(vision, (4, 4)) / vision.sum() + 0.2 * elsewhere / elsewhere.sum()
    assert 0.0 < gaze_divergence_layers(vision, mixed[None])[0] < 0.2 * LN2  # partly detached


# --- early-late correlation ---------------------------------------------------------------------------------


def test_early_late_correlation_by_hand_and_against_scipy():
    # E = (0.4, 0.3, 0.2, 0.1), T = (0.1, 0.2, 0.4, 0.3): centred dot -0.04, squared norms 0.05 each: r = -0.8
    early, late = np.array([[4.0, 3.0], [2.0, 1.0]]), np.array([[1.0, 2.0], [4.0, 3.0]])
    assert early_late_correlation(np.stack([early, late])) == pytest.approx(-0.8)
    # layers 0..L//2-1 against L//2..L-1, each normalised before the mean: L = 3 splits 1 | 2
    rng = np.random.default_rng(1)
    stack = rng.random((3, 4, 4)) * np.array([1.0, 10.0, 0.1])[:, None, None]
    later = (stack[1] / stack[1].sum() + stack[2] / stack[2].sum()) / 2
    expected = stats.pearsonr(stack[0].ravel(), later.ravel()).statistic
    assert early_late_correlation(stack) == pytest.approx(expected)


def test_early_late_correlation_is_plus_one_for_a_held_gaze_and_minus_one_for_an_inverted_one():
    m = np.random.default_rng(2).random((4, 4))
    held = np.stack([m, 2.0 * m, m + 0.5, 3.0 * m + 1.0])  # late maps: positive affine maps of the early ones
    inverted = np.stack([m, m, m.max() + 1.0 - m, 4.0 * (m.max() - m)])
    assert early_late_correlation(held) == pytest.approx(1.0)
    assert early_late_correlation(inverted) == pytest.approx(-1.0)
    assert early_late_correlation(inverted) == pytest.approx(stats.pearsonr(m.ravel(), -m.ravel()).statistic)


def test_early_late_correlation_is_none_with_one_layer_and_undefined_for_a_constant_map():
    assert early_late_correlation(np.ones((1, 4, 4))) is None
    with pytest.raises(ValueError, match="constant"):
        early_late_correlation(np.stack([np.ones((4, 4)), np.eye(4)]))
    with pytest.raises(ValueError, match="zero total mass"):
        early_late_correlation(np.zeros((2, 4, 4)))


# --- the signals --------------------------------------------------------------------------------------------


def test_signals_are_registered_with_their_orientation_and_needs():
    specs = {name: SIGNALS.get(name) for name in NAMES}
    assert {name: spec.orientation for name, spec in specs.items()} == {
        "gaze_divergence": -1, "gaze_divergence_layers": -1, "early_late_correlation": 1}
    assert specs["gaze_divergence"].needs == ("answer_attention_mean", "vision_attention")
    assert specs["early_late_correlation"].needs == ("answer_attention_mean",)
    assert all(spec.reference is None and not spec.probability for spec in specs.values())
    assert [name for name, spec in specs.items() if spec.per_layer] == ["gaze_divergence_layers"]


def test_qwen_like_grids_through_compute_signals():
    """Vision grid 8x8, decoder grid 4x4 (a 2x2 merge): the last vision block's gaze, pooled, against each layer."""
    gaze = region((8, 8), slice(0, 4), slice(4, 8)) + 0.01  # the last block looks top-right
    vision = np.stack([region((8, 8), slice(4, 8), slice(0, 4)), gaze])  # block 0 looks elsewhere: not used
    followed = pool_to_grid(gaze, (4, 4))
    away = region((4, 4), slice(2, 4), slice(0, 2))
    decoder = np.stack([away, away, 3.0 * followed, followed])  # the second half follows the encoder
    signals = compute_signals(SignalInputs.of(answer_attention_mean=decoder, vision_attention=vision), NAMES)
    assert signals.errors == {}
    pooled = followed.ravel() / followed.sum()
    assert signals.values["gaze_divergence_layers"] == pytest.approx(
        [spatial.distance.jensenshannon(pooled, away.ravel()) ** 2] * 2 + [0.0, 0.0], abs=1e-12)
    assert signals.values["gaze_divergence"] == pytest.approx(0.0, abs=1e-12)
    assert signals.values["early_late_correlation"] == pytest.approx(
        stats.pearsonr(away.ravel(), followed.ravel()).statistic)
    # the scalar reads the aggregated layers' mean map
    first = SignalInputs.of(SignalSettings(aggregate_layers=(0, 1)), answer_attention_mean=decoder,
                            vision_attention=vision)
    assert compute_signals(first, NAMES).values["gaze_divergence"] == pytest.approx(
        signals.values["gaze_divergence_layers"][0])


def test_signals_are_null_with_their_reason_on_bad_samples():
    decoder = np.random.default_rng(3).random((2, 4, 4))
    other_grid = compute_signals(SignalInputs.of(answer_attention_mean=decoder, vision_attention=np.ones((1, 6, 6))),
                                 NAMES)
    assert other_grid.values["gaze_divergence"] is None and other_grid.values["gaze_divergence_layers"] is None
    assert "cannot sum-pool a 6x6 map onto a 4x4 grid" in other_grid.errors["gaze_divergence"]
    assert other_grid.values["early_late_correlation"] is not None
    blind = compute_signals(SignalInputs.of(answer_attention_mean=decoder, vision_attention=np.zeros((1, 4, 4))), NAMES)
    assert "zero total mass" in blind.errors["gaze_divergence_layers"]
    flat = compute_signals(SignalInputs.of(answer_attention_mean=np.ones((2, 4, 4))), NAMES)
    assert flat.values == dict.fromkeys(NAMES) and "constant" in flat.errors["early_late_correlation"]
    one_layer = compute_signals(SignalInputs.of(answer_attention_mean=decoder[:1]), NAMES)
    assert one_layer.values["early_late_correlation"] is None and one_layer.errors == {}


def test_signals_recover_a_planted_dependence_of_correctness_on_detachment():
    """Per sample, the decoder's late layers mix the encoder's gaze with a region it did not look at, in share d;
    correctness falls with d. gaze_divergence (-1) and early_late_correlation (+1), oriented, rank correct higher;
    the unrelated vision entropy does not."""
    rng = np.random.default_rng(20260616)
    oriented: dict[str, list[float]] = {"gaze_divergence": [], "early_late_correlation": [], "vision_h_s": []}
    y = []
    for _ in range(300):
        d = rng.uniform(0.0, 1.0)
        gaze = region((8, 8), slice(0, 4), slice(0, 8)) * rng.random((8, 8)) + 0.001  # top half of the image
        evidence = pool_to_grid(gaze, (4, 4)) / gaze.sum()
        away = region((4, 4), slice(2, 4), slice(0, 4)) * rng.random((4, 4))
        late = (1 - d) * evidence + d * away / away.sum()
        decoder = np.stack([evidence, evidence, late, late]) + 1e-4 * rng.random((4, 4, 4))
        signals = compute_signals(SignalInputs.of(answer_attention_mean=decoder, vision_attention=gaze[None]),
                                  (*oriented, "gaze_divergence_layers")).values
        assert signals["gaze_divergence"] <= np.mean(signals["gaze_divergence_layers"][2:]) + 1e-12  # JS is convex
        assert max(signals["gaze_divergence_layers"][:2]) < 1e-3  # the early layers follow the encoder
        for name, values in oriented.items():
            values.append(SIGNALS.get(name).orientation * signals[name])
        y.append(int(rng.random() < 1 / (1 + math.exp(6 * (d - 0.5)))))

    assert 0.3 < np.mean(y) < 0.7
    r = {name: stats.pointbiserialr(y, values).statistic for name, values in oriented.items()}
    # planted effects give r ~ 0.6; unrelated |r| < 3 standard errors (1 / sqrt(300) ~ 0.06)
    assert r["gaze_divergence"] > 0.4 and r["early_late_correlation"] > 0.4, r
    assert abs(r["vision_h_s"]) < 0.18, r
