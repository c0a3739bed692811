"""Reading a run back from disk: its report, per-sample JSONL files and traces, for re-scoring.

A run's files share a UTC-timestamp stem: ``<stem>_results.json``, ``<stem>_samples_<task>.jsonl``,
with ``--save_traces`` ``<stem>_traces_<task>.npz``, and after an ablation with ``--log_samples``
``<stem>_ablation_<task>.jsonl`` (one record per doc and condition).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vrp_bench.api.errors import UsageError
from vrp_bench.interventions import ablation_context, ablation_section
from vrp_bench.report.results import read_traces
from vrp_bench.report.schema import SCHEMA_ID, schema_problems
from vrp_bench.scoring.sections import ScoringSettings, score_sections

RESULTS_SUFFIX = "_results.json"
SCORED_SECTIONS = ("signals", "fusion", "probes", "layers", "verdicts", "summary")


def read_report(path: Path) -> dict[str, Any]:
    """A report file that parses and validates against the schema; otherwise a one-line UsageError."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None
    problems = schema_problems(report)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(f"{path} breaks {SCHEMA_ID} at {problems[0]}{more}")
    return report


@dataclass
class SavedRun:
    """A run on disk."""

    results_path: Path
    report: dict[str, Any]
    samples: dict[str, list[dict[str, Any]]]
    states: dict[str, dict[str, np.ndarray]]
    ablation: dict[str, list[dict[str, Any]]]
    """Per task, the ablation's per-condition records (empty when the run has none on disk)."""


def find_results(path: Path) -> Path:
    """The results file named by ``path``: the file itself, or the only one in a folder."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise UsageError(f"{path} is neither a results file nor a folder")
    candidates = sorted(path.glob(f"*{RESULTS_SUFFIX}"))
    if len(candidates) != 1:
        found = ", ".join(c.name for c in candidates) or "none"
        raise UsageError(f"{path} must hold exactly one *{RESULTS_SUFFIX} (found {found}); name the file")
    return candidates[0]


def load_run(path: Path) -> SavedRun:
    """The report, samples and traces of the run at ``path`` (a results file or its folder)."""
    results_path = find_results(path)
    report = read_report(results_path)
    stem = results_path.name.removesuffix(RESULTS_SUFFIX)
    samples = {}
    for task in report["results"]:
        sample_path = results_path.with_name(f"{stem}_samples_{task}.jsonl")
        if not sample_path.is_file():
            raise UsageError(f"{sample_path.name} is missing beside {results_path.name}: re-scoring needs the run's "
                             "per-sample files (run with --log_samples)")
        samples[task] = _read_jsonl(sample_path)
    ablation = {}
    if report.get("ablation") is not None:
        paths = {task: results_path.with_name(f"{stem}_ablation_{task}.jsonl") for task in report["results"]}
        missing = [path.name for path in paths.values() if not path.is_file()]
        if missing and len(missing) < len(paths):
            raise UsageError(f"{missing[0]} is missing beside {results_path.name}: re-scoring the ablation needs "
                             "every task's per-condition file (or none, to keep the saved section)")
        ablation = {task: _read_jsonl(path) for task, path in paths.items() if not missing}
    states = read_traces(sorted(results_path.parent.glob(f"{stem}_traces_*.npz")))
    return SavedRun(results_path, report, samples, states, ablation)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None


def rescore(run: SavedRun, settings: ScoringSettings | None = None) -> dict[str, Any]:
    """The run's report with every scored section recomputed from its saved files (the ablation section
    too when its per-condition files are there; otherwise it is kept as saved)."""
    settings = settings or ScoringSettings(**run.report["config"]["scoring"])
    sections, _ = score_sections(run.samples, run.states, settings)
    report = dict(run.report)
    report.update(sections)
    if run.ablation and report.get("ablation") is not None:
        report["ablation"] = ablation_section(run.samples, run.ablation, ablation_context(report["ablation"]), settings)
    report["config"] = {**report["config"], "scoring": settings.to_json()}
    return report
