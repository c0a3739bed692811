"""L2-penalised logistic regression on plain arrays (the "logistic" probe), many fits at once.

Each fit minimises sklearn's ``LogisticRegression(C=C)`` objective on standardised features (the intercept is
not penalised):

    f(w, b) = 0.5 ||w||^2 + C sum_i log(1 + exp(-s_i (z_i . w + b))),   s_i = 2 y_i - 1,   z_i = (x_i - mean) / scale,

with gradient  w + C Z^T r  and  C sum_i r_i,  r_i = -s_i sigmoid(-s_i (z_i . w + b)); mean and scale (the
standard deviation, 1 where it is 0) come from the fit's own training rows. f is strictly convex, so any solver
reaches the same optimum. Cross-validation and its permutation test fit hundreds of small probes on the same
rows (other folds, other layers, other labels), so ``fit_l2_logistic`` runs one L-BFGS for all of them at once:
every step is one matrix product per layer for every fit, and a fit stops when every partial derivative of its f
is at most ``GRADIENT_TOLERANCE`` (tighter than sklearn's default).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

GRADIENT_TOLERANCE = 1e-5
"""A fit has converged when max |df/dw_j|, |df/db| <= this (f sums over samples)."""
MAX_ITERATIONS = 2000
HISTORY = 10
"""Curvature pairs L-BFGS keeps."""
ARMIJO = 1e-4
MAX_HALVINGS = 40
PRECONDITION_MAX_FEATURES = 2048
"""Up to this many features a fit starts from an approximate curvature (a d x d eigendecomposition per layer)."""
PRECISION = 1e-13
"""Changes of f this small relative to f are rounding: a step that makes one is not refused for it."""


@dataclass
class Standardisation:
    """z = (x - mean_) / scale_, fitted on a fit's training rows (sklearn's StandardScaler: ddof 0, 1 for 0)."""

    mean_: np.ndarray
    scale_: np.ndarray

    @staticmethod
    def fit(features: np.ndarray) -> Standardisation:
        mean, scale = features.mean(axis=0), features.std(axis=0)
        constant = scale <= 1e-12 * np.maximum(1.0, np.abs(mean))  # rounding, not spread
        return Standardisation(mean, np.where(constant, 1.0, scale))

    def transform(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float64) - self.mean_) / self.scale_


@dataclass
class L2Logistic:
    """A fitted L2 logistic regression on standardised features: P(y = 1 | z) = sigmoid(z . coef + intercept)."""

    coef_: np.ndarray
    """[1, d], as sklearn shapes it."""
    intercept_: np.ndarray
    """[1]."""
    n_iter_: int

    def predict_proba(self, standardised: np.ndarray) -> np.ndarray:
        """[n, 2]: P(y = 0), P(y = 1) per row of ``standardised`` [n, d]."""
        positive = expit(np.asarray(standardised, dtype=np.float64) @ self.coef_[0] + self.intercept_[0])
        return np.column_stack([1.0 - positive, positive])


class _Problems:
    """The fits of ``fit_l2_logistic``: f and its gradient for every fit at once."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, problems: Sequence[tuple[int, np.ndarray]],
                 C: float) -> None:
        features = np.asarray(features, dtype=np.float64)  # [n, layers, d]
        self.signs = 2.0 * np.asarray(labels, dtype=np.float64) - 1.0
        self.C = C
        n, _, d = features.shape
        self.layers = np.array([layer for layer, _ in problems])
        self.rows = np.zeros((n, len(problems)))  # 1 where sample i trains fit b
        self.scalers = []
        for b, (layer, train) in enumerate(problems):
            self.rows[train, b] = 1.0
            self.scalers.append(Standardisation.fit(features[train, layer]))
        self.mean = np.stack([s.mean_ for s in self.scalers])  # [B, d]
        self.scale = np.stack([s.scale_ for s in self.scalers])
        self.features = {int(layer): np.ascontiguousarray(features[:, layer]) for layer in np.unique(self.layers)}
        self.d = d
        self.preconditioned = d <= PRECONDITION_MAX_FEATURES
        if self.preconditioned:
            self._curvature(labels, problems)

    def _curvature(self, labels: np.ndarray, problems: Sequence[tuple[int, np.ndarray]]) -> None:
        """L-BFGS's starting curvature of each fit, which hidden states' strongly correlated dimensions need: the
        Hessian of f where every P(y = 1) is the fit's training rate q, C q (1 - q) [Z, 1]^T [Z, 1] + diag(1, ..., 1,
        0) (standardised columns sum to 0: the intercept decouples), with the training rows' Z^T Z approximated by
        the share of rows it trains on times all rows' (standardised over all rows), whose eigenvectors are
        computed once per layer. Only a starting point: the fit converges to the same optimum whatever it is."""
        n = len(labels)
        self.eigen = {}
        for layer, rows in self.features.items():
            standardised = Standardisation.fit(rows).transform(rows)
            self.eigen[layer] = np.linalg.eigh(standardised.T @ standardised)
        rates = np.clip(np.array([np.mean(labels[train]) for _, train in problems]), 0.05, 0.95)
        self.curvature_weight = self.C * rates * (1 - rates) * np.array([len(train) / n for _, train in problems])
        self.n = n

    def precondition(self, vectors: np.ndarray, fits: np.ndarray) -> np.ndarray:
        """The starting inverse curvature (``_curvature``) of each fit of ``fits`` [k] times its row of
        ``vectors`` [k, d + 1]."""
        out = np.empty_like(vectors)
        weights = self.curvature_weight[fits]
        for layer, (values, vectors_of_layer) in self.eigen.items():
            columns = np.flatnonzero(self.layers[fits] == layer)
            projected = vectors[columns, :self.d] @ vectors_of_layer
            projected /= 1.0 + weights[columns, None] * values
            out[columns, :self.d] = projected @ vectors_of_layer.T
        out[:, self.d] = vectors[:, self.d] / (weights * self.n)
        return out

    def __call__(self, parameters: np.ndarray, fits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(f [k], gradient [k, d + 1]) of the fits ``fits`` [k] at their ``parameters`` [k, d + 1] (weights, then
        intercept)."""
        weights, intercepts = parameters[:, :self.d], parameters[:, self.d]
        mean, scale, rows = self.mean[fits], self.scale[fits], self.rows[:, fits]
        unscaled = weights / scale  # z . w = x . (w / scale) - mean . (w / scale)
        by_layer = [(self.features[layer], np.flatnonzero(self.layers[fits] == layer)) for layer in self.features]
        logits = np.empty_like(rows)
        for features, columns in by_layer:
            logits[:, columns] = features @ unscaled[columns].T
        logits += intercepts - np.einsum("bd,bd->b", mean, unscaled)
        margins = -self.signs[:, None] * logits
        values = 0.5 * np.einsum("bd,bd->b", weights, weights) + self.C * (rows * np.logaddexp(0.0, margins)).sum(0)
        residuals = -self.signs[:, None] * expit(margins) * rows  # [n, k]
        gradient = np.empty_like(parameters)
        for features, columns in by_layer:
            gradient[columns, :self.d] = residuals[:, columns].T @ features
        totals = residuals.sum(0)
        gradient[:, :self.d] = weights + self.C * (gradient[:, :self.d] - totals[:, None] * mean) / scale
        gradient[:, self.d] = self.C * totals
        return values, gradient


def fit_l2_logistic(
    features: np.ndarray, labels: np.ndarray, problems: Sequence[tuple[int, np.ndarray]], C: float = 1.0
) -> list[tuple[Standardisation, L2Logistic]]:
    """Fit f (module docstring) for each ``(layer, training rows)`` of ``problems`` on ``features`` [n, layers, d]
    and 0/1 ``labels`` [n], from w = 0, b = 0, by one batched L-BFGS; returns (standardisation, fit) per problem."""
    objective = _Problems(features, labels, problems, C)
    count, width = len(problems), objective.d + 1
    x = np.zeros((count, width))
    iterations = np.zeros(count, dtype=int)
    fits = np.arange(count)  # the fits not yet converged; a converged fit is no longer computed
    values, gradient = objective(x, fits)
    steps: list[np.ndarray] = []  # per step, [count, width]: x_{k+1} - x_k (0 for fits that had stopped)
    changes: list[np.ndarray] = []  # gradient_{k+1} - gradient_k
    for _ in range(MAX_ITERATIONS):
        keep = np.abs(gradient).max(1) > GRADIENT_TOLERANCE
        fits, values, gradient = fits[keep], values[keep], gradient[keep]
        if not len(fits):
            break
        precondition = (lambda q, fits=fits: objective.precondition(q, fits)) if objective.preconditioned else None
        direction = _two_loop(gradient, [s[fits] for s in steps], [y[fits] for y in changes], precondition)
        if not steps and precondition is None:
            direction /= np.maximum(1.0, np.linalg.norm(gradient, axis=1))[:, None]
        slope = np.einsum("bp,bp->b", gradient, direction)
        step = np.ones(len(fits))
        for _ in range(MAX_HALVINGS):
            trial_values, trial_gradient = objective(x[fits] + step[:, None] * direction, fits)
            failing = trial_values > values + ARMIJO * step * slope + PRECISION * np.abs(values)
            if not failing.any():
                break
            step[failing] *= 0.5
        else:  # no decrease along the direction: at the precision floor; those fits stop where they are
            step[failing] = 0.0
            trial_gradient[failing] = 0.0
        moved, changed = np.zeros((count, width)), np.zeros((count, width))
        moved[fits] = step[:, None] * direction
        changed[fits] = trial_gradient - gradient
        x += moved
        steps, changes = [*steps[-HISTORY + 1:], moved], [*changes[-HISTORY + 1:], changed]
        iterations[fits] += 1
        values, gradient = trial_values, trial_gradient
    return [(objective.scalers[b], L2Logistic(x[b, :-1][None, :].copy(), x[b, -1:].copy(), int(iterations[b])))
            for b in range(count)]


def _two_loop(gradient: np.ndarray, steps: list[np.ndarray], changes: list[np.ndarray],
              precondition: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    """The L-BFGS direction -H g for every fit (the two-loop recursion, row by row), from the starting inverse
    curvature ``precondition`` (else the usual scaled identity); a pair with no positive curvature (a fit that did not move) is left
    out of that fit's product."""
    q = gradient.copy()
    curvature = [np.einsum("bp,bp->b", s, y) for s, y in zip(steps, changes)]
    rho = [np.where(c > 0, 1.0 / np.where(c > 0, c, 1.0), 0.0) for c in curvature]
    alphas = []
    for s, y, r in zip(reversed(steps), reversed(changes), reversed(rho)):
        alpha = r * np.einsum("bp,bp->b", s, q)
        q -= alpha[:, None] * y
        alphas.append(alpha)
    if precondition is not None:
        q = precondition(q)
    elif steps:
        y_last, c_last = changes[-1], curvature[-1]
        squared = np.einsum("bp,bp->b", y_last, y_last)
        q *= np.where((c_last > 0) & (squared > 0), c_last / np.where(squared > 0, squared, 1.0), 1.0)[:, None]
    for s, y, r, alpha in zip(steps, changes, rho, reversed(alphas)):
        beta = r * np.einsum("bp,bp->b", y, q)
        q += s * (alpha - beta)[:, None]
    return -q
