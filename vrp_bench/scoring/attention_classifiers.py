"""Attention-only classifiers (the study's stress test): does attention carry held-out information about correctness?

Two supervised predictors of correctness that read attention only, each scored exactly like the fusion
(``sections.fuse``): out-of-fold P(correct) on a seeded stratified k-fold split, scored as a probability signal
within task (``score_signal``), repeated over seeds, permutation-tested within task and compared with a task-only
predictor (``heldout.evaluate_heldout``); a ``reason`` instead of numbers when the samples cannot be cross-validated.

- ``structure``: a classifier over the attention-structure features of ``feature_table``: the per-layer lists of
  ``ATTENTION_FEATURES`` flattened into columns ``<signal>[i]`` (i the list index; ``delta_h_s_layers[i]`` is the
  change into layer i + 1), read from the reliability view only (``records.reliability_view``: grounding only on
  tasks whose boxes are answer-independent). A signal enters when its list is complete on at least ``WELL_COVERED``
  of the samples; a sample missing any entered column is dropped (counted), never imputed. Kinds
  (``ScoringSettings.attention_classifier``):
  "logistic": P = sigmoid(b + w . z), z = (x - mean) / sd fitted on the training fold, L2 with C = 1
  (``crossval``'s batched logistic, ``fusion.fusion_pipeline``);
  "gbt": P = sigmoid(F(x)), F the sum of ``GBT_PARAMS["max_iter"]`` regression trees fitted by scikit-learn's
  ``HistGradientBoostingClassifier`` on the raw features with ``GBT_PARAMS`` (its defaults, with early stopping
  off: no random validation split, the same model at every n) and ``random_state`` = the fold seed.
- ``ensemble_probe``: the study's ensemble attention probe, the "logistic" kind over the concatenated per-layer
  decoder maps ``ENSEMBLE_MAP`` [layers, rows, cols], each layer's map divided by its sum first
  (x = concat_l A_l / sum(A_l), layers x rows x cols features). Samples without such a map of the most common
  grid (none captured or saved, another grid, or a layer with no mass) are left out (counted).

Cost: each classifier runs one k-fold cross-validation per repeat and per permutation (3 + 100 at the defaults).
The logistic fits of one are one batched L-BFGS: 4 ms at n = 400 with 20 features, 9 ms with 100; gbt fits run one
by one on one core each (OpenMP hand-offs make such small fits ~15x slower multi-threaded): 0.3 s and 1.0 s. So
"gbt" costs about 30 to 100 CPU-seconds at the defaults against under 1 for "logistic" (~100x; the permutations
run in one worker process per core): lower ``--permutations`` with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from vrp_bench.scoring.crossval import PROBE_PARAMS, cross_validation_problem, stratified_folds
from vrp_bench.scoring.fusion import fusion_pipeline
from vrp_bench.scoring.heldout import Pipeline, evaluate_heldout
from vrp_bench.scoring.records import WELL_COVERED, correctness, per_layer_table
from vrp_bench.scoring.settings import ATTENTION_CLASSIFIERS, ScoringSettings
from vrp_bench.scoring.signal_quality import score_signal

ATTENTION_FEATURES = ("h_s_layers", "c_k_dbscan_layers", "c_k_components_layers", "delta_h_s_layers",
                      "grounding_mass_layers")
"""The per-layer attention-structure signals the ``structure`` classifier reads."""
ENSEMBLE_MAP = "answer_attention_mean"
"""The attention map (``api.traces.ATTENTION_MAPS``) the ensemble probe reads."""
GBT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.1, "max_iter": 100, "max_leaf_nodes": 31, "min_samples_leaf": 20, "l2_regularization": 0.0,
    "max_bins": 255, "early_stopping": False,
}
MODELS = {
    "logistic": "L2 logistic regression (C = 1) on features z-scored within each training fold",
    "gbt": "scikit-learn HistGradientBoostingClassifier (GBT_PARAMS, no early stopping) on the raw features",
}
PARAMS = {"logistic": PROBE_PARAMS["logistic"], "gbt": GBT_PARAMS}


@dataclass
class FeatureTable:
    """The attention-structure features of some records: ``values`` [n, columns], NaN where missing."""

    signals: list[str]
    """The ``ATTENTION_FEATURES`` that entered, in that order."""
    names: list[str]
    """One per column: ``<signal>[<list index>]``."""
    values: np.ndarray
    left_out: dict[str, str]
    """The ``ATTENTION_FEATURES`` that did not enter, and why."""

    def to_json(self) -> dict[str, Any]:
        return {"signals": self.signals, "names": self.names, "count": len(self.names), "left_out": self.left_out}


def feature_table(records: Sequence[dict[str, Any]]) -> FeatureTable:
    """The ``structure`` features of ``records`` (reliability-view records: module docstring)."""
    signals: list[str] = []
    names: list[str] = []
    blocks: list[np.ndarray] = []
    left_out: dict[str, str] = {}
    for name in ATTENTION_FEATURES:
        table = per_layer_table(records, name)
        share = 0.0 if table is None else len(table[0]) / len(records)
        if table is None or share < WELL_COVERED:
            left_out[name] = (f"complete (and a reliability signal) on {share:.0%} of the samples, fewer than "
                              f"{WELL_COVERED:.0%}")
            continue
        usable, values = table
        block = np.full((len(records), values.shape[1]), np.nan)
        block[usable] = values
        signals.append(name)
        names += [f"{name}[{i}]" for i in range(values.shape[1])]
        blocks.append(block)
    values = np.hstack(blocks) if blocks else np.empty((len(records), 0))
    return FeatureTable(signals, names, values, left_out)


def _checked(kind: str) -> str:
    if kind not in ATTENTION_CLASSIFIERS:
        raise ValueError(f"attention classifier {kind!r} is not one of {', '.join(ATTENTION_CLASSIFIERS)}")
    return kind


def classifier_pipeline(features: np.ndarray, kind: str, n_folds: int) -> Pipeline:
    """A classifier of ``kind`` (module docstring) on complete ``features`` [n, k] as a ``heldout.Pipeline``:
    (labels, seed) -> out-of-fold P(correct) on a stratified k-fold split seeded by ``seed``."""
    if _checked(kind) == "logistic":
        return fusion_pipeline(features, n_folds)

    def predict(labels: np.ndarray, seed: int) -> np.ndarray:
        predictions = np.empty(len(labels))
        with threadpool_limits(limits=1, user_api="openmp"):  # small fits: thread hand-offs cost more than they save
            for train, test in stratified_folds(labels, n_folds, seed):
                model = HistGradientBoostingClassifier(random_state=seed, **GBT_PARAMS)
                predictions[test] = model.fit(features[train], labels[train]).predict_proba(features[test])[:, 1]
        return predictions

    return predict


def held_out(features: np.ndarray, labels: np.ndarray, tasks: np.ndarray, kind: str,
             settings: ScoringSettings) -> dict[str, Any]:
    """``reason``, ``score`` (repeat 0's out-of-fold P(correct) scored within task) and ``heldout`` (repeats,
    permutation test, task-only baseline) of a classifier of ``kind`` on complete ``features`` [n, k]."""
    reason = cross_validation_problem(labels, settings.probe_folds, settings.min_samples, nested=False)
    if reason is not None:
        return {"reason": reason, "score": None, "heldout": None}
    pipeline = classifier_pipeline(features, kind, settings.probe_folds)
    first = pipeline(labels, settings.seed)
    options = settings.options()
    return {"reason": None,
            "score": score_signal(first, labels, +1, probability=True, strata=tasks, options=options),
            "heldout": evaluate_heldout(pipeline, labels, tasks, n_folds=settings.probe_folds,
                                        design=settings.design(), options=options, first_repeat=first)}


def _description(kind: str, settings: ScoringSettings) -> dict[str, Any]:
    return {"kind": kind, "model": MODELS[_checked(kind)], "params": dict(PARAMS[kind]), "seed": settings.seed,
            "n_folds": settings.probe_folds}


def structure_classifier(records: Sequence[dict[str, Any]], tasks: Sequence[str], table: FeatureTable,
                         settings: ScoringSettings) -> dict[str, Any]:
    """The ``structure`` entry: the ``settings.attention_classifier`` kind over ``table`` (of ``records``)."""
    kind = settings.attention_classifier
    complete = np.isfinite(table.values).all(axis=1) & (table.values.shape[1] > 0)
    entry = {**_description(kind, settings), "n": int(complete.sum()), "n_dropped": int((~complete).sum())}
    if not table.names:
        return {**entry, "reason": "no attention-structure features in the records (a model that captures decoder "
                                   "attention gives them)", "score": None, "heldout": None}
    labels = correctness(records)[complete]
    return {**entry, **held_out(table.values[complete], labels, np.asarray(tasks)[complete], kind, settings)}


def normalised_maps(maps: np.ndarray) -> np.ndarray:
    """[layers, rows, cols] -> each layer's map divided by its sum (NaN for a layer with no mass)."""
    maps = np.asarray(maps, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return maps / maps.sum(axis=(1, 2), keepdims=True)


def ensemble_probe(records: Sequence[dict[str, Any]], tasks: Sequence[str], keys: Sequence[str],
                   maps: Mapping[str, np.ndarray], settings: ScoringSettings) -> dict[str, Any]:
    """The ``ensemble_probe`` entry (module docstring); ``maps[key]`` is the ``ENSEMBLE_MAP`` of the record with
    that ``records.sample_key``."""
    present = [(i, maps[key]) for i, key in enumerate(keys) if key in maps]
    grid = Counter(m.shape for _, m in present).most_common(1)[0][0] if present else None
    rows = {i: normalised_maps(m).ravel() for i, m in present if m.shape == grid}
    kept = [i for i, row in rows.items() if np.isfinite(row).all()]
    entry = {**_description("logistic", settings), "map": ENSEMBLE_MAP,
             "grid": None if grid is None else [int(size) for size in grid],
             "n_features": int(np.prod(grid)) if grid is not None else 0, "n": len(kept),
             "n_left_out": len(keys) - len(kept)}
    if not present:
        return {**entry, "reason": f"no {ENSEMBLE_MAP} maps (a run captures them; a saved run has them only in its "
                                   "--save_traces files)", "score": None, "heldout": None}
    labels = correctness([records[i] for i in kept])
    features = np.array([rows[i] for i in kept]).reshape(len(kept), entry["n_features"])
    return {**entry, **held_out(features, labels, np.asarray(tasks)[kept], "logistic", settings)}


def attention_classifiers(records: Sequence[dict[str, Any]], tasks: Sequence[str], keys: Sequence[str],
                          maps: Mapping[str, np.ndarray], settings: ScoringSettings) -> dict[str, Any]:
    """The report's ``attention_classifiers`` section from the scored reliability-view ``records`` (each one's
    task and ``sample_key``) and their ``ENSEMBLE_MAP`` maps by key: ``features`` (``FeatureTable.to_json``),
    ``structure`` and ``ensemble_probe`` (module docstring)."""
    table = feature_table(records)
    return {"features": table.to_json(), "structure": structure_classifier(records, tasks, table, settings),
            "ensemble_probe": ensemble_probe(records, tasks, keys, maps, settings)}
