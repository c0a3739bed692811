"""Residual-stream dynamics (late-stage forcing, the blocks' shares of the truth margin): hand-computed cases."""

from __future__ import annotations

import pytest

from vrp_bench.signals.residual import forcing_layer, late_forcing, mlp_share, peak_layer


def test_forcing_layer_is_where_the_largest_rise_lands() -> None:
    assert forcing_layer([1.0, 1.1, 1.0, 5.0]) == 3  # rises 0.1, -0.1, 4.0
    assert forcing_layer([3.0, 2.0, 0.5]) == 1  # never rises: the smallest fall (-1 before -1.5)
    assert forcing_layer([2.0, 4.0, 6.0]) == 1  # equal rises: the first
    assert forcing_layer([1.0]) is None and forcing_layer([]) is None


def test_late_forcing_compares_the_last_layers_with_the_rest() -> None:
    # L = 8, fraction 0.25: k = 2; the last two layers write 10, the first six 1 -> 10
    assert late_forcing([1, 1, 1, 1, 1, 1, 10, 10]) == pytest.approx(10.0)
    assert late_forcing([2, 2, 2, 2]) == pytest.approx(1.0)  # k = 1
    assert late_forcing([1, 3], fraction=1.0) == pytest.approx(3.0)  # k is capped at L - 1
    assert late_forcing([0, 0, 5]) is None and late_forcing([4]) is None
    with pytest.raises(ValueError):
        late_forcing([1, 2], fraction=0)


def test_mlp_share_and_peak_layer_by_hand():
    assert mlp_share([1.0, -1.0], [2.0, 0.0]) == pytest.approx(0.5)  # |2| / (|1| + |-1| + |2|)
    assert mlp_share([0.0, 0.0], [0.0, 3.0]) == pytest.approx(1.0)
    assert mlp_share([0.0], [0.0]) is None
    assert peak_layer([0.1, 0.7, 0.7, -1.0]) == 1 and peak_layer([]) is None
