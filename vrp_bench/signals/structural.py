"""Structure of one attention map M [rows, cols] and of a per-layer entropy profile.

Every map is first normalised to sum 1 (``normalize_map``), so raw attention weights of any
scale can be passed. Entropies are in nats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage, stats
from sklearn.cluster import DBSCAN

_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def normalize_map(m: np.ndarray) -> np.ndarray:
    """M / sum(M) as float64; M must be finite, non-negative and not all zero (else ValueError)."""
    m = np.asarray(m, dtype=np.float64)
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError("an attention map must be finite and non-negative")
    total = m.sum()
    if total <= 0:
        raise ValueError("an attention map with zero total mass cannot be normalised")
    return m / total


def spatial_entropy(m: np.ndarray) -> float:
    """H_s = -sum_ij M_ij ln M_ij of the normalised map (0 ln 0 = 0), in [0, ln N]: ln N for uniform over N
    cells, 0 for one-hot. The study's -sum M ln(M + 1e-9) differs by less than 1e-8 but can dip below 0."""
    p = normalize_map(m)
    positive = p[p > 0]
    return float(max(0.0, -np.sum(positive * np.log(positive))))


def spatial_entropy_peruzzo(m: np.ndarray) -> float:
    """Peruzzo et al. 2022: H = -sum_j p_j ln p_j over the 8-connected components j of {M_ij > mean(M)}.

    p_j = mass of component j / mass above the mean. A constant map has no cell above its mean
    and is one flat region: 0.0.
    """
    p = normalize_map(m)
    labels, n_components = ndimage.label(p > p.mean(), structure=_EIGHT_CONNECTED)
    if n_components == 0:
        return 0.0
    masses = ndimage.sum_labels(p, labels, index=np.arange(1, n_components + 1))
    return float(stats.entropy(masses))


def cluster_count_dbscan(
    m: np.ndarray, percentile: float = 90.0, eps: float = 1.5, min_samples: int = 3
) -> int:
    """C_k (earlier variant): clusters of DBSCAN(eps, min_samples) on the (row, col) of cells >= the percentile.

    Noise is not a cluster; 0 when fewer than ``min_samples`` cells survive. Cells tied with the
    percentile survive, so in a map that is mostly zeros the zero cells survive too (published rule).
    """
    p = normalize_map(m)
    coords = np.argwhere(p >= np.percentile(p, percentile))
    if len(coords) < min_samples:
        return 0
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(coords)
    return len(set(labels.tolist()) - {-1})


def cluster_count_components(m: np.ndarray, top_mass: float = 0.3) -> int:
    """C_k (final variant): 8-connected components of the top-mass mask, minus 1 (0 = one dominant focus).

    The mask is the smallest set of highest cells whose mass is >= top_mass (ties between equal
    cells are taken in row-major order).
    """
    if not 0 < top_mass <= 1:
        raise ValueError(f"top_mass must be in (0, 1], got {top_mass}")
    p = normalize_map(m)
    order = np.argsort(-p.ravel(), kind="stable")
    cumulative = np.cumsum(p.ravel()[order])
    n_cells = min(int(np.searchsorted(cumulative, top_mass - 1e-12)) + 1, p.size)
    mask = np.zeros(p.size, dtype=bool)
    mask[order[:n_cells]] = True
    _, n_components = ndimage.label(mask.reshape(p.shape), structure=_EIGHT_CONNECTED)
    return n_components - 1


def entropy_deltas(h_layers: Sequence[float]) -> list[float]:
    """dH_s[l] = H_s[l] - H_s[l-1] for l = 1..L-1 (length L-1; [] when L < 2). Entry i lands at layer i+1."""
    return [float(d) for d in np.diff(np.asarray(h_layers, dtype=np.float64))]


def early_lock_layer(h_layers: Sequence[float]) -> int | None:
    """The layer l (index into h_layers) where the largest drop lands: 1 + argmin_i dH_s[i]; None when L < 2.

    The first such layer on ties; a profile that never drops still gets its smallest rise.
    """
    deltas = entropy_deltas(h_layers)
    return int(np.argmin(deltas)) + 1 if deltas else None


def late_diffusion(h_layers: Sequence[float], fraction: float = 0.25) -> float | None:
    """H_s[L-1] - H_s[L-k], k = max(2, ceil(fraction * L)): the entropy change across the last k layers.

    E.g. L = 32, fraction 0.25: H_s[31] - H_s[24]. None when L < 2.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n_layers = len(h_layers)
    if n_layers < 2:
        return None
    window = max(2, math.ceil(round(fraction * n_layers, 9)))  # round: 0.3 * 10 is 3.0000000000000004
    return float(h_layers[-1] - h_layers[n_layers - window])
