"""Planted dependence: correctness is drawn from the box attention mass and the token log-prob, never
from entropy; the computed signals must recover exactly that, through compute_signals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from vrp_bench.signals.compute import compute_signals
from vrp_bench.signals.inputs import SignalInputs

N_SAMPLES = 400
ROWS = COLS = 12
IMAGE_SIZE = (240, 120)  # (width, height): cells are 20 x 10 px, so swapping x and y breaks the box
BOX = [120, 0, 240, 60]  # top-right 6 x 6 cells; transposed it would be the bottom-left block
IN_BOX = np.zeros((ROWS, COLS), dtype=bool)
IN_BOX[:6, 6:] = True


def planted_sample(rng: np.random.Generator) -> tuple[SignalInputs, dict[str, float], int]:
    """One sample: box mass g and support size n drawn independently; y depends on g and P_tok only.

    The aggregated map puts g / n on n random box cells and (1 - g) / n on n random cells outside,
    so H_s = H2(g) + ln n exactly: its ln n part is independent noise and H2(g) is symmetric
    around g = 0.5. The raw map scale (the image's share of attention) depends on y, so a signal
    that forgets to normalise would correlate with correctness.
    """
    g = rng.uniform(0.1, 0.9)
    n = int(rng.integers(1, 37))
    token_logprobs = rng.uniform(-2.0, 0.0) + rng.normal(0.0, 0.2, size=int(rng.integers(1, 6)))
    token_logprobs = np.minimum(token_logprobs, 0.0)
    p_tok = float(np.mean(token_logprobs))
    y = int(rng.random() < 1 / (1 + math.exp(-(6 * (g - 0.5) + 3 * (p_tok + 1)))))

    planted = np.zeros(ROWS * COLS)
    planted[rng.choice(np.flatnonzero(IN_BOX), n, replace=False)] = g / n
    planted[rng.choice(np.flatnonzero(~IN_BOX), n, replace=False)] = (1 - g) / n
    scale = 0.2 + 0.6 * y  # share of attention on the image
    stack = np.stack([rng.random((ROWS, COLS)), scale * planted.reshape(ROWS, COLS)])  # layer 0 is noise
    capture = SignalInputs.of(
        answer_attention_mean=stack,
        image_size=IMAGE_SIZE,
        boxes=[BOX],
        token_logprobs=token_logprobs,
        token_entropies=rng.uniform(0.0, 2.0, size=len(token_logprobs)),
    )
    h2 = -(g * math.log(g) + (1 - g) * math.log(1 - g))
    return capture, {"g": g, "h_s": h2 + math.log(n), "p_tok": p_tok}, y


def test_signals_recover_the_planted_dependence():
    rng = np.random.default_rng(20260617)
    columns: dict[str, list[float]] = {"grounding_mass": [], "p_tok": [], "h_s": [], "mean_entropy": []}
    y = []
    for _ in range(N_SAMPLES):
        capture, truth, correct = planted_sample(rng)
        signals = compute_signals(capture).values
        assert signals["grounding_mass"] == pytest.approx(truth["g"])
        assert signals["h_s"] == pytest.approx(truth["h_s"], abs=1e-6)
        assert signals["p_tok"] == pytest.approx(truth["p_tok"])
        for name, values in columns.items():
            values.append(signals[name])
        y.append(correct)

    assert 0.3 < np.mean(y) < 0.7
    r = {name: stats.pointbiserialr(y, values).statistic for name, values in columns.items()}
    # planted effects give r ~ 0.45; independent signals |r| < 3 standard errors (1 / sqrt(N) = 0.05);
    # forgetting to normalise the map would give r(h_s) ~ 0.85
    assert r["grounding_mass"] > 0.3, r
    assert r["p_tok"] > 0.3, r
    assert abs(r["h_s"]) < 0.15, r
    assert abs(r["mean_entropy"]) < 0.15, r
