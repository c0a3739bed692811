"""The study's claims, decided by a run's own data, each ``holds`` / ``does_not_hold`` / ``undetermined``
with the evidence that decided it.

Signal claims read the within-task AUROC entries of the ``signals`` section (their bootstrap tests,
``hypotheses``), Holm-corrected across the signals a claim covers, at family-wise level ``alpha``:

- cluster_failure ("attention structure says nothing about correctness"; h_s, c_k_dbscan,
  c_k_components): holds when every signal is shown equivalent to no relation (TOST: within-task AUROC
  inside 0.5 +/- margin); does not hold when some signal lies significantly beyond the margin;
  otherwise undetermined ("not significant" is not "no effect").
- grounding_predicts_correctness (grounding_mass, pointing_hit and their vision-encoder twins, scored
  only on tasks whose boxes do not depend on the answer): holds when some signal's AUROC is
  significantly above 0.5; does not hold when every signal is equivalent to 0.5 or one is significantly
  below it; otherwise undetermined.

A signal claim never drops a signal it covers: each one without a tested AUROC is listed in ``untested`` with
why (its AUROC's reason, e.g. a signal constant on every doc; or, absent from the scores, null on every scored
doc: failed there, or not captured) and named in ``decided_by``, which then speaks only of the tested ones.

Layer claims read each sample's dH_s per layer (``delta_h_s_layers``; entry i is the change from layer i
to layer i + 1). The mean dH_s per layer is bootstrapped (samples resampled within task):
- early_lock: the layer of the largest mean drop. Holds when that drop's CI lies below 0 and the
  bootstrap argmin is the same layer in the whole percentile interval of layers (the layer is
  determined); does not hold when H_s rises significantly at every layer (every CI above 0);
  otherwise undetermined, with the layer reported only when the verdict holds.
- late_diffusion: the same for the largest mean rise (CI above 0; does not hold when every CI is below 0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vrp_bench.scoring.bootstrap import percentile_ci, resample_weights
from vrp_bench.scoring.hypotheses import holm
from vrp_bench.scoring.records import per_layer_table
from vrp_bench.scoring.settings import ScoringSettings

STRUCTURE_SIGNALS = ("h_s", "c_k_dbscan", "c_k_components")
GROUNDING_SIGNALS = ("grounding_mass", "pointing_hit", "vision_grounding_mass", "vision_pointing_hit")
HOLDS, DOES_NOT_HOLD, UNDETERMINED = "holds", "does_not_hold", "undetermined"


def _tested(scores: Mapping[str, Any], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per signal of ``names`` with a tested within-task AUROC: value, CI, tests and their Holm adjustment."""
    entries = {name: scores[name]["statistics"]["auroc"] for name in names
               if name in scores and scores[name]["statistics"]["auroc"].get("p_value") is not None}
    evidence = {name: {key: entry[key] for key in ("value", "ci", "n", "p_value", "p_equivalent", "p_beyond_margin")}
                for name, entry in entries.items()}
    for test in ("p_value", "p_equivalent", "p_beyond_margin"):
        for name, adjusted in zip(evidence, holm([e[test] for e in evidence.values()])):
            evidence[name][f"{test}_holm"] = adjusted
    for name, entry in evidence.items():
        entry["tasks"] = scores[name].get("tasks")
    return evidence


Decision = tuple[str, str]
"""(status, the evidence that decided it in words)."""


def _untested_reason(scores: Mapping[str, Any], records: Sequence[dict[str, Any]] | None, name: str) -> str:
    """Why signal ``name`` has no tested within-task AUROC: the AUROC's own reason when it was scored; else, from
    the scored ``records`` (None: not known), why it has no value on any of them."""
    if name in scores:
        auroc = scores[name]["statistics"]["auroc"]
        return auroc.get("reason") or "its within-task AUROC has no bootstrap test"
    if records is None:
        return "not scored in this run"
    if any((r.get("signals") or {}).get(name) is not None for r in records):
        return "it has values only on tasks where it is no reliability signal (it reads answer-dependent boxes)"
    failures = [r["signal_errors"][name] for r in records if name in (r.get("signal_errors") or {})]
    if failures:
        return f"null on all {len(records)} scored docs: it failed on {len(failures)} (first: {failures[0]})"
    return f"null on all {len(records)} scored docs (its inputs were not captured)"


def _signal_verdict(
    scores: Mapping[str, Any], names: Sequence[str], claim: str, rule: str, untested: str,
    decide: Callable[[dict[str, dict[str, Any]]], Decision], records: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A claim about ``names``: ``decide`` on their tested evidence; undetermined (``untested``) without any.
    Every signal of ``names`` left out is in ``untested`` with why (``_untested_reason``) and in ``decided_by``."""
    evidence = _tested(scores, names)
    status, decided_by = decide(evidence) if evidence else (UNDETERMINED, untested)
    left_out = {name: _untested_reason(scores, records, name) for name in names if name not in evidence}
    by_reason: dict[str, list[str]] = {}
    for name, why in left_out.items():
        by_reason.setdefault(why, []).append(name)
    return {"status": status, "claim": claim, "rule": rule, "signals": evidence, "untested": left_out,
            "decided_by": decided_by + "".join(f"; {', '.join(group)} untested: {why}"
                                               for why, group in by_reason.items())}


def cluster_failure(
    scores: Mapping[str, Any], settings: ScoringSettings, records: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Attention structure vs correctness, by equivalence tests (module docstring); ``records``, the scored
    records, say why a signal absent from ``scores`` is."""
    margin, alpha = settings.equivalence_margin, settings.alpha

    def decide(evidence: dict[str, dict[str, Any]]) -> Decision:
        beyond = [name for name, e in evidence.items() if e["p_beyond_margin_holm"] < alpha]
        if beyond:
            return DOES_NOT_HOLD, f"{', '.join(beyond)}: within-task AUROC significantly beyond 0.5 +/- {margin:g}"
        open_ = [name for name, e in evidence.items() if e["p_equivalent_holm"] >= alpha]
        if not open_:
            return HOLDS, f"every tested within-task AUROC ({', '.join(evidence)}) is shown inside 0.5 +/- {margin:g}"
        return UNDETERMINED, f"{', '.join(open_)}: neither shown inside 0.5 +/- {margin:g} nor beyond it (CI too wide)"

    return _signal_verdict(
        scores, STRUCTURE_SIGNALS, "attention structure (h_s, c_k) does not predict correctness within a task",
        f"holds: every within-task AUROC shown inside 0.5 +/- {margin:g} (TOST, Holm, alpha {alpha:g}); "
        "does_not_hold: one significantly outside it; else undetermined",
        "no attention-structure signal could be tested", decide, records)


def grounding_predicts_correctness(
    scores: Mapping[str, Any], settings: ScoringSettings, records: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Grounding vs correctness on answer-independent boxes (module docstring); ``records`` as for
    ``cluster_failure``."""
    margin, alpha = settings.equivalence_margin, settings.alpha

    def decide(evidence: dict[str, dict[str, Any]]) -> Decision:
        significant = {name: e for name, e in evidence.items() if e["p_value_holm"] < alpha}
        above = [name for name, e in significant.items() if e["value"] > 0.5]
        if above:
            return HOLDS, f"{', '.join(above)}: within-task AUROC significantly above 0.5"
        if significant:
            return DOES_NOT_HOLD, f"{', '.join(significant)}: within-task AUROC significantly below 0.5"
        if all(e["p_equivalent_holm"] < alpha for e in evidence.values()):
            return DOES_NOT_HOLD, (f"every tested within-task AUROC ({', '.join(evidence)}) is shown inside "
                                   f"0.5 +/- {margin:g}")
        return UNDETERMINED, "no AUROC significantly different from 0.5, none shown inside the margin"

    return _signal_verdict(
        scores, GROUNDING_SIGNALS,
        "attention on the ground-truth region predicts correctness within a task (answer-independent boxes only)",
        f"holds: some within-task AUROC significantly above 0.5 (Holm, alpha {alpha:g}); does_not_hold: every "
        f"AUROC shown inside 0.5 +/- {margin:g} or one significantly below 0.5; else undetermined",
        "no grounding signal could be tested (no task with answer-independent boxes, or no attention)", decide,
        records)


def layer_verdicts(records: Sequence[dict[str, Any]], tasks: Sequence[str], settings: ScoringSettings) -> dict[str, Any]:
    """``early_lock`` and ``late_diffusion`` from the per-sample dH_s (module docstring)."""
    table = per_layer_table(records, "delta_h_s_layers")
    if table is None:
        reason = "no per-layer attention entropy was captured"
        return {name: {"status": UNDETERMINED, "layer": None, "decided_by": reason} for name in ("early_lock", "late_diffusion")}
    usable, deltas = table
    strata = np.asarray(tasks)[usable]
    weights = resample_weights(len(deltas), settings.n_resamples, settings.seed, strata=strata)
    means = deltas.mean(axis=0)
    replicates = weights @ deltas / weights.sum(axis=1, keepdims=True)  # [B, layers]
    intervals = [percentile_ci(replicates[:, i]).interval for i in range(deltas.shape[1])]
    return {
        "early_lock": _layer_verdict(means, replicates, intervals, direction=-1),
        "late_diffusion": _layer_verdict(means, replicates, intervals, direction=+1),
    }


def _layer_verdict(means: np.ndarray, replicates: np.ndarray, intervals: list[list[float]], direction: int) -> dict[str, Any]:
    """Largest drop (direction -1) or rise (+1) of mean H_s between consecutive layers, with its evidence."""
    word = "drop" if direction < 0 else "rise"
    position = int(np.argmax(direction * means))
    chosen = np.argmax(direction * replicates, axis=1)
    layer_interval = [int(v) + 1 for v in np.quantile(chosen, [0.025, 0.975], method="nearest")]
    delta_ci = intervals[position]
    evidence = {
        "candidate_layer": position + 1,
        "delta_h_s": float(means[position]),
        "delta_h_s_ci": delta_ci,
        "layer_ci": layer_interval,
        "bootstrap_share": float(np.mean(chosen == position)),
        "delta_h_s_per_layer": [{"layer": i + 1, "mean": float(m), "ci": ci} for i, (m, ci) in enumerate(zip(means, intervals))],
    }
    significant = delta_ci is not None and direction * delta_ci[0 if direction > 0 else 1] > 0
    if significant and layer_interval[0] == layer_interval[1]:
        return {"status": HOLDS, "layer": position + 1, **evidence,
                "decided_by": f"the largest {word} (layer {position + 1}) has a CI excluding 0 and is the same layer "
                              "in 95% of resamples"}
    opposite = all(ci is not None and -direction * ci[0 if direction < 0 else 1] > 0 for ci in intervals)
    if opposite:
        return {"status": DOES_NOT_HOLD, "layer": None, **evidence,
                "decided_by": f"H_s never {word}s: every layer's mean dH_s has a CI on the other side of 0"}
    reason = (f"the largest {word}'s CI includes 0" if not significant else
              f"the layer of the largest {word} varies across resamples (layers {layer_interval[0]}-{layer_interval[1]})")
    return {"status": UNDETERMINED, "layer": None, **evidence, "decided_by": reason}


def verdicts(
    within_task_scores: Mapping[str, Any], records: Sequence[dict[str, Any]], tasks: Sequence[str],
    settings: ScoringSettings,
) -> dict[str, Any]:
    """Every verdict of the module docstring."""
    return {
        "cluster_failure": cluster_failure(within_task_scores, settings, records),
        "grounding_predicts_correctness": grounding_predicts_correctness(within_task_scores, settings, records),
        **layer_verdicts(records, tasks, settings),
    }
