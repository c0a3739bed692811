"""Seeded stratified k-fold cross-validation of standardised probes (hidden-state probes, fusion).

Every probe standardises its input with mean and scale fitted on the training fold only
(``logistic.Standardisation``), then fits:
- "logistic": L2 logistic regression, C = 1 (sklearn's objective), by ``logistic.fit_l2_logistic``: one batched
  L-BFGS for all the fits of a cross-validation (folds x layers), to a gradient tolerance tighter than sklearn's;
- "l1": L1 logistic regression, C = 1 / lambda = 10 for the study's lambda = 0.1 (sklearn's objective
  C * sum_i logloss_i + ||w||_1, i.e. lambda multiplies the L1 norm against the *summed* log loss), liblinear;
- "mlp": the study's probe, d -> 256 (ReLU) -> 1, Adam lr 1e-4, 50 epochs of one full-batch step each
  (as the study's training loop), no weight decay.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from vrp_bench.scoring.logistic import GRADIENT_TOLERANCE, L2Logistic, Standardisation, fit_l2_logistic

ProbeKind = Literal["logistic", "mlp", "l1"]

# sklearn 1.8 deprecated `penalty` (an L1 fit is l1_ratio=1 there); older versions ignore l1_ratio.
_PENALTY = inspect.signature(LogisticRegression).parameters.get("penalty")
_L1 = {"penalty": "l1"} if _PENALTY is not None and _PENALTY.default == "l2" else {"l1_ratio": 1.0}

PROBE_PARAMS: dict[str, dict[str, Any]] = {
    "logistic": {"C": 1.0, "solver": "lbfgs (batched, vrp_bench.scoring.logistic)", "gradient_tolerance": GRADIENT_TOLERANCE},
    "l1": {"C": 10.0, "solver": "liblinear", "max_iter": 1000, **_L1},
    "mlp": {
        "hidden_layer_sizes": (256,), "activation": "relu", "solver": "adam", "learning_rate_init": 1e-4,
        "max_iter": 50, "alpha": 0.0, "batch_size": "full",
    },
}
Problem = tuple[int, np.ndarray]
"""One fit of a cross-validation: (layer, training row indices)."""


@dataclass
class FittedProbe:
    """The standardisation fitted on the training fold and the probe fitted on its output."""

    scaler: Standardisation
    model: L2Logistic | LogisticRegression | MLPClassifier

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """P(correct) per row of ``features`` [n, d]."""
        return self.model.predict_proba(self.scaler.transform(features))[:, 1]

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to re-apply the probe: p = sigmoid(f((x - scaler_mean) / scaler_scale))."""
        arrays = {"scaler_mean": self.scaler.mean_, "scaler_scale": self.scaler.scale_}
        if isinstance(self.model, MLPClassifier):
            for i, (weights, bias) in enumerate(zip(self.model.coefs_, self.model.intercepts_)):
                arrays[f"weights_{i}"], arrays[f"bias_{i}"] = weights, bias
        else:
            arrays["coef"], arrays["intercept"] = self.model.coef_[0], self.model.intercept_
        return arrays


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Small fits are dominated by BLAS thread hand-offs; one thread is ~10x faster on a busy machine."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def fit_probes(features: np.ndarray, correct: np.ndarray, problems: Sequence[Problem], kind: ProbeKind,
               seed: int) -> list[FittedProbe]:
    """One probe of ``kind`` per ``(layer, training rows)`` of ``problems`` on ``features`` [n, layers, d] (see the
    module docstring): the logistic ones all at once, the others one by one."""
    with single_threaded_blas():
        if kind == "logistic":
            return [FittedProbe(scaler, model) for scaler, model in fit_l2_logistic(features, correct, problems)]
        return [fit_probe(features[train, layer], correct[train], kind, seed) for layer, train in problems]


def fit_probe(features: np.ndarray, correct: np.ndarray, kind: ProbeKind, seed: int) -> FittedProbe:
    """Standardise ``features`` [n, d] and fit a probe of ``kind`` (see the module docstring)."""
    if kind == "logistic":
        return fit_probes(features[:, None, :], correct, [(0, np.arange(len(correct)))], kind, seed)[0]
    scaler = Standardisation.fit(np.asarray(features, dtype=np.float64))
    params = dict(PROBE_PARAMS[kind])
    with warnings.catch_warnings():
        if kind == "mlp":
            params["batch_size"] = len(features)
            warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed budget of 50 epochs, by design
            model: LogisticRegression | MLPClassifier = MLPClassifier(random_state=seed, **params)
        else:
            model = LogisticRegression(random_state=seed, **params)
        model.fit(scaler.transform(features), correct)
    return FittedProbe(scaler, model)


def stratified_folds(correct: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays of a shuffled stratified k-fold split seeded by ``seed``."""
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(correct)), correct))


def cross_validation_problem(correct: np.ndarray, n_folds: int, min_samples: int, *, nested: bool) -> str | None:
    """Why (correct) cannot be cross-validated, or None. Each class needs n_folds samples, 2 n_folds when
    an inner CV runs on each outer training part."""
    n = len(correct)
    if n < min_samples:
        return f"n = {n} samples, fewer than min_samples = {min_samples}"
    smallest = int(min(correct.sum(), n - correct.sum()))
    needed = 2 * n_folds if nested else n_folds
    if smallest < needed:
        design = f"{n_folds}-fold nested CV" if nested else f"{n_folds}-fold CV"
        return f"the smaller class has {smallest} samples; {design} needs {needed}"
    return None


def out_of_fold(
    features: np.ndarray, correct: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], kind: ProbeKind, seed: int
) -> tuple[np.ndarray, list[FittedProbe]]:
    """Out-of-fold P(correct) [n] (each sample predicted by the probe of the fold that held it out) and
    the probe of each fold."""
    probes = fit_probes(features[:, None, :], correct, [(0, train) for train, _ in folds], kind, seed)
    return held_out_predictions(features, folds, probes), probes


def held_out_predictions(features: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                         probes: Sequence[FittedProbe]) -> np.ndarray:
    """[n]: each fold's test rows of ``features`` [n, d] predicted by that fold's probe (rows in no test fold are
    left unset)."""
    predictions = np.empty(len(features))
    for (_, test), probe in zip(folds, probes):
        predictions[test] = probe.predict_proba(features[test])
    return predictions
