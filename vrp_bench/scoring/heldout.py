"""Uncertainty of a trained predictor of correctness (a hidden-state probe, a fusion of signals).

A predictor's held-out AUROC varies with the evaluation sample *and* with training (which samples land
in which fold, the fit's seed). A bootstrap of one set of out-of-fold predictions treats the trained
predictors as fixed and covers only the first. Here, for a pipeline ``predict(labels, seed)`` that
returns out-of-fold P(correct) for every sample:

- repeats: the pipeline runs with R seeds (new folds, new fits). The point estimate is the mean over
  repeats; the CI is a percentile bootstrap in which replicate b resamples the samples (stratified by
  task) *and* takes the predictions of repeat b mod R, so it spans both sources of variance.
- permutation test: the labels are permuted within each task (task accuracies kept) and the whole
  pipeline, layer choice included, is re-run P times with the seed of repeat 0 (in worker processes, one
  per core; the permuted label sets are drawn first, so the result does not depend on how many). The null
  distribution of the within-task AUROC gives p = (1 + #{null >= observed}) / (P + 1), observed = repeat
  0's, and its 95% band is the shuffled-label control.
- task-only baseline: P(correct) = the accuracy of the sample's task on the training folds (repeat r's
  folds). Within a task it is constant (within-task AUROC exactly 0.5 by the tie rule); its
  concatenated AUROC is what knowing the task alone buys. The gain of the predictor over it
  (concatenated AUROC, paired over the same resamples and repeats) is reported with its CI.

Every AUROC is reported within-task (the primary figure, ``stratified``) and concatenated.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import Parallel, delayed

from vrp_bench.scoring.bootstrap import percentile_ci, resample_weights
from vrp_bench.scoring.crossval import stratified_folds
from vrp_bench.scoring.signal_quality import ScoringOptions
from vrp_bench.scoring.statistics import UndefinedStatistic
from vrp_bench.scoring.stratified import StratifiedTally, stratum_indices

Pipeline = Callable[[np.ndarray, int], np.ndarray]
"""(labels [n], seed) -> out-of-fold P(correct) [n]; raises UndefinedStatistic when it cannot be fitted."""
NULL_BAND = (0.025, 0.975)
PERMUTATIONS_PER_WORKER = 20
"""Permutations run in one worker process per CPU core, but only when each worker gets at least this many
(starting a process costs about a second)."""


@dataclass(frozen=True)
class HeldOutDesign:
    """How often the pipeline is re-run: ``repeats`` seeds, ``permutations`` label permutations."""

    repeats: int = 3
    permutations: int = 100


def permuted_within(labels: np.ndarray, strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``labels`` with their order shuffled inside each stratum (every stratum keeps its labels)."""
    permuted = labels.copy()
    for idx in stratum_indices(strata, len(labels)):
        permuted[idx] = labels[rng.permutation(idx)]
    return permuted


def task_only_probability(labels: np.ndarray, strata: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Out-of-fold P(correct | task): each sample gets its task's accuracy on the training folds
    (the overall training accuracy when its task has no training sample)."""
    predictions = np.empty(len(labels))
    for train, test in stratified_folds(labels, n_folds, seed):
        overall = labels[train].mean()
        for idx in stratum_indices(strata[test], len(test)):
            task = strata[test][idx[0]]
            same = labels[train][strata[train] == task]
            predictions[test[idx]] = same.mean() if len(same) else overall
    return predictions


def _auroc_rows(predictions: np.ndarray, labels: np.ndarray, strata: np.ndarray | None,
                weights: np.ndarray | None) -> np.ndarray:
    return StratifiedTally.from_samples(predictions, labels.astype(float), strata, weights).auroc()


def _repeated_entry(per_repeat: list[np.ndarray], labels: np.ndarray, strata: np.ndarray | None,
                    weights: np.ndarray, options: ScoringOptions) -> dict[str, Any]:
    """Mean AUROC over repeats with the CI of the module docstring (replicate b: repeat b mod R)."""
    points = [float(_auroc_rows(p, labels, strata, None)[0]) for p in per_repeat]
    rows = [_auroc_rows(p, labels, strata, weights) for p in per_repeat]
    replicates = np.array([rows[b % len(rows)][b] for b in range(len(weights))])
    ci = percentile_ci(replicates, options.confidence)
    return {"value": float(np.mean(points)), "ci": ci.interval, "n": len(labels), "repeats": points,
            "n_undefined_resamples": ci.n_undefined, "reason": ci.reason}


def evaluate_heldout(
    pipeline: Pipeline,
    labels: Sequence[int] | np.ndarray,
    strata: Sequence[Any] | np.ndarray,
    *,
    n_folds: int,
    design: HeldOutDesign,
    options: ScoringOptions,
    first_repeat: np.ndarray | None = None,
) -> dict[str, Any]:
    """Within-task and concatenated AUROC over repeats, the permutation test, and the gain over the
    task-only baseline (module docstring). ``first_repeat``: repeat 0's predictions when already computed."""
    y, tasks = np.asarray(labels, dtype=int), np.asarray(strata)
    seeds = [options.seed + r for r in range(design.repeats)]
    per_repeat = [first_repeat if r == 0 and first_repeat is not None else pipeline(y, seed)
                  for r, seed in enumerate(seeds)]
    baseline = [task_only_probability(y, tasks, n_folds, seed) for seed in seeds]
    weights = resample_weights(len(y), options.n_resamples, options.seed, strata=tasks)
    within = _repeated_entry(per_repeat, y, tasks, weights, options)
    concatenated = _repeated_entry(per_repeat, y, None, weights, options)
    task_only = _repeated_entry(baseline, y, None, weights, options)
    gain_rows = [_auroc_rows(p, y, None, weights) - _auroc_rows(b, y, None, weights)
                 for p, b in zip(per_repeat, baseline)]
    gain_ci = percentile_ci(np.array([gain_rows[b % len(gain_rows)][b] for b in range(len(weights))]),
                            options.confidence)
    return {
        "auroc": within,
        "concatenated_auroc": concatenated,
        "task_only_auroc": task_only,
        "gain_over_task_only": {"value": concatenated["value"] - task_only["value"], "ci": gain_ci.interval,
                                "reason": gain_ci.reason},
        "permutation_test": permutation_test(pipeline, y, tasks, within["repeats"][0], design.permutations, options),
        "repeats": design.repeats,
        "seeds": seeds,
    }


def _null_auroc(pipeline: Pipeline, permuted: np.ndarray, strata: np.ndarray, seed: int) -> float:
    """Within-task AUROC of the pipeline refitted on permuted labels (NaN when it cannot be fitted)."""
    try:
        return float(_auroc_rows(pipeline(permuted, seed), permuted, strata, None)[0])
    except UndefinedStatistic:  # e.g. no layer can be chosen on these labels: counted, not scored
        return float("nan")


def permutation_test(
    pipeline: Pipeline, labels: np.ndarray, strata: np.ndarray, observed: float, permutations: int,
    options: ScoringOptions,
) -> dict[str, Any]:
    """The within-task permutation null of the pipeline's within-task AUROC (module docstring)."""
    if permutations == 0:
        return {"n_permutations": 0, "p_value": None, "null_mean": None, "null_band": None,
                "reason": "no permutations requested"}
    rng = np.random.default_rng(options.seed)
    label_sets = [permuted_within(labels, strata, rng) for _ in range(permutations)]
    jobs = max(1, min(os.cpu_count() or 1, permutations // PERMUTATIONS_PER_WORKER))
    null = Parallel(n_jobs=jobs)(delayed(_null_auroc)(pipeline, permuted, strata, options.seed) for permuted in label_sets)
    values = np.array(null)
    defined = values[~np.isnan(values)]
    return {
        "n_permutations": permutations,
        "within": "task",
        "p_value": float((1 + np.sum(defined >= observed)) / (len(defined) + 1)),
        "null_mean": float(defined.mean()) if len(defined) else None,
        "null_band": np.quantile(defined, NULL_BAND).tolist() if len(defined) else None,
        "n_undefined": int(len(values) - len(defined)),
        "reason": None,
    }
