"""Per-condition ablation records -> the report's ``ablation`` section (plain functions on arrays).

Inputs are what a run writes to disk (the baseline's per-sample records, each condition's per-sample
records, and the run's ``AblationRun.context()``), so the section can be recomputed without the model.
Only docs the baseline scored count; a doc that fails under a condition is counted in that
condition's ``n_errors`` and left out of its statistics (never scored as wrong).

Definitions (p: the fraction of units destroyed; acc(0): the baseline accuracy; acc(p): acc(0) plus the
paired accuracy change under that condition, so failed docs never count as wrong; chance: expected
accuracy of a uniform guess among the task's answers):
- accuracy change: acc(p) - acc(0) on the same docs, CI by a paired bootstrap over docs;
- flip rate: share of docs whose answer differs from the unablated answer;
- first-token KL: mean KL(unablated || ablated) of the first answer token's distribution, in nats;
- signal AUROC: the tracked signals recomputed under the condition; probe AUROC: the baseline's nested
  last-prompt probe applied to each doc's ablated hidden state by the fold that held the doc out;
- robustness AUC: the area under the retention curve acc(p) / acc(0) over the swept p, divided by the
  swept range (1 = no loss anywhere; trapezoidal rule);
- breaking point: the smallest swept p with acc(p) < acc(0) - 0.5 (acc(0) - chance); None if none;
- bottleneck (per-layer sweep): sensitivity(layer) = 1 - robustness AUC of its random-unit curve; see
  ``bottleneck`` for the verdict rule.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vrp_bench.scoring.bootstrap import CONFIDENCE, percentile_ci, resample_weights
from vrp_bench.scoring.records import concatenated_records, sample_key, sample_keys, scored_records
from vrp_bench.scoring.sections import mean_with_ci
from vrp_bench.scoring.settings import ScoringSettings
from vrp_bench.scoring.signal_quality import oriented, score_auroc, undefined_entry
from vrp_bench.signals.catalogue import SIGNALS

CHANCE_METHOD = "1 / number of distinct reference answers, per task and question type"
ROBUST_BELOW = 0.05
"""Largest sensitivity of every layer under which the verdict is "robust" (no layer matters)."""
BOTTLENECK_RATIO = 2.0
"""A layer is a bottleneck when its sensitivity is at least this multiple of the other layers' mean."""


def _answer(target: Any) -> str:
    first = target[0] if isinstance(target, list) and target else target
    return str(first).strip().lower()


def chance_accuracy(samples: Mapping[str, Sequence[dict[str, Any]]]) -> dict[str, float]:
    """Per ``sample_key``: 1 / the number of distinct reference answers among the scored records of its
    task with the same question type (``CHANCE_METHOD``)."""
    chance: dict[str, float] = {}
    for task, records in scored_records(samples).items():
        answers: dict[Any, set[str]] = defaultdict(set)
        for record in records:
            answers[record.get("question_type")].add(_answer(record.get("target")))
        for record in records:
            chance[sample_key(task, record["doc_id"])] = 1.0 / len(answers[record.get("question_type")])
    return chance


def _finite(values: Sequence[float] | np.ndarray) -> list[float | None]:
    """JSON-ready floats: NaN (no accuracy: every doc of the condition failed) becomes None."""
    return [float(v) if np.isfinite(v) else None for v in values]


def robustness_auc(
    fractions: Sequence[float], accuracy: Sequence[float | None] | np.ndarray, baseline: float
) -> float | None:
    """Mean retention acc(p) / acc(0) over the swept range of p (trapezoidal); None if undefined (no
    baseline accuracy, fewer than two fractions, or a fraction without an accuracy)."""
    retention = np.array(accuracy, dtype=float) / baseline if baseline > 0 else np.array([np.nan])
    if len(fractions) < 2 or fractions[-1] == fractions[0] or not np.all(np.isfinite(retention)):
        return None
    p = np.asarray(fractions, dtype=float)
    return float(np.sum((retention[1:] + retention[:-1]) / 2 * np.diff(p)) / (p[-1] - p[0]))


def breaking_point(
    fractions: Sequence[float], accuracy: Sequence[float | None] | np.ndarray, baseline: float, chance: float
) -> float | None:
    """Smallest swept p whose accuracy falls below acc(0) - 0.5 (acc(0) - chance); None if none does
    (fractions without an accuracy are skipped)."""
    threshold = baseline - 0.5 * (baseline - chance)
    return next((float(p) for p, acc in zip(fractions, np.array(accuracy, dtype=float)) if acc < threshold), None)


def bottleneck(profile: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The verdict of a per-layer sweep from each layer's sensitivity (1 - robustness AUC):

    "robust" when every sensitivity is below ``ROBUST_BELOW``; otherwise, when the most sensitive layer's
    sensitivity is at least ``BOTTLENECK_RATIO`` times the mean of the other layers', an "early", "mid" or
    "late bottleneck" by its position (first, middle or last third of the layers); else "distributed".
    """
    rule = (f"robust if every sensitivity < {ROBUST_BELOW}; bottleneck if the most sensitive layer's "
            f"sensitivity >= {BOTTLENECK_RATIO} x the others' mean (early / mid / late by thirds of the depth); "
            "else distributed")
    usable = [entry for entry in profile if entry["sensitivity"] is not None]
    if len(usable) < 2:
        return {"verdict": None, "most_sensitive_layer": None, "rule": rule,
                "reason": "needs random-unit curves of at least 2 layers (--layer all with random units)"}
    worst = max(usable, key=lambda entry: entry["sensitivity"])
    others = [entry["sensitivity"] for entry in usable if entry is not worst]
    n_layers = max(entry["layer"] for entry in profile) + 1
    if worst["sensitivity"] < ROBUST_BELOW:
        verdict = "robust"
    elif worst["sensitivity"] >= BOTTLENECK_RATIO * float(np.mean(others)):
        position = worst["layer"] / max(n_layers - 1, 1)
        verdict = ("early" if position < 1 / 3 else "mid" if position < 2 / 3 else "late") + " bottleneck"
    else:
        verdict = "distributed"
    return {"verdict": verdict, "most_sensitive_layer": worst["layer"], "rule": rule, "reason": None}


def _auroc(triples: Sequence[tuple[float, bool, str]], scoring: ScoringSettings, orient: Any = None) -> dict[str, Any]:
    """Within-task AUROC entry (bootstrap CI) of (value, correct, key) triples (``key``: ``sample_key``,
    whose task part is the stratum); ``orient`` maps the values first."""
    values = np.array([v for v, _, _ in triples], dtype=float)
    correct = np.array([c for _, c, _ in triples], dtype=int)
    tasks = [key.rsplit("/", 1)[0] for _, _, key in triples]
    return score_auroc(values if orient is None else orient(values), correct, strata=tasks, options=scoring.options())


def _tracked_auroc(records: Sequence[dict[str, Any]], name: str, scoring: ScoringSettings) -> dict[str, Any]:
    """Within-task AUROC of a registered signal over the records (with ``key``) that carry it, in its orientation."""
    spec = SIGNALS.get(name)
    triples = [(r["signals"][name], bool(r["correct"]), r["key"]) for r in records
               if (r.get("signals") or {}).get(name) is not None]
    return _auroc(triples, scoring, lambda values: oriented(values, spec.orientation, spec.probability))


def _paired_change(baseline: np.ndarray, ablated: np.ndarray, scoring: ScoringSettings) -> dict[str, Any]:
    """mean(ablated) - mean(baseline) over the same docs, with a paired percentile bootstrap CI."""
    if len(baseline) == 0:
        return {"value": None, "ci": None, "reason": "no samples"}
    weights = resample_weights(len(baseline), scoring.n_resamples, scoring.seed)
    replicates = weights @ (ablated - baseline) / weights.sum(axis=1)
    ci = percentile_ci(replicates, CONFIDENCE)
    return {"value": float(ablated.mean() - baseline.mean()), "ci": ci.interval, "reason": ci.reason}


def condition_outcome(
    condition: dict[str, Any], records: Sequence[dict[str, Any]], baseline_correct: Mapping[str, bool],
    signals: Sequence[str], scoring: ScoringSettings,
) -> dict[str, Any]:
    """Accuracy (CI), its paired change vs the baseline (CI), flip rate, first-token KL, the tracked
    signals' AUROC and the held-out probe's AUROC under one condition. ``records`` carry ``key``
    (``sample_key``)."""
    kept = [r for r in records if r["key"] in baseline_correct]
    scored = [r for r in kept if r.get("error") is None]
    ablated = np.array([float(bool(r["correct"])) for r in scored])
    base = np.array([float(baseline_correct[r["key"]]) for r in scored])
    kl = np.array([r["first_token_kl"] for r in scored if r.get("first_token_kl") is not None], dtype=float)
    probed = [(r["probe_probability"], bool(r["correct"]), r["key"]) for r in scored
              if r.get("probe_probability") is not None]
    return {
        **condition,
        "n": len(scored),
        "n_errors": len(kept) - len(scored),
        "accuracy": mean_with_ci(ablated, scoring),
        "accuracy_change": _paired_change(base, ablated, scoring),
        "flip_rate": mean_with_ci(np.array([float(bool(r["flipped"])) for r in scored]), scoring),
        "first_token_kl": mean_with_ci(kl, scoring),
        "signal_auroc": {name: _tracked_auroc(scored, name, scoring) for name in signals},
        "probe_auroc": (_auroc(probed, scoring) if probed
                        else undefined_entry(0, "no held-out probe (the baseline could not cross-validate one)")),
    }


def _paired_accuracy(outcome: Mapping[str, Any], baseline: float) -> float | None:
    """acc(0) + the paired change: the condition's accuracy compared on the docs it answered (failed docs
    drop out of both sides), placed on the whole run's baseline."""
    change = outcome["accuracy_change"]["value"]
    return None if change is None else baseline + change


def robustness_curves(outcomes: Sequence[dict[str, Any]], baseline: float, chance: float) -> list[dict[str, Any]]:
    """Per (layer, space, method, selection): paired accuracy over p (``_paired_accuracy``; mean over
    random seeds, with their spread), robustness AUC (also per seed) and breaking point. Each starts at the
    layer's p = 0 condition (acc(0) itself when it reproduced the baseline, as it must)."""
    units = [o for o in outcomes if o["kind"] == "units"]
    start = {o["layer"]: o for o in units if o["fraction"] == 0.0}
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for o in units:
        if o["fraction"] > 0:
            groups[(o["layer"], o["space"], o["method"], o["selection"])].append(o)
    curves = []
    for (layer, space, method, selection), members in groups.items():
        fractions = sorted({o["fraction"] for o in members})
        zero = _paired_accuracy(start[layer], baseline) if layer in start else baseline
        by_seed: dict[int, list[float | None]] = defaultdict(list)
        for p in fractions:
            for o in sorted((o for o in members if o["fraction"] == p), key=lambda o: o["seed"]):
                by_seed[o["seed"]].append(_paired_accuracy(o, baseline))
        # [seeds, fractions]; a condition where every doc failed has no accuracy (NaN here, null in the report)
        table = np.array([[zero, *row] for row in by_seed.values()], dtype=float)
        mean = table.mean(axis=0)
        swept = [0.0, *fractions]
        several = len(table) > 1
        curves.append({
            "layer": layer, "space": space, "method": method, "selection": selection,
            "fractions": swept, "accuracy": _finite(mean),
            "accuracy_seed_sd": _finite(table.std(axis=0)) if several else None,
            "accuracy_seed_range": [_finite(pair) for pair in zip(table.min(0), table.max(0))] if several else None,
            "n_seeds": len(table),
            "robustness_auc": robustness_auc(swept, mean, baseline),
            "robustness_auc_seeds": [robustness_auc(swept, row, baseline) for row in table] if several else None,
            "breaking_point": breaking_point(swept, mean, baseline, chance),
        })
    return sorted(curves, key=lambda c: (c["layer"], c["selection"]))


CONDITION_FIELDS = ("id", "kind", "selection", "fraction", "seed", "layer", "space", "method")


def ablation_context(section: Mapping[str, Any]) -> dict[str, Any]:
    """The ``AblationRun.context()`` a saved ablation section was computed from (for re-scoring)."""
    keys = ("settings", "layers", "probe_chosen_layers", "calibration", "reference_mismatches", "tracked_signals")
    return {**{key: section[key] for key in keys}, "hooks_removed": section["hooks_removed"],
            "conditions": [{field: c[field] for field in CONDITION_FIELDS} for c in section["conditions"]]}


def ablation_section(
    samples: Mapping[str, Sequence[dict[str, Any]]],
    records: Mapping[str, Sequence[dict[str, Any]]],
    context: Mapping[str, Any],
    scoring: ScoringSettings,
) -> dict[str, Any]:
    """The report's ``ablation`` section from the baseline's per-sample records (``samples``, per task),
    every condition's per-sample records (per task) and ``AblationRun.context()``."""
    pooled, _ = concatenated_records(samples)
    keys = sample_keys(samples)
    baseline_correct = {key: bool(r["correct"]) for key, r in zip(keys, pooled)}
    chance_by_key = chance_accuracy(samples)
    correct = np.array([float(v) for v in baseline_correct.values()])
    baseline = float(correct.mean()) if len(correct) else 0.0
    chance = float(np.mean(list(chance_by_key.values()))) if chance_by_key else 0.0
    signals = list(context["tracked_signals"])
    by_condition: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for task, task_records in records.items():
        for r in task_records:
            by_condition[r["condition"]].append({**r, "key": sample_key(task, r["doc_id"])})
    outcomes = [condition_outcome(c, by_condition.get(c["id"], []), baseline_correct, signals, scoring)
                for c in context["conditions"]]
    curves = robustness_curves(outcomes, baseline, chance)
    profile = [{"layer": c["layer"], "robustness_auc": c["robustness_auc"],
                "sensitivity": None if c["robustness_auc"] is None else 1.0 - c["robustness_auc"],
                "accuracy_at_max_fraction": c["accuracy"][-1]}
               for c in curves if c["selection"] == "random"]
    return {
        "settings": context["settings"],
        "layers": context["layers"],
        "probe_chosen_layers": context["probe_chosen_layers"],
        "calibration": context["calibration"],
        "reference_mismatches": context["reference_mismatches"],
        "hooks_removed": context["hooks_removed"],
        "tracked_signals": signals,
        "baseline": {
            "accuracy": mean_with_ci(correct, scoring),
            "chance": chance,
            "chance_method": CHANCE_METHOD,
            "signal_auroc": {name: _tracked_auroc([{**r, "key": key} for r, key in zip(pooled, keys)], name, scoring)
                             for name in signals},
        },
        "conditions": outcomes,
        "curves": curves,
        "bottleneck": {"profile": profile, **bottleneck(profile)} if len(context["layers"]) > 1 else None,
    }
