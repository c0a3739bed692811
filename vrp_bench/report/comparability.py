"""When two reports may be compared: the same docs of the same tasks, answered and scored the same way.

A report's *basis* (``comparison_basis``) is what must match for two reports' numbers to be put side by side
(the leaderboard's ranking, ``vrp-bench regress``): per task its version and doc-set hash (``doc_set_hash``:
which docs, with which content, were evaluated), the generation overrides, the signal settings and the scoring
settings that change what a figure means (not the seed, nor the number of bootstrap resamples, which only
change its Monte Carlo noise). A signal or scoring setting a report predates counts as the value it was computed
with (``SIGNAL_SETTINGS_BEFORE``, ``SCORING_SETTINGS_BEFORE``). ``differences`` names every mismatch in one line each.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

SCORING_NOISE_ONLY = ("seed", "n_resamples")
"""Scoring settings that change only the Monte Carlo noise of a figure, not what it measures."""
SIGNAL_SETTINGS_BEFORE = {"connectivity": 8}
"""Signal settings added to ``SignalSettings`` after reports were first written, with the value every report
written before them was computed with (a report without ``connectivity`` used 8-connected components)."""
SCORING_SETTINGS_BEFORE = {"attention_classifier": "logistic"}
"""Scoring settings added to ``ScoringSettings`` after reports were first written, read as their default in a report
that predates them (its figures are the same: it has no ``attention_classifiers`` section)."""


def doc_set_hash(docs: Iterable[tuple[int, str | None]]) -> str:
    """"sha256:<hex>" of a task's evaluated docs: the sorted (doc_id, ``api.instance.doc_hash``) pairs."""
    pairs = sorted((int(doc_id), digest) for doc_id, digest in docs)
    return f"sha256:{hashlib.sha256(json.dumps(pairs).encode()).hexdigest()}"


def doc_sets_of(samples: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, str]:
    """Per task, the doc-set hash of its per-sample records (as the JSONL files hold them)."""
    return {task: doc_set_hash((r["doc_id"], r.get("doc_hash")) for r in records) for task, records in samples.items()}


def comparison_basis(report: Mapping[str, Any]) -> dict[str, Any]:
    """What must match between two reports for their figures to be compared (module docstring)."""
    config = report["config"]
    doc_sets = report.get("doc_sets") or {}
    return {
        "tasks": {task: {"version": report["versions"].get(task), "doc_set": doc_sets.get(task)}
                  for task in sorted(report["results"])},
        "gen_kwargs": config.get("gen_kwargs") or {},
        "signals": signal_settings(report),
        "scoring": {k: v for k, v in sorted({**SCORING_SETTINGS_BEFORE, **(config.get("scoring") or {})}.items())
                    if k not in SCORING_NOISE_ONLY},
    }


def signal_settings(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The report's signal settings (``config.signals``; None for a run without signals), a setting it predates
    read as the value it was computed with (``SIGNAL_SETTINGS_BEFORE``)."""
    signals = report["config"].get("signals")
    if signals is None:
        return None
    return {**signals, **{k: v for k, v in SIGNAL_SETTINGS_BEFORE.items() if k not in signals}}


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Why reports ``a`` and ``b`` cannot be compared: one line per mismatch (empty when they can)."""
    basis_a, basis_b = comparison_basis(a), comparison_basis(b)
    reasons = []
    tasks_a, tasks_b = basis_a["tasks"], basis_b["tasks"]
    if set(tasks_a) != set(tasks_b):
        only_a, only_b = sorted(set(tasks_a) - set(tasks_b)), sorted(set(tasks_b) - set(tasks_a))
        reasons.append(f"different tasks (only in the first: {', '.join(only_a) or '-'}; "
                       f"only in the second: {', '.join(only_b) or '-'})")
    for task in sorted(set(tasks_a) & set(tasks_b)):
        for key, what in (("version", "task version"), ("doc_set", "doc set (docs evaluated or their content)")):
            if tasks_a[task][key] is None or tasks_b[task][key] is None:
                reasons.append(f"{task}: no {what} recorded")
            elif tasks_a[task][key] != tasks_b[task][key]:
                reasons.append(f"{task}: different {what}")
    for key, what in (("gen_kwargs", "generation overrides (--gen_kwargs)"), ("signals", "signal settings"),
                      ("scoring", "scoring settings")):
        if basis_a[key] != basis_b[key]:
            changed = sorted(k for k in set(basis_a[key] or {}) | set(basis_b[key] or {})
                             if (basis_a[key] or {}).get(k) != (basis_b[key] or {}).get(k))
            reasons.append(f"different {what}: {', '.join(changed) or 'recorded in one only'}")
    return reasons
