"""A run's per-sample records -> the report's ``signals``, ``diagnostics``, ``fusion``, ``attention_classifiers``,
``probes``, ``layers``, ``mechanisms``, ``verdicts`` and ``summary``.

The input is exactly what a run writes to disk (per-sample JSON records, each task's YAML metadata and, for
probes and the ensemble attention probe, the float16 hidden states and the attention maps), so ``vrp-bench score``
on saved files reproduces the run's sections exactly (the probes with the run's ``--save_traces`` files). Only
scored samples (no error) count; every statistic comes with its bootstrap CI.

Scopes of the ``signals`` section: ``tasks`` (each task alone), ``within_task`` (the primary cross-task
figure: every statistic compares samples of the same task only, ``stratified``) and ``concatenated``
(the tasks' samples in one list: shown for reference, never used by verdicts, summary or ranking).
A signal is scored as a reliability signal only where it does not read the reference answer
(``SignalSpec.reference``; grounding signals on tasks whose boxes are answer-independent); elsewhere it
is a diagnostic, shown by correct vs incorrect in ``diagnostics``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vrp_bench.api.traces import HIDDEN_POSITIONS
from vrp_bench.scoring.attention_classifiers import ENSEMBLE_MAP, attention_classifiers
from vrp_bench.scoring.bootstrap import CONFIDENCE, percentile_ci, resample_weights
from vrp_bench.scoring.fusion import fuse_signals, fusion_pipeline
from vrp_bench.scoring.heldout import evaluate_heldout
from vrp_bench.scoring.hypotheses import benjamini_hochberg
from vrp_bench.scoring.mechanisms import mechanisms
from vrp_bench.scoring.probes import ProbeFits, run_probes
from vrp_bench.scoring.records import (
    boxes_answer_independent,
    concatenated_records,
    correctness,
    is_reliability_signal,
    per_layer_table,
    reliability_view,
    sample_keys,
    scalar_signal_names,
    scored_records,
    signal_values,
    well_covered,
)
from vrp_bench.scoring.settings import ScoringSettings
from vrp_bench.scoring.signal_quality import score_signal
from vrp_bench.scoring.summary import WITHIN_TASK, summarize
from vrp_bench.scoring.verdicts import verdicts
from vrp_bench.signals.catalogue import SIGNALS

CONCATENATED = "concatenated"

LAYER_PROFILES = ("h_s_layers", "delta_h_s_layers", "grounding_mass_layers", "truth_margin_layers", "vision_h_s_layers",
                  "gaze_divergence_layers", "residual_update_image_layers", "residual_update_last_layers",
                  "margin_attention_layers", "margin_mlp_layers", "margin_unattributed_layers")
ADJUSTED_TESTS = ("auroc", "r_pb", "spearman")
"""Statistics whose p-values get Benjamini-Hochberg adjusted across the signals of one scope."""


def _score(name: str, records: Sequence[dict[str, Any]], strata: Sequence[str] | None,
           settings: ScoringSettings) -> dict[str, Any]:
    spec = SIGNALS.get(name)
    calibration = (None if spec.calibrated_against is None else
                   [(r.get("signals") or {}).get(spec.calibrated_against) for r in records])
    return score_signal(signal_values(records, name), correctness(records), spec.orientation,
                        probability=spec.probability, strata=strata, calibration_correct=calibration,
                        options=settings.options())


def _scope(records: Sequence[dict[str, Any]], signals: dict[str, Any]) -> dict[str, Any]:
    correct = correctness(records)
    return {"n": len(records), "accuracy": float(correct.mean()) if len(records) else None,
            "signals": _with_adjusted_p_values(signals)}


def _with_adjusted_p_values(signals: dict[str, Any]) -> dict[str, Any]:
    """Add ``p_value_bh`` (Benjamini-Hochberg across the scope's signals) to each ``ADJUSTED_TESTS`` entry."""
    names = list(signals)
    for statistic in ADJUSTED_TESTS:
        entries = [signals[name]["statistics"][statistic] for name in names]
        for entry, adjusted in zip(entries, benjamini_hochberg([e.get("p_value") for e in entries])):
            entry["p_value_bh"] = adjusted
    return signals


def signal_scores(
    reliable: Mapping[str, Sequence[dict[str, Any]]], metadata: Mapping[str, Mapping[str, Any]],
    settings: ScoringSettings,
) -> dict[str, Any]:
    """The ``signals`` section from each task's ``reliability_view``: per task, within-task and concatenated
    (module docstring); each signal pooled over the tasks where it is a reliability signal."""
    names = {task: scalar_signal_names(records) for task, records in reliable.items()}
    tasks = {task: {**_scope(records, {name: _score(name, records, None, settings) for name in names[task]}),
                    "boxes_answer_independent": boxes_answer_independent(metadata.get(task))}
             for task, records in reliable.items()}
    within, concatenated = {}, {}
    for name in [n for n in SIGNALS if any(n in task_names for task_names in names.values())]:
        covered = [task for task in reliable if name in names[task]]
        records = [r for task in covered for r in reliable[task]]
        strata = [task for task in covered for _ in reliable[task]]
        within[name] = {**_score(name, records, strata, settings), "tasks": covered}
        concatenated[name] = {**_score(name, records, None, settings), "tasks": covered}
    everything = [r for records in reliable.values() for r in records]
    return {"tasks": tasks, WITHIN_TASK: _scope(everything, within), CONCATENATED: _scope(everything, concatenated)}


def diagnostics(
    per_task: Mapping[str, Sequence[dict[str, Any]]], metadata: Mapping[str, Mapping[str, Any]],
    settings: ScoringSettings,
) -> dict[str, Any]:
    """Per task, each numeric scalar signal that reads the reference there (oriented or descriptive, e.g. the MLP
    share of the truth margin's growth), by correct vs incorrect (mean, CI)."""
    section = {}
    for task, records in per_task.items():
        independent = boxes_answer_independent(metadata.get(task))
        entries = {}
        for name in scalar_signal_names(records, oriented=False):
            spec = SIGNALS.get(name)
            if is_reliability_signal(spec, independent):
                continue
            values = np.array([np.nan if v is None else v for v in signal_values(records, name)])
            correct = correctness(records).astype(bool)
            entries[name] = {
                "reference": spec.reference,
                "correct": mean_with_ci(values[correct & ~np.isnan(values)], settings),
                "incorrect": mean_with_ci(values[~correct & ~np.isnan(values)], settings),
            }
        section[task] = entries
    return section


def fuse(records: Sequence[dict[str, Any]], tasks: Sequence[str], names: Sequence[str],
         settings: ScoringSettings) -> dict[str, Any] | None:
    """Out-of-fold logistic fusion of the well-covered reliability signals ``names``, scored within task like a
    signal, with repeats, a permutation test and the gain over a task-only predictor (None: nothing to fuse)."""
    names = well_covered(records, names)
    if len(names) < 2:
        return None
    correct = correctness(records)
    columns = {n: signal_values(records, n) for n in names}
    fused = fuse_signals(columns, correct, seed=settings.seed, n_folds=settings.probe_folds,
                         min_samples=settings.min_samples)
    probabilities, complete = fused.pop("oof_probability"), fused.pop("complete")
    fused["score"], fused["heldout"] = None, None
    if probabilities is not None:
        fused["score"] = score_signal(probabilities, correct, +1, probability=True, strata=tasks,
                                      options=settings.options())
        kept = np.asarray(complete, dtype=int)
        features = np.array([columns[n] for n in names], dtype=float).T[kept]
        fused["heldout"] = evaluate_heldout(
            fusion_pipeline(features, settings.probe_folds), correct[kept], np.asarray(tasks)[kept],
            n_folds=settings.probe_folds, design=settings.design(), options=settings.options(),
            first_repeat=np.array(probabilities, dtype=float)[kept])
    return fused


NOT_CAPTURED = "no hidden states were captured (run a model that captures them)"
NOT_SAVED = ("the run captured hidden states but did not save them: re-run it with --save_traces to re-score the "
             "probes")


def probe_hidden_states(
    records: Sequence[dict[str, Any]], tasks: Sequence[str], keys: Sequence[str],
    hidden: Mapping[str, Mapping[str, np.ndarray]], settings: ScoringSettings,
    absent: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, ProbeFits]]:
    """Per captured position, held-out probes on the scored samples that have hidden states.

    ``hidden[position][key]`` is [n_layers, hidden] for the record with that key (``sample_keys``); ``absent``:
    per position, why there are none (default ``NOT_CAPTURED``; a re-scored run that captured them: ``NOT_SAVED``).
    """
    results: dict[str, Any] = {}
    fits: dict[str, ProbeFits] = {}
    for position in HIDDEN_POSITIONS:
        states = hidden.get(position) or {}
        kept = [i for i, key in enumerate(keys) if key in states]
        if not kept:
            results[position] = {"reason": (absent or {}).get(position, NOT_CAPTURED)}
            continue
        features = np.stack([states[keys[i]].astype(np.float32) for i in kept])
        result, fit = run_probes(
            features, correctness([records[i] for i in kept]), [keys[i] for i in kept], [tasks[i] for i in kept],
            kind=settings.probe_kind, n_folds=settings.probe_folds, last_k=settings.probe_last_k,
            design=settings.design(), options=settings.options())
        results[position] = result
        if fit is not None:
            fits[position] = fit
    return results, fits


def mean_with_ci(values: np.ndarray, settings: ScoringSettings, strata: Sequence[str] | None = None) -> dict[str, Any]:
    """Mean of ``values`` with a percentile bootstrap CI over samples (within ``strata`` when given);
    null with a reason if empty."""
    if len(values) == 0:
        return {"mean": None, "ci": None, "n": 0, "reason": "no samples"}
    weights = resample_weights(len(values), settings.n_resamples, settings.seed, strata=strata)
    replicates = weights @ values / weights.sum(axis=1)
    ci = percentile_ci(replicates, CONFIDENCE)
    return {"mean": float(values.mean()), "ci": ci.interval, "n": int(len(values)), "reason": ci.reason}


def layer_profiles(records: Sequence[dict[str, Any]], settings: ScoringSettings) -> dict[str, Any]:
    """Per layer, the mean of each per-layer signal for correct and for incorrect samples (all tasks'
    samples together: descriptive, never scored), with CIs."""
    profiles: dict[str, Any] = {}
    correct = correctness(records).astype(bool)
    for name in LAYER_PROFILES:
        table = per_layer_table(records, name)
        if table is None:
            continue
        usable, values = table
        is_correct = correct[usable]
        profiles[name] = [
            {"layer": layer,
             "correct": mean_with_ci(values[is_correct, layer], settings),
             "incorrect": mean_with_ci(values[~is_correct, layer], settings)}
            for layer in range(values.shape[1])
        ]
    return profiles


def signal_failures(samples: Mapping[str, Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """Per task, each signal that failed on some sample (``signal_errors``: its value is null there): how many
    samples, and the first one's doc id and reason."""
    section: dict[str, Any] = {}
    for task, records in samples.items():
        for record in records:
            for name, reason in (record.get("signal_errors") or {}).items():
                entry = section.setdefault(task, {}).setdefault(
                    name, {"n": 0, "first_doc_id": record["doc_id"], "first_reason": reason})
                entry["n"] += 1
    return section


def score_sections(
    samples: Mapping[str, Sequence[dict[str, Any]]],
    traces: Mapping[str, Mapping[str, np.ndarray]],
    settings: ScoringSettings,
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
    absent: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, ProbeFits]]:
    """All scored sections of a report, and the trained probes (for saving). ``traces``: per hidden-state position
    and per attention map, ``sample_key`` -> array (``report.results.trace_arrays`` / ``read_traces``);
    ``metadata``: each task's YAML ``metadata`` (whether its boxes are answer-independent); ``absent``: why a
    position's hidden states are not in ``traces`` (``probe_hidden_states``)."""
    metadata = metadata or {}
    per_task = scored_records(samples)
    records, tasks = concatenated_records(samples)
    reliable = reliability_view(per_task, metadata)
    reliable_records = [r for task_records in reliable.values() for r in task_records]
    signals = signal_scores(reliable, metadata, settings)
    keys = sample_keys(samples)
    probes, fits = probe_hidden_states(records, tasks, keys, traces, settings, absent)
    layers = layer_profiles(records, settings)
    fusion = fuse(reliable_records, tasks, list(signals[WITHIN_TASK]["signals"]), settings)
    attention = attention_classifiers(reliable_records, tasks, keys, traces.get(ENSEMBLE_MAP) or {}, settings)
    sections = {"signals": signals, "diagnostics": diagnostics(per_task, metadata, settings),
                "signal_failures": signal_failures(samples), "fusion": fusion, "attention_classifiers": attention,
                "probes": probes, "layers": layers, "mechanisms": mechanisms(records, tasks, settings)}
    sections["summary"] = summarize(sections, reliable_records, tasks, settings)
    sections["verdicts"] = verdicts(signals[WITHIN_TASK]["signals"], records, tasks, settings)
    return sections, fits
