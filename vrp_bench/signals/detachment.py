"""Symbolic detachment: how far the decoder's gaze lies from the vision encoder's, and its late gaze from its early one.

Every map is first normalised to sum 1 (``structural.normalize_map``), so raw attention weights of any scale can be
passed. The vision encoder's map lives on its own patch grid, which may be finer than the decoder's (Qwen2-VL merges
2x2 patches into one decoder token; LLaVA and PaliGemma keep one grid): it is sum-pooled onto the decoder's grid
(``pool_to_grid``) before the two are compared. Decoder layers are numbered like Hugging Face's ``output_attentions``
(l = 0..L-1). Divergences are in nats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

from vrp_bench.signals.structural import normalize_map


def pool_to_grid(attention_map: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Block sums of M [R, C] on an [r, c] grid: P[i, j] = sum of M[i R/r : (i+1) R/r, j C/c : (j+1) C/c].

    The mass is kept (sum P = sum M); the identity when (r, c) = (R, C). ValueError unless R % r == 0 and
    C % c == 0 (e.g. Qwen2-VL's 2x2 merge: an 8x8 vision map onto a 4x4 decoder grid).
    """
    m = np.asarray(attention_map, dtype=np.float64)
    rows, cols = (int(n) for n in shape)
    if m.ndim != 2 or rows < 1 or cols < 1 or m.shape[0] % rows or m.shape[1] % cols:
        raise ValueError(f"cannot sum-pool a {'x'.join(map(str, m.shape))} map onto a {rows}x{cols} grid: "
                         "each side of the grid must divide the map's")
    return m.reshape(rows, m.shape[0] // rows, cols, m.shape[1] // cols).sum(axis=(1, 3))


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """JS(P, Q) = (KL(P || A) + KL(Q || A)) / 2, A = (P + Q) / 2, of the normalised maps (nats; 0 ln 0 = 0).

    Symmetric, in [0, ln 2]: 0 for proportional maps, ln 2 for maps with disjoint supports. scipy's
    ``spatial.distance.jensenshannon`` returns its square root. ValueError when the shapes differ, or when a map
    is no distribution once normalised (zero total mass, a negative or non-finite weight: ``normalize_map``): there
    is no gaze to compare, and the signal is null with that reason.
    """
    if np.shape(p) != np.shape(q):
        raise ValueError(f"maps of shapes {np.shape(p)} and {np.shape(q)} are not on one grid")
    p, q = normalize_map(p), normalize_map(q)
    a = (p + q) / 2
    divergence = (special.rel_entr(p, a).sum() + special.rel_entr(q, a).sum()) / 2
    return float(min(max(divergence, 0.0), math.log(2)))


def gaze_divergence_layers(vision_map: np.ndarray, decoder_maps: np.ndarray) -> list[float]:
    """JS(V, D[l]) for each decoder layer l = 0..L-1 (``jensen_shannon``).

    V: the normalised vision map [R, C] sum-pooled onto the decoder grid (``pool_to_grid``); D[l]: decoder layer l's
    normalised map [r, c]. ``vision_map`` is one map: the signals pass the last vision block's
    (``SignalInputs.vision_gaze``).
    """
    gaze = pool_to_grid(normalize_map(vision_map), np.shape(decoder_maps)[1:])
    return [jensen_shannon(gaze, layer) for layer in decoder_maps]


def early_late_correlation(decoder_maps: np.ndarray) -> float | None:
    """Pearson r over the grid cells between the early and the late gaze of the decoder.

    E = mean of the normalised maps of layers 0 .. L//2 - 1, T = of layers L//2 .. L-1 (the second half, the
    default aggregated layers; each layer weighs equally); r = sum (E - mean E)(T - mean T) /
    sqrt(sum (E - mean E)^2 sum (T - mean T)^2), in [-1, 1]: 1 when the late layers look where the early ones did.
    None when L < 2 (no early half). ValueError when E or T is constant (e.g. uniform): r is undefined; or when a
    layer's map has zero mass (``normalize_map``).
    """
    n_layers = len(decoder_maps)
    if n_layers < 2:
        return None
    early, late = (np.mean([normalize_map(m) for m in half], axis=0).ravel()
                   for half in (decoder_maps[: n_layers // 2], decoder_maps[n_layers // 2 :]))
    if np.all(early == early[0]) or np.all(late == late[0]):
        raise ValueError("the correlation of the early and late decoder maps is undefined: a map is constant")
    early, late = early - early.mean(), late - late.mean()
    r = np.dot(early, late) / math.sqrt(np.dot(early, early) * np.dot(late, late))
    return float(min(max(r, -1.0), 1.0))
