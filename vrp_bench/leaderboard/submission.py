"""Submitting a run to the leaderboard: every check a reviewer would make, then the files placed, or nothing.

A submission is a run folder's files (``report.run_files``): the report, its per-sample JSONL, its traces
(``--save_traces``: the probes are refitted from them), probe files and, after an ablation, the per-condition
JSONL. ``check_submission`` refuses, with one line naming the reason:
- a report that is not JSON, holds NaN / Infinity, or breaks the schema (``saved_run.read_report``);
- a model name that is path-like (``/``, ``\\``, a leading ``.``), holds other than letters, digits and
  ``._+-``, or is longer than ``MAX_NAME`` characters (it becomes a folder name);
- missing provenance: a task version or doc-set hash, the model fingerprint, the vrp-bench version;
- a missing or edited file: a per-sample file that is not there, a record that contradicts its metrics or the
  recorded doc set, a file whose sha256 is not the one the report lists (``saved_run``);
- an edited number: every scored section is recomputed from the per-sample files (``saved_run.rescore``) and
  must equal the report's to the last digit;
- a duplicate (the same report, or the same model fingerprint, seed and comparison basis as a submission on
  the board) or a run not comparable with the board's (``report.comparability``).
``submit`` then writes the files into ``<root>/submissions/<model>/`` atomically.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vrp_bench.api.errors import UsageError
from vrp_bench.api.files import content_hash, write_files_atomically
from vrp_bench.leaderboard.submissions import SUBMISSIONS
from vrp_bench.report.comparability import comparison_basis, differences
from vrp_bench.report.run_files import RESULTS_SUFFIX, RunFiles
from vrp_bench.report.saved_run import SavedRun, load_run, read_report, rescore
from vrp_bench.report.writer import json_text

MAX_NAME = 64
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
RECOMPUTED_SECTIONS = ("results", "groups", "n-samples", "signals", "diagnostics", "signal_failures", "fusion", "probes",
                       "layers", "verdicts", "summary", "ablation")
"""The report sections ``rescore`` recomputes from the per-sample files (a submission must match them exactly)."""


def check_model_name(name: str) -> None:
    """Refuse a model name that cannot safely be a folder name (module docstring)."""
    if len(name) > MAX_NAME:
        raise UsageError(f"model name {name[:20]!r}... is {len(name)} characters long; at most {MAX_NAME}")
    if not NAME.fullmatch(name) or ".." in name:
        raise UsageError(f"model name {name!r} is not a plain name (letters, digits and ._+- only, no path); "
                         "register the model under one")


def _provenance_problem(report: dict[str, Any]) -> str | None:
    """The first piece of provenance the report lacks, or None."""
    for task in report["results"]:
        if report["versions"].get(task) is None:
            return f"task {task} has no version"
        if (report.get("doc_sets") or {}).get(task) is None:
            return f"task {task} has no doc-set hash (made by an older vrp-bench? run it again)"
    if not report["model"].get("fingerprint"):
        return "the model has no fingerprint (a leaderboard model is a checkpoint whose weights are hashed)"
    if not report["environment"]["versions"].get("vrp-bench"):
        return "the vrp-bench version is not recorded"
    return None


def _first_difference(saved: Any, recomputed: Any, where: str) -> str | None:
    """The path of the first value that differs between two JSON-ready trees (with both values), or None."""
    if isinstance(saved, dict) and isinstance(recomputed, dict):
        for key in sorted(set(saved) | set(recomputed), key=str):
            found = _first_difference(saved.get(key), recomputed.get(key), f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(saved, list) and isinstance(recomputed, list) and len(saved) == len(recomputed):
        for index, (a, b) in enumerate(zip(saved, recomputed)):
            found = _first_difference(a, b, f"{where}[{index}]")
            if found:
                return found
        return None
    if saved != recomputed:
        return f"{where} is {json.dumps(saved)[:40]} in the report but {json.dumps(recomputed)[:40]} recomputed"
    return None


def board_runs(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every submitted report on the board at ``root``: (results file, report), reports only (the build reads
    whole runs: ``submissions.read_submissions``)."""
    for path in sorted((root / SUBMISSIONS).glob(f"*/*{RESULTS_SUFFIX}")):
        yield path, read_report(path)


def check_submission(path: Path, root: Path) -> SavedRun:
    """Every check of the module docstring on the run at ``path`` against the board at ``root``; the run."""
    report = read_report(RunFiles.find_results(path))
    check_model_name(report["config"]["model"])
    problem = _provenance_problem(report)
    if problem:
        raise UsageError(f"refused: {problem}")
    run = load_run(path)
    absent = [name for name in run.report["files"] if not (run.results_path.parent / name).is_file()]
    if absent:
        raise UsageError(f"refused: {absent[0]} (listed in the report) is missing beside it")
    if run.report["probes"] and not run.traces:
        raise UsageError("refused: the probes cannot be checked without the hidden states (run with --save_traces)")
    recomputed = json.loads(json_text(rescore(run)[0]))  # as the run wrote it: NaN as null, numpy as Python
    for section in RECOMPUTED_SECTIONS:
        difference = _first_difference(run.report.get(section), recomputed.get(section), section)
        if difference:
            raise UsageError(f"refused: {difference} from the per-sample files (edited after the run?)")
    digest = content_hash(run.results_path.read_bytes())
    for other_path, other in board_runs(root):
        if content_hash(other_path.read_bytes()) == digest:
            raise UsageError(f"refused: a duplicate of {other_path.relative_to(root)}")
        same_run = (other["model"].get("fingerprint") == report["model"]["fingerprint"]
                    and other["config"]["seed"] == report["config"]["seed"]
                    and comparison_basis(other) == comparison_basis(report))
        if same_run:
            raise UsageError(f"refused: {other_path.relative_to(root)} already holds this checkpoint with this seed "
                             "and settings (submit another seed, or replace it by hand in a pull request)")
        reasons = differences(other, report)
        if reasons:
            more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
            raise UsageError(f"refused: not comparable with the board ({other_path.relative_to(root)}): "
                             f"{reasons[0]}{more}")
    return run


def submit(path: Path, root: Path) -> list[Path]:
    """Check the run at ``path`` (``check_submission``) and copy its files to ``<root>/submissions/<model>/``,
    all at once; returns the written paths (the report last)."""
    run = check_submission(path, root)
    folder = root / SUBMISSIONS / run.report["config"]["model"]
    names = [*run.report["files"], run.results_path.name]
    contents: dict[Path, str | bytes] = {folder / name: (run.results_path.parent / name).read_bytes() for name in names}
    write_files_atomically(contents)
    return list(contents)
