"""A run's per-sample records -> the report's ``signals``, ``fusion``, ``probes``, ``layers`` and ``summary``.

The input is exactly what a run writes to disk (per-sample JSON records and, for probes, the
float16 hidden states), so ``vrp-bench score`` on saved files reproduces the run's sections
exactly. Only scored samples (no error) count; every statistic comes with its bootstrap CI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vrp_bench.scoring.bootstrap import CONFIDENCE, percentile_ci, resample_weights
from vrp_bench.scoring.fusion import fuse_signals
from vrp_bench.scoring.probes import ProbeFits, run_probes
from vrp_bench.scoring.signal_quality import score_signal
from vrp_bench.signals import SIGNALS

POOLED = "pooled"
HIDDEN_POSITIONS = ("hidden_last_prompt", "hidden_first_answer")
LAYER_PROFILES = ("h_s_layers", "delta_h_s_layers", "grounding_mass_layers", "truth_margin_layers", "vision_h_s_layers")
CLUSTER_SIGNALS = ("h_s", "c_k_dbscan", "c_k_components")
FUSION_MIN_COVERAGE = 0.9
"""A signal joins the fusion when it is defined for at least this share of the scored samples."""


@dataclass(frozen=True)
class ScoringSettings:
    """How signals are scored (recorded in the report's config)."""

    seed: int = 0
    n_resamples: int = 1000
    min_samples: int = 10
    probe_kind: str = "logistic"
    probe_folds: int = 5
    probe_last_k: int = 5

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def scored_records(samples: Mapping[str, Sequence[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Per task, the records that were scored (no error), in order; the pooled set under ``POOLED``."""
    per_task = {task: [r for r in records if r.get("error") is None and r.get("correct") is not None]
                for task, records in samples.items()}
    per_task[POOLED] = [r for records in per_task.values() for r in records]
    return per_task


def sample_key(task: str, doc_id: int) -> str:
    """A sample's id, unique across the tasks of a run: ``task/doc_id``."""
    return f"{task}/{doc_id}"


def sample_keys(samples: Mapping[str, Sequence[dict[str, Any]]]) -> list[str]:
    """``sample_key`` of every pooled scored record, in ``scored_records`` order."""
    return [sample_key(task, r["doc_id"]) for task, records in scored_records(samples).items() if task != POOLED
            for r in records]


def scalar_signal_names(records: Sequence[dict[str, Any]]) -> list[str]:
    """Registered reliability signals (scalar, oriented) that at least one record carries."""
    present = {name for r in records for name, value in (r.get("signals") or {}).items() if value is not None}
    return [name for name, spec in SIGNALS.items() if spec.orientation is not None and not spec.per_layer and name in present]


def _values(records: Sequence[dict[str, Any]], name: str) -> list[float | None]:
    values = [(r.get("signals") or {}).get(name) for r in records]
    return [None if v is None else float(v) for v in values]


def _correct(records: Sequence[dict[str, Any]]) -> np.ndarray:
    return np.array([bool(r["correct"]) for r in records], dtype=int)


def score_signals(records: Sequence[dict[str, Any]], settings: ScoringSettings) -> dict[str, Any]:
    """Every scalar signal of ``records`` scored against correctness."""
    correct = _correct(records)
    return {
        name: score_signal(
            _values(records, name), correct, SIGNALS.get(name).orientation,
            probability=SIGNALS.get(name).probability, seed=settings.seed,
            n_resamples=settings.n_resamples, min_samples=settings.min_samples,
        )
        for name in scalar_signal_names(records)
    }


def fuse(records: Sequence[dict[str, Any]], settings: ScoringSettings) -> dict[str, Any] | None:
    """Out-of-fold logistic fusion of the well-covered signals, scored like a signal (None: nothing to fuse)."""
    names = [n for n in scalar_signal_names(records)
             if sum(v is not None for v in _values(records, n)) >= FUSION_MIN_COVERAGE * len(records)]
    if len(names) < 2:
        return None
    correct = _correct(records)
    fused = fuse_signals({n: _values(records, n) for n in names}, correct, seed=settings.seed,
                         n_folds=settings.probe_folds, min_samples=settings.min_samples)
    probabilities = fused.pop("oof_probability")
    fused["score"] = (score_signal(probabilities, correct, +1, probability=True, seed=settings.seed,
                                   n_resamples=settings.n_resamples, min_samples=settings.min_samples)
                      if probabilities is not None else None)
    return fused


def probe_hidden_states(
    records: Sequence[dict[str, Any]], keys: Sequence[str], hidden: Mapping[str, Mapping[str, np.ndarray]],
    settings: ScoringSettings,
) -> tuple[dict[str, Any], dict[str, ProbeFits]]:
    """Per captured position, held-out probes on the pooled samples that have hidden states.

    ``hidden[position][key]`` is [n_layers, hidden] for the record with that key (``sample_keys``).
    """
    results: dict[str, Any] = {}
    fits: dict[str, ProbeFits] = {}
    for position in HIDDEN_POSITIONS:
        states = hidden.get(position) or {}
        kept = [(key, r) for key, r in zip(keys, records) if key in states]
        if not kept:
            results[position] = {"reason": "no hidden states were captured (run a model that captures them)"}
            continue
        features = np.stack([states[key].astype(np.float32) for key, _ in kept])
        kept_records = [r for _, r in kept]
        result, fit = run_probes(features, _correct(kept_records), [key for key, _ in kept], kind=settings.probe_kind,
                                 seed=settings.seed, n_folds=settings.probe_folds, last_k=settings.probe_last_k,
                                 n_resamples=settings.n_resamples, min_samples=settings.min_samples)
        results[position] = result
        if fit is not None:
            fits[position] = fit
    return results, fits


def mean_with_ci(values: np.ndarray, settings: ScoringSettings) -> dict[str, Any]:
    """Mean of ``values`` with a percentile bootstrap CI over samples; null with a reason if empty."""
    if len(values) == 0:
        return {"mean": None, "ci": None, "n": 0, "reason": "no samples"}
    weights = resample_weights(len(values), settings.n_resamples, settings.seed)
    replicates = weights @ values / weights.sum(axis=1)
    ci = percentile_ci(replicates, CONFIDENCE)
    return {"mean": float(values.mean()), "ci": ci.interval, "n": int(len(values)), "reason": ci.reason}


def layer_profiles(records: Sequence[dict[str, Any]], settings: ScoringSettings) -> dict[str, Any]:
    """Per layer, the mean of each per-layer signal for correct and for incorrect samples, with CIs."""
    profiles: dict[str, Any] = {}
    correct = _correct(records).astype(bool)
    for name in LAYER_PROFILES:
        rows = [(r.get("signals") or {}).get(name) for r in records]
        usable = [i for i, row in enumerate(rows) if row is not None and None not in row]
        if not usable:
            continue
        table = np.array([rows[i] for i in usable], dtype=float)
        is_correct = correct[usable]
        profiles[name] = [
            {"layer": layer,
             "correct": mean_with_ci(table[is_correct, layer], settings),
             "incorrect": mean_with_ci(table[~is_correct, layer], settings)}
            for layer in range(table.shape[1])
        ]
    return profiles


def _statistic(scores: Mapping[str, Any], signal: str, statistic: str) -> dict[str, Any] | None:
    entry = scores.get(signal)
    return None if entry is None else entry["statistics"][statistic]


def verdicts(pooled_scores: Mapping[str, Any], layers: Mapping[str, Any]) -> dict[str, Any]:
    """The study's claims, decided by the data of this run.

    - cluster_failure: every attention-structure signal (h_s, c_k_*) has a point-biserial R whose 95%
      CI contains 0 (structure says nothing about correctness).
    - grounding_predicts_correctness: the AUROC CI of grounding_mass lies above 0.5.
    - early_lock_layer / late_diffusion_layer: the layer whose mean dH_s (all samples) is lowest /
      highest.
    """
    cluster = {}
    for name in CLUSTER_SIGNALS:
        r_pb = _statistic(pooled_scores, name, "r_pb")
        if r_pb is not None and r_pb["ci"] is not None:
            cluster[name] = {"r_pb": r_pb["value"], "ci": r_pb["ci"], "zero_in_ci": r_pb["ci"][0] <= 0 <= r_pb["ci"][1]}
    grounding = _statistic(pooled_scores, "grounding_mass", "auroc")
    deltas = layers.get("delta_h_s_layers")
    mean_delta = None
    if deltas:
        mean_delta = [_pooled_mean(entry) for entry in deltas]
    return {
        "cluster_failure": {
            "holds": all(c["zero_in_ci"] for c in cluster.values()) if cluster else None,
            "signals": cluster,
        },
        "grounding_predicts_correctness": (
            None if grounding is None or grounding["ci"] is None else bool(grounding["ci"][0] > 0.5)
        ),
        # delta_h_s_layers[i] is the change from layer i to layer i + 1
        "early_lock_layer": None if not mean_delta else int(np.nanargmin(mean_delta)) + 1,
        "late_diffusion_layer": None if not mean_delta else int(np.nanargmax(mean_delta)) + 1,
    }


def _pooled_mean(entry: Mapping[str, Any]) -> float:
    parts = [(entry[k]["mean"], entry[k]["n"]) for k in ("correct", "incorrect") if entry[k]["mean"] is not None]
    total = sum(n for _, n in parts)
    return sum(m * n for m, n in parts) / total if total else float("nan")


def score_sections(
    samples: Mapping[str, Sequence[dict[str, Any]]],
    hidden: Mapping[str, Mapping[str, np.ndarray]],
    settings: ScoringSettings,
) -> tuple[dict[str, Any], dict[str, ProbeFits]]:
    """All scored sections of a report, and the trained probes (for saving)."""
    per_task = scored_records(samples)
    signals = {task: {"n": len(records), "accuracy": float(_correct(records).mean()) if records else None,
                      "signals": score_signals(records, settings)}
               for task, records in per_task.items()}
    pooled = per_task[POOLED]
    probes, fits = probe_hidden_states(pooled, sample_keys(samples), hidden, settings)
    layers = layer_profiles(pooled, settings)
    fusion = fuse(pooled, settings)
    sections = {"signals": signals, "fusion": fusion, "probes": probes, "layers": layers}
    sections["summary"] = summarize(sections)
    sections["verdicts"] = verdicts(signals[POOLED]["signals"], layers)
    return sections, fits


def summarize(sections: Mapping[str, Any]) -> dict[str, Any]:
    """The scores the leaderboard ranks by, defined here and nowhere else.

    accuracy and n (pooled); the held-out AUROC (with CI) of each scored signal; the best of them;
    the nested hidden-state probe (last prompt position); the fusion of signals.
    """
    pooled = sections["signals"][POOLED]
    aurocs = {name: {"value": s["statistics"]["auroc"]["value"], "ci": s["statistics"]["auroc"]["ci"]}
              for name, s in pooled["signals"].items()}
    defined = {name: a for name, a in aurocs.items() if a["value"] is not None}
    best = max(defined.items(), key=lambda item: item[1]["value"], default=None)
    probe = sections["probes"].get("hidden_last_prompt") or {}
    nested = (probe.get("nested") or {}).get("auroc") or {}
    fusion_score = (sections["fusion"] or {}).get("score") or {}
    fusion_auroc = (fusion_score.get("statistics") or {}).get("auroc") or {}
    return {
        "n": pooled["n"],
        "accuracy": pooled["accuracy"],
        "signal_auroc": aurocs,
        "best_signal": None if best is None else {"name": best[0], **best[1]},
        "probe_auroc": {"value": nested.get("value"), "ci": nested.get("ci")},
        "fusion_auroc": {"value": fusion_auroc.get("value"), "ci": fusion_auroc.get("ci")},
    }
