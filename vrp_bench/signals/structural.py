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

CONNECTIVITY = 8
"""Default neighbourhood of the connected-component signals: 8 (a cell touches the 8 around it, diagonals
included). Peruzzo et al. 2022 define their entropy on 8-connected regions; the study does not say for its final
C_k, which takes the same rule so that both component signals agree, and so that a focus running diagonally
across the patch grid is one focus, not several. It is also what reports written before the setting used. 4 (edges
only) is scipy's ``ndimage.label`` default, so the structure is always given explicitly."""


def _structure(connectivity: int) -> np.ndarray:
    """scipy's structuring element of 4-connectivity (a cross) or 8-connectivity (a 3x3 block); else ValueError."""
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    return ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)


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


def spatial_entropy_peruzzo(m: np.ndarray, connectivity: int = CONNECTIVITY) -> float:
    """Peruzzo et al. 2022: H = -sum_j p_j ln p_j over the connected components j of {M_ij > mean(M)}.

    p_j = mass of component j / mass above the mean. ``connectivity``: 8 (default, Peruzzo et al.'s; see
    ``CONNECTIVITY``) or 4 neighbours; anything else is a ValueError. A constant map has no cell above its
    mean and is one flat region: 0.0.
    """
    structure = _structure(connectivity)
    p = normalize_map(m)
    labels, n_components = ndimage.label(p > p.mean(), structure=structure)
    if n_components == 0:
        return 0.0
    masses = ndimage.sum_labels(p, labels, index=np.arange(1, n_components + 1))
    return float(stats.entropy(masses))


def top_cell_count(n_cells: int, percentile: float) -> int:
    """k = ceil((100 - percentile) / 100 * N): the cells "above the percentile" of N cells, e.g. percentile 90
    (the study's top 10%): 2 of a 4x4 map, 58 of 24x24. ValueError unless 0 <= percentile <= 100."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    return math.ceil(round((100 - percentile) * n_cells / 100, 9))  # round: 9.9% of 1000 is 99.00000000000006


def top_cells(m: np.ndarray, percentile: float = 90.0) -> np.ndarray:
    """[k, 2] (row, col) of the k = ``top_cell_count(N, percentile)`` highest cells of M, in row-major order.

    Ties are broken by position: a stable sort on -M, so of equal cells the earlier in row-major order is kept.
    Exactly k cells however many tie at the cut, where thresholding (M >= the 90th percentile) would keep all
    of them: every zero cell of a mostly-zero map, whose P90 is 0.
    """
    p = normalize_map(m)
    kept = np.sort(np.argsort(-p.ravel(), kind="stable")[: top_cell_count(p.size, percentile)])
    return np.column_stack(np.unravel_index(kept, p.shape))


def cluster_count_dbscan(
    m: np.ndarray, percentile: float = 90.0, eps: float = 1.5, min_samples: int = 3
) -> int:
    """C_k (earlier variant): clusters of DBSCAN(eps, min_samples) on the (row, col) of the top cells.

    The top cells are exactly k = ceil((100 - percentile) / 100 * N) of the N cells (``top_cells``): the k
    highest, ties broken by position (row-major order, earlier cells first). Noise is not a cluster; 0 when
    k < ``min_samples``.
    """
    coords = top_cells(m, percentile)
    if len(coords) < min_samples:
        return 0
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(coords)
    return len(set(labels.tolist()) - {-1})


def cluster_count_components(m: np.ndarray, top_mass: float = 0.3, connectivity: int = CONNECTIVITY) -> int:
    """C_k (final variant): connected components of the top-mass mask, minus 1 (0 = one dominant focus).

    The mask is the smallest set of highest cells whose mass is >= top_mass (ties between equal cells are taken
    in row-major order). ``connectivity``: 8 (default; the study does not say, see ``CONNECTIVITY``) or 4
    neighbours; anything else is a ValueError.
    """
    if not 0 < top_mass <= 1:
        raise ValueError(f"top_mass must be in (0, 1], got {top_mass}")
    structure = _structure(connectivity)
    p = normalize_map(m)
    order = np.argsort(-p.ravel(), kind="stable")
    cumulative = np.cumsum(p.ravel()[order])
    n_cells = min(int(np.searchsorted(cumulative, top_mass - 1e-12)) + 1, p.size)
    mask = np.zeros(p.size, dtype=bool)
    mask[order[:n_cells]] = True
    _, n_components = ndimage.label(mask.reshape(p.shape), structure=structure)
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
