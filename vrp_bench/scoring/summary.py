"""The report's ``summary``: the scores the leaderboard ranks by, defined here and nowhere else.

Every figure is within-task (``stratified``) and covers reliability signals only (no signal that reads
the reference answer):
- ``signal_auroc``: the within-task AUROC (CI) of each signal; signals that rank every sample the same way
  on this run (e.g. ``p_tok``, ``min_logprob`` and ``perplexity`` when answers are one token) share every
  ranking statistic, so they are grouped (``signal_groups``) and listed once, under the first by name, with ``same_ranking_as`` naming the others.
- ``best_signal``: chosen on one random half of the docs (split within each task, seeded) among the
  signals defined on at least 90% of the samples, by within-task AUROC; reported with its CI on the
  other half, so the maximum of many correlated AUROCs is not reported on the data that chose it.
- ``probe_auroc`` (nested probe at the last prompt position) and ``fusion_auroc``: mean within-task AUROC
  over repeated cross-validation, the CI including retraining, the permutation p-value and the gain in
  concatenated AUROC over a task-only predictor (``heldout``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from vrp_bench.scoring.records import WELL_COVERED, correctness, signal_values, well_covered
from vrp_bench.scoring.settings import ScoringSettings
from vrp_bench.scoring.signal_quality import oriented, score_auroc
from vrp_bench.scoring.stratified import StratifiedTally, stratum_indices
from vrp_bench.signals.catalogue import SIGNALS

WITHIN_TASK = "within_task"


def _oriented_values(records: Sequence[dict[str, Any]], name: str) -> np.ndarray:
    spec = SIGNALS.get(name)
    values = np.array([np.nan if v is None else v for v in signal_values(records, name)], dtype=float)
    return oriented(values, spec.orientation, spec.probability)


def ranking_groups(records: Sequence[dict[str, Any]], names: Sequence[str]) -> list[list[str]]:
    """``names`` grouped by identical ranking of the records: the same samples present and the same
    tie-averaged ranks of their oriented values (so every ranking statistic agrees), in ``names`` order."""
    groups: dict[bytes, list[str]] = {}
    for name in names:
        values = _oriented_values(records, name)
        present = ~np.isnan(values)
        ranks = np.full(len(values), -1.0)
        ranks[present] = rankdata(values[present])
        groups.setdefault(ranks.tobytes(), []).append(name)
    return list(groups.values())


def split_halves(tasks: Sequence[str], seed: int) -> np.ndarray:
    """True for the selection half: a seeded random half (rounded down) of each task's samples."""
    selection = np.zeros(len(tasks), dtype=bool)
    rng = np.random.default_rng(seed)
    for idx in stratum_indices(np.asarray(tasks), len(tasks)):
        selection[rng.permutation(idx)[: len(idx) // 2]] = True
    return selection


def _within_task_auroc(values: np.ndarray, correct: np.ndarray, tasks: np.ndarray) -> float:
    present = ~np.isnan(values)
    if present.sum() < 2:
        return float("nan")
    return float(StratifiedTally.from_samples(values[present], correct[present].astype(float), tasks[present]).auroc()[0])


def best_signal(
    records: Sequence[dict[str, Any]], tasks: Sequence[str], candidates: Sequence[str], settings: ScoringSettings,
) -> dict[str, Any] | None:
    """The split-half best signal (module docstring); None when no candidate has a defined AUROC."""
    labels, correct = np.asarray(tasks), correctness(records)
    selection = split_halves(tasks, settings.seed)
    chosen = {name: _within_task_auroc(_oriented_values(records, name)[selection], correct[selection], labels[selection])
              for name in candidates}
    defined = {name: value for name, value in chosen.items() if not np.isnan(value)}
    if not defined:
        return None
    winner = max(defined, key=lambda name: (defined[name], -list(candidates).index(name)))
    values = _oriented_values(records, winner)
    report = ~selection & ~np.isnan(values)
    entry = score_auroc(values[report], correct[report], strata=labels[report], options=settings.options())
    return {"name": winner, "value": entry["value"], "ci": entry["ci"], "n": entry["n"], "reason": entry["reason"],
            "selection": {"rule": f"highest within-task AUROC on a seeded half of each task's docs, among signals "
                                  f"defined on >= {WELL_COVERED:.0%} of the samples; reported on the other half",
                          "n": int(selection.sum()), "auroc": defined[winner], "candidates": len(defined)}}


def _heldout_summary(heldout: Mapping[str, Any] | None) -> dict[str, Any]:
    heldout = heldout or {}
    auroc, test = heldout.get("auroc") or {}, heldout.get("permutation_test") or {}
    gain = heldout.get("gain_over_task_only") or {}
    return {"value": auroc.get("value"), "ci": auroc.get("ci"), "p_value": test.get("p_value"),
            "gain_over_task_only": {"value": gain.get("value"), "ci": gain.get("ci")}}


def summarize(
    sections: Mapping[str, Any], records: Sequence[dict[str, Any]], tasks: Sequence[str], settings: ScoringSettings,
) -> dict[str, Any]:
    """The summary of the module docstring."""
    within = sections["signals"][WITHIN_TASK]
    names = list(within["signals"])
    groups = ranking_groups(records, names)
    aurocs = {group[0]: {"value": within["signals"][group[0]]["statistics"]["auroc"]["value"],
                         "ci": within["signals"][group[0]]["statistics"]["auroc"]["ci"],
                         "same_ranking_as": group[1:]}
              for group in groups}
    best = best_signal(records, tasks, well_covered(records, list(aurocs)), settings)
    if best is not None:
        best["same_ranking_as"] = aurocs[best["name"]]["same_ranking_as"]
    probe = (sections["probes"].get("hidden_last_prompt") or {}).get("nested")
    return {
        "n": within["n"],
        "accuracy": within["accuracy"],
        "statistic": "within-task AUROC (pairs of samples from the same task)",
        "signal_auroc": aurocs,
        "signal_groups": [group for group in groups if len(group) > 1],
        "best_signal": best,
        "probe_auroc": _heldout_summary(probe),
        "fusion_auroc": _heldout_summary((sections["fusion"] or {}).get("heldout")),
    }
