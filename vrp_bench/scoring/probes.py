"""Hidden-state probes: how well a layer's hidden state predicts correctness, on held-out samples only.

All pipelines use a seeded stratified k-fold split of the samples (``crossval``) and report the
within-task AUROC (``stratified``) of out-of-fold P(correct).
- per layer: a probe per layer (one split; its CI treats the probes as fixed). Choosing the best of
  these is selection on the evaluation data: optimistic.
- nested: in each outer fold an inner stratified k-fold on the outer-training part scores every layer
  (inner out-of-fold AUROC); the best layer (the lowest index on ties) is chosen there, and the outer test
  fold is predicted by that layer's probe trained on the whole outer-training part. Held out end to end,
  repeated over seeds with a CI that includes retraining, tested against a within-task permutation null
  (the shuffled-label control), and compared with a task-only predictor (``heldout``).
- last k combined: one probe on the concatenated states of the last k layers (the study's "combined").
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vrp_bench.api.files import write_files_atomically
from vrp_bench.scoring.crossval import (
    PROBE_PARAMS,
    FittedProbe,
    ProbeKind,
    cross_validation_problem,
    fit_probes,
    held_out_predictions,
    out_of_fold,
    stratified_folds,
)
from vrp_bench.scoring.heldout import HeldOutDesign, Pipeline, evaluate_heldout
from vrp_bench.scoring.signal_quality import ScoringOptions, score_auroc, undefined_entry
from vrp_bench.scoring.statistics import UndefinedStatistic, auroc, binary_labels

PROBES_FORMAT = "vrp-bench probes 1"
Folds = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class FoldProbe:
    """One trained probe: which pipeline and fold, the layer ids it reads, its split, its parameters."""

    pipeline: str  # "nested" | "last_k_combined"
    fold: int
    layers: list[int]
    train_doc_ids: list[Any]
    test_doc_ids: list[Any]
    arrays: dict[str, np.ndarray]  # see FittedProbe.arrays


@dataclass
class ProbeFits:
    """The probes behind a ``run_probes`` result and their out-of-fold P(correct) per doc."""

    kind: str
    params: dict[str, Any]
    seed: int
    doc_ids: list[Any]
    folds: list[FoldProbe]
    oof_probability: dict[str, np.ndarray]  # pipeline -> [n], in doc_ids order


@dataclass
class _Nested:
    predictions: np.ndarray
    chosen: list[int]  # layer positions, one per outer fold
    inner_auroc: list[list[float | None]]


def _auroc_or_nan(predictions: np.ndarray, correct: np.ndarray) -> float:
    try:
        return auroc(predictions, correct, min_samples=0)
    except UndefinedStatistic:  # e.g. an L1 probe with every weight zero predicts a constant
        return float("nan")


def _checked(features: np.ndarray, correct: Any, doc_ids: Sequence[Any], layer_ids: Sequence[int] | None):
    features = np.asarray(features)
    if features.ndim != 3:
        raise ValueError(f"features must be [n_samples, n_layers, hidden], got shape {features.shape}")
    y = binary_labels(correct)
    ids = np.asarray(doc_ids).tolist()
    if len(ids) != len(y) or len(set(ids)) != len(ids):
        raise ValueError("doc_ids must hold one unique id per sample (pooling tasks: use 'task/doc_id')")
    layers = list(range(features.shape[1])) if layer_ids is None else [int(layer) for layer in layer_ids]
    if len(layers) != features.shape[1]:
        raise ValueError(f"layer_ids names {len(layers)} layers, features have {features.shape[1]}")
    return features, y.astype(int), ids, layers


@dataclass
class _Pipeline:
    """Per-layer probes on one outer split, and the nested layer choice (or why there is none)."""

    folds: Folds
    per_layer: list[tuple[np.ndarray, list[FittedProbe]]]  # (out-of-fold P(correct), fold probes)
    nested: _Nested | str


def _pipeline(features: np.ndarray, labels: np.ndarray, kind: ProbeKind, seed: int, n_folds: int) -> _Pipeline:
    """Every fit of the module docstring's per-layer and nested pipelines on one outer split, fitted at once: per
    layer a probe per outer fold, and per outer fold an inner stratified k-fold on its training part with a probe
    per inner fold and layer. The nested choice in outer fold k is the layer of the best inner out-of-fold AUROC
    (the lowest index on ties); its outer test fold is predicted by that layer's probe of fold k."""
    folds = stratified_folds(labels, n_folds, seed)
    layers = range(features.shape[1])
    inner = [[(train[inner_train], train[inner_test]) for inner_train, inner_test in
              stratified_folds(labels[train], n_folds, seed)] for train, _ in folds]
    problems = [(layer, train) for layer in layers for train, _ in folds]
    problems += [(layer, inner_train) for fold in inner for layer in layers for inner_train, _ in fold]
    fitted = iter(fit_probes(features, labels, problems, kind, seed))
    per_layer = []
    for layer in layers:
        probes = [next(fitted) for _ in folds]
        per_layer.append((held_out_predictions(features[:, layer], folds, probes), probes))
    nested_predictions, chosen, inner_auroc = np.empty(len(labels)), [], []
    undefined: str | None = None
    for fold, ((train, test), inner_folds) in enumerate(zip(folds, inner)):
        scores = []
        for layer in layers:
            probes = [next(fitted) for _ in inner_folds]
            inner_predictions = held_out_predictions(features[:, layer], inner_folds, probes)[train]
            scores.append(_auroc_or_nan(inner_predictions, labels[train]))
        if np.isnan(scores).all():
            undefined = undefined or f"outer fold {fold}: no layer's inner AUROC is defined (constant predictions)"
            continue
        best = int(np.nanargmax(scores))
        nested_predictions[test] = per_layer[best][0][test]  # the probe of `best` trained on `train`
        chosen.append(best)
        inner_auroc.append([None if np.isnan(score) else score for score in scores])
    nested = undefined if undefined is not None else _Nested(nested_predictions, chosen, inner_auroc)
    return _Pipeline(folds, per_layer, nested)


def _nested_predictions(features: np.ndarray, kind: ProbeKind, n_folds: int) -> Pipeline:
    """The nested pipeline as a ``heldout.Pipeline``: (labels, seed) -> out-of-fold P(correct)."""

    def predict(labels: np.ndarray, seed: int) -> np.ndarray:
        nested = _pipeline(features, labels, kind, seed, n_folds).nested
        if isinstance(nested, str):
            raise UndefinedStatistic(nested)
        return nested.predictions

    return predict


def run_probes(
    features: np.ndarray,
    correct: Sequence[int] | np.ndarray,
    doc_ids: Sequence[Any],
    strata: Sequence[Any] | np.ndarray,
    *,
    kind: ProbeKind = "logistic",
    n_folds: int = 5,
    last_k: int = 5,
    layer_ids: Sequence[int] | None = None,
    design: HeldOutDesign = HeldOutDesign(),
    options: ScoringOptions = ScoringOptions(),
) -> tuple[dict[str, Any], ProbeFits | None]:
    """Probe ``features`` [n_samples, n_layers, hidden] for ``correct`` [n] (0/1); ``doc_ids`` [n] unique,
    ``strata`` [n] each sample's task, ``layer_ids`` names each layer slot (default 0..n_layers-1).
    Returns the JSON-ready result and the trained probes of repeat 0 (None when the data cannot be
    cross-validated: the result then carries ``reason``). Every AUROC is within-task; the nested
    pipeline's is repeated and permutation-tested (``heldout``)."""
    features, y, ids, layers = _checked(features, correct, doc_ids, layer_ids)
    tasks = np.asarray(strata)
    seed = options.seed
    result: dict[str, Any] = {
        "kind": kind, "params": json.loads(json.dumps(PROBE_PARAMS[kind])), "seed": seed,
        "n_folds": n_folds, "inner_folds": n_folds, "n": len(y), "n_correct": int(y.sum()), "layer_ids": layers,
        "reason": cross_validation_problem(y, n_folds, options.min_samples, nested=True),
        "per_layer": None, "nested": None, "last_k_combined": None,
    }
    if result["reason"] is not None:
        return result, None
    score = partial(score_auroc, strata=tasks, options=options)
    real = _pipeline(features, y, kind, seed, n_folds)
    combined_layers = layers[-last_k:]
    combined = out_of_fold(features[:, -last_k:].reshape(len(y), -1), y, real.folds, kind, seed)
    if isinstance(real.nested, str):
        nested: dict[str, Any] = {"auroc": undefined_entry(len(y), real.nested), "chosen_layers": None,
                                  "inner_auroc": None}
    else:
        nested = {
            **evaluate_heldout(_nested_predictions(features, kind, n_folds), y, tasks, n_folds=n_folds, design=design,
                               options=options, first_repeat=real.nested.predictions),
            "chosen_layers": [layers[c] for c in real.nested.chosen],
            "inner_auroc": real.nested.inner_auroc,
        }
    result.update(
        per_layer=[{"layer": layer, "auroc": score(p, y)} for layer, (p, _) in zip(layers, real.per_layer)],
        nested=nested,
        last_k_combined={"layers": combined_layers, "auroc": score(combined[0], y)},
    )
    return result, _probe_fits(result, ids, real, combined, combined_layers)


def _probe_fits(
    result: dict[str, Any], ids: list[Any], real: _Pipeline,
    combined: tuple[np.ndarray, list[FittedProbe]], combined_layers: list[int],
) -> ProbeFits:
    """The nested pipeline's outer-fold probes (the layer chosen in each fold) and the combined probes."""

    def fold_probe(pipeline: str, fold: int, probe: FittedProbe, layers: list[int]) -> FoldProbe:
        train, test = real.folds[fold]
        return FoldProbe(pipeline, fold, layers, [ids[i] for i in train], [ids[i] for i in test], probe.arrays())

    probes, oof = [], {}
    if isinstance(real.nested, _Nested):
        for fold, chosen in enumerate(real.nested.chosen):
            probes.append(fold_probe("nested", fold, real.per_layer[chosen][1][fold], [result["layer_ids"][chosen]]))
        oof["nested"] = real.nested.predictions
    probes += [fold_probe("last_k_combined", f, probe, combined_layers) for f, probe in enumerate(combined[1])]
    oof["last_k_combined"] = combined[0]
    return ProbeFits(result["kind"], result["params"], result["seed"], ids, probes, oof)


def probe_probability(arrays: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """P(correct) [n] of a saved probe (``FittedProbe.arrays``) on ``features`` [n, d], without sklearn:
    z = (x - scaler_mean) / scaler_scale; logistic: sigmoid(z . coef + intercept); mlp: h = relu(z W_0 + b_0)
    for each hidden layer, then sigmoid(h W_last + b_last)."""
    z = (np.asarray(features, dtype=np.float64) - arrays["scaler_mean"]) / arrays["scaler_scale"]
    if "coef" in arrays:
        logit = z @ arrays["coef"] + arrays["intercept"][0]
    else:
        n_layers = sum(key.startswith("weights_") for key in arrays)
        for i in range(n_layers - 1):
            z = np.maximum(z @ arrays[f"weights_{i}"] + arrays[f"bias_{i}"], 0.0)
        logit = (z @ arrays[f"weights_{n_layers - 1}"] + arrays[f"bias_{n_layers - 1}"])[:, 0]
    return 1.0 / (1.0 + np.exp(-logit))


def encode_probes(fits: ProbeFits, stem: str) -> dict[str, bytes]:
    """The two files of saved probes, by name: ``<stem>.npz`` (arrays) and ``<stem>.json`` (provenance:
    kind, params, seed, layers, the doc ids of every fold's train/test split, the npz key of each array)."""
    arrays: dict[str, np.ndarray] = {}
    folds = []
    for probe in fits.folds:
        keys = {name: f"{probe.pipeline}/fold{probe.fold}/{name}" for name in probe.arrays}
        arrays.update({keys[name]: array for name, array in probe.arrays.items()})
        folds.append({
            "pipeline": probe.pipeline, "fold": probe.fold, "layers": probe.layers,
            "train_doc_ids": probe.train_doc_ids, "test_doc_ids": probe.test_doc_ids, "arrays": keys,
        })
    oof_keys = {pipeline: f"{pipeline}/oof_probability" for pipeline in fits.oof_probability}
    arrays.update({oof_keys[pipeline]: p for pipeline, p in fits.oof_probability.items()})
    meta = {
        "format": PROBES_FORMAT, "arrays_file": f"{stem}.npz", "kind": fits.kind, "params": fits.params,
        "seed": fits.seed, "doc_ids": fits.doc_ids, "folds": folds, "oof_probability": oof_keys,
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return {f"{stem}.npz": buffer.getvalue(), f"{stem}.json": json.dumps(meta, indent=2).encode("utf-8")}


def save_probes(fits: ProbeFits, path: str | Path) -> tuple[Path, Path]:
    """Write ``encode_probes`` to ``<path>.npz`` and ``<path>.json``, atomically and together."""
    path = Path(path)
    contents = encode_probes(fits, path.name)
    write_files_atomically({path.parent / name: data for name, data in contents.items()})
    return Path(f"{path}.npz"), Path(f"{path}.json")


def load_probes(path: str | Path) -> ProbeFits:
    """Read what ``save_probes(fits, path)`` wrote."""
    meta = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
    with np.load(Path(f"{path}.npz"), allow_pickle=False) as stored:
        folds = [
            FoldProbe(
                fold["pipeline"], fold["fold"], fold["layers"], fold["train_doc_ids"], fold["test_doc_ids"],
                {name: stored[key] for name, key in fold["arrays"].items()},
            )
            for fold in meta["folds"]
        ]
        oof = {pipeline: stored[key] for pipeline, key in meta["oof_probability"].items()}
    return ProbeFits(meta["kind"], meta["params"], meta["seed"], meta["doc_ids"], folds, oof)
