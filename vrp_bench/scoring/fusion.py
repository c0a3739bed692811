"""Fusion: one logistic regression over several signals, scored out of fold like any other signal.

P(correct | x) = sigmoid(b + sum_j w_j z_j), z_j = (x_j - mean_j) / sd_j with mean and sd fitted on the
training fold only (``crossval``, kind "logistic": L2, C = 1). The signals' orientations do not matter:
the sign of each w_j is learned. A sample with any signal missing (None) or not finite is dropped, not imputed.
Score the result with ``score_signal(result["oof_probability"], correct, +1, probability=True, ...)``;
dropped samples are None there and are dropped again, consistently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vrp_bench.scoring.crossval import PROBE_PARAMS, cross_validation_problem, out_of_fold, stratified_folds
from vrp_bench.scoring.heldout import Pipeline
from vrp_bench.scoring.statistics import MIN_SAMPLES, binary_labels


def fusion_pipeline(features: np.ndarray, n_folds: int) -> Pipeline:
    """The fusion as a ``heldout.Pipeline`` on complete ``features`` [n, k]: (labels, seed) -> out-of-fold
    P(correct) of the logistic fusion on a stratified k-fold split seeded by ``seed``."""

    def predict(labels: np.ndarray, seed: int) -> np.ndarray:
        return out_of_fold(features, labels, stratified_folds(labels, n_folds, seed), "logistic", seed)[0]

    return predict


def fuse_signals(
    signals: Mapping[str, Sequence[float | None]],
    correct: Sequence[int | bool] | np.ndarray,
    *,
    seed: int,
    n_folds: int = 5,
    min_samples: int = MIN_SAMPLES,
) -> dict[str, Any]:
    """Out-of-fold P(correct) per sample (None where dropped) from the fused ``signals`` (name -> one value
    per sample), with each fold's model in z units and the positions (in the input) of its test samples;
    ``complete`` lists the positions of the samples used (every signal present and finite).
    ``reason`` is set (and no probabilities) when the complete samples cannot be cross-validated."""
    names = list(signals)
    table = np.array([[np.nan if v is None else v for v in signals[name]] for name in names], dtype=float).T
    y = binary_labels(correct)
    if table.shape != (len(y), len(names)):
        raise ValueError(f"every signal needs one value per sample ({len(y)}), got a table of shape {table.shape}")
    complete = np.isfinite(table).all(axis=1)
    features, labels = table[complete], y[complete].astype(int)
    result: dict[str, Any] = {
        "signals": names,
        "model": "logistic regression on signals z-scored within each training fold",
        "params": dict(PROBE_PARAMS["logistic"]),
        "seed": seed,
        "n_folds": n_folds,
        "n": int(complete.sum()),
        "n_dropped": int((~complete).sum()),
        "reason": cross_validation_problem(labels, n_folds, min_samples, nested=False),
        "oof_probability": None,
        "folds": None,
        "complete": None,
    }
    if result["reason"] is not None:
        return result
    folds = stratified_folds(labels, n_folds, seed)
    predictions, probes = out_of_fold(features, labels, folds, "logistic", seed)
    result["complete"] = np.flatnonzero(complete).tolist()
    per_sample = np.full(len(table), np.nan)
    per_sample[complete] = predictions
    result["oof_probability"] = [None if np.isnan(p) else float(p) for p in per_sample]
    result["folds"] = [
        {
            "coef": dict(zip(names, probe.model.coef_[0].tolist())),
            "intercept": float(probe.model.intercept_[0]),
            "z_mean": dict(zip(names, probe.scaler.mean_.tolist())),
            "z_scale": dict(zip(names, probe.scaler.scale_.tolist())),
            "n_train": len(train),
            "test_samples": np.flatnonzero(complete)[test].tolist(),
        }
        for probe, (train, test) in zip(probes, folds)
    ]
    return result
