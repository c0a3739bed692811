"""Residual-stream dynamics of the prompt pass: the study's "late-stage forcing" and the blocks' shares of the
truth-margin growth.

``update_norms[l]`` is decoder layer l's ``||output - input||_2`` (``Traces.residual_update_image``: mean over the
image-token positions; ``residual_update_last``: the last prompt position). The study describes LLaVA's image
positions as dormant through most layers, then sharply rising in the last ones. ``attention[l]`` / ``mlp[l]`` are
the attention / MLP block's contributions to the logit-lens truth margin's change across decoder layer l
(``Traces.margin_attention`` / ``margin_mlp``); the study attributes 82% of LLaVA's margin growth to MLPs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def forcing_layer(update_norms: Sequence[float]) -> int | None:
    """The decoder layer where the largest rise of the update norm lands: 1 + argmax_l (u[l+1] - u[l]);
    None when L < 2. The first such layer on ties; a profile that never rises still gets its smallest fall."""
    rises = np.diff(np.asarray(update_norms, dtype=np.float64))
    return int(np.argmax(rises)) + 1 if len(rises) else None


def late_window(n_layers: int, fraction: float) -> int:
    """k = max(1, ceil(fraction * L)), capped at L - 1: how many last layers count as "late"."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return min(n_layers - 1, max(1, math.ceil(round(fraction * n_layers, 9))))


def late_forcing(update_norms: Sequence[float], fraction: float = 0.25) -> float | None:
    """mean(u[L-k:]) / mean(u[:L-k]), k = ``late_window(L, fraction)``: how much more the last k decoder layers
    write than the layers before them (1 = evenly; the study's "sharp rise" is >> 1). None when L < 2 or the
    earlier layers write nothing."""
    norms = np.asarray(update_norms, dtype=np.float64)
    window = late_window(len(norms), fraction)
    if len(norms) < 2:
        return None
    before = float(norms[: len(norms) - window].mean())
    return float(norms[len(norms) - window :].mean() / before) if before > 0 else None


def mlp_share(attention: Sequence[float], mlp: Sequence[float]) -> float | None:
    """sum_l |mlp_l| / sum_l (|attention_l| + |mlp_l|): the MLP blocks' share of how far the two kinds of block move
    the truth margin (``models.logit_lens``: each block's direct contribution to the margin's change per layer), in
    [0, 1]. Absolute values, because one sample's signed sums can cancel to nearly 0 and make a signed share
    meaningless (the report's ``mechanisms`` section gives the signed share of the growth summed over samples).
    None when no block moves the margin."""
    attention_moved, mlp_moved = float(np.abs(attention).sum()), float(np.abs(mlp).sum())
    total = attention_moved + mlp_moved
    return mlp_moved / total if total > 0 else None


def peak_layer(contributions: Sequence[float]) -> int | None:
    """The decoder layer of the largest contribution (the first on ties); None for an empty profile."""
    return int(np.argmax(contributions)) if len(contributions) else None
