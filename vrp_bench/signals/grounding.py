"""Attention against ground-truth boxes: how much of the map falls inside the target object(s).

Boxes are ``[x0, y0, x1, y1]`` pixel coordinates with exclusive x1/y1 (the ``vrp_shapes`` and PIL
crop convention). The patch grid splits the image evenly: cell (i, j) spans
x in [j W / cols, (j+1) W / cols), y in [i H / rows, (i+1) H / rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vrp_bench.signals.structural import normalize_map


def box_weights(
    boxes: Sequence[Sequence[float]], image_size: tuple[int, int], grid: tuple[int, int]
) -> np.ndarray:
    """w[i, j] in [0, 1]: the fraction of cell (i, j)'s area covered by the union of the boxes.

    ``image_size`` is (width, height), ``grid`` is (rows, cols). Exact for fractional boxes and
    cells: the plane is cut at every box and cell edge, and covered pieces are summed per cell.
    Boxes are clipped to the image. No boxes, or an empty box (x1 <= x0 or y1 <= y0): ValueError.
    """
    width, height = image_size
    rows, cols = grid
    box_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(box_array) == 0:
        raise ValueError("box_weights needs at least one box")
    x0, y0, x1, y1 = box_array.T
    if np.any(x1 <= x0) or np.any(y1 <= y0):
        raise ValueError(f"boxes must have x1 > x0 and y1 > y0, got {box_array.tolist()}")
    xs = _edges(box_array[:, [0, 2]], width)
    ys = _edges(box_array[:, [1, 3]], height)
    x_mid, y_mid = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    in_x = (x0[:, None] <= x_mid) & (x_mid < x1[:, None])  # [boxes, x pieces]
    in_y = (y0[:, None] <= y_mid) & (y_mid < y1[:, None])  # [boxes, y pieces]
    covered = np.any(in_y[:, :, None] & in_x[:, None, :], axis=0).astype(np.float64)
    area = _overlaps(ys, rows, height) @ covered @ _overlaps(xs, cols, width).T
    return np.clip(area / ((width / cols) * (height / rows)), 0.0, 1.0)


def _edges(coordinates: np.ndarray, length: float) -> np.ndarray:
    """Sorted distinct cut points along one axis: the box edges clipped to [0, length], plus 0 and length."""
    return np.unique(np.clip(np.append(coordinates.ravel(), [0.0, length]), 0.0, length))


def _overlaps(edges: np.ndarray, n_cells: int, length: float) -> np.ndarray:
    """[n_cells, len(edges) - 1]: the length of piece [edges[k], edges[k+1]) inside cell i."""
    cells = np.linspace(0.0, length, n_cells + 1)
    low = np.maximum(cells[:-1, None], edges[None, :-1])
    high = np.minimum(cells[1:, None], edges[None, 1:])
    return np.clip(high - low, 0.0, None)


def grounding_mass(m: np.ndarray, weights: np.ndarray) -> float:
    """G = sum_ij M_ij w_ij of the normalised map: the attention mass inside the box(es), in [0, 1]."""
    p = normalize_map(m)
    _check_shapes(p, weights)
    return float(np.sum(p * weights))


def pointing_hit(m: np.ndarray, weights: np.ndarray) -> bool:
    """Pointing game: True when every argmax cell of M has w > 0.

    Ties count as a hit only if all tied peaks touch a box, so a flat (uniform) map scores a miss
    unless the boxes touch every cell.
    """
    p = normalize_map(m)
    _check_shapes(p, weights)
    return bool(np.all(np.asarray(weights)[p == p.max()] > 0))


def _check_shapes(m: np.ndarray, weights: np.ndarray) -> None:
    if m.shape != np.shape(weights):
        raise ValueError(f"map shape {m.shape} differs from box-weight shape {np.shape(weights)}")
