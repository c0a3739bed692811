"""Reading a run back from disk: its report, per-sample JSONL files and traces, for re-scoring, and checking
them: records that agree with their metrics, files whose content hashes are the ones the report recorded.

Where each file of a run lies is ``report.run_files.RunFiles``' business; the report's ``files`` holds the
"sha256:<hex>" of each file written beside it, by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vrp_bench.api.errors import UsageError
from vrp_bench.api.files import content_hash
from vrp_bench.api.metrics import aggregate
from vrp_bench.api.yaml_dialect import FUNCTION_TAG
from vrp_bench.evaluator import correctness_of
from vrp_bench.interventions import ablation_context, ablation_section
from vrp_bench.report.comparability import doc_sets_of, signal_settings
from vrp_bench.report.results import (
    FILTER,
    groups_section,
    read_traces,
    result_keys,
    results_entry,
    samples_entry,
)
from vrp_bench.report.run_files import RunFiles
from vrp_bench.report.schema import SCHEMA_ID, schema_problems
from vrp_bench.report.writer import jsonl_lines
from vrp_bench.scoring.sections import NOT_CAPTURED, NOT_SAVED, score_sections
from vrp_bench.scoring.settings import ScoringSettings

EDITED = " (records edited after the run?)"


def strict_json(text: str, where: Path, line: int = 1) -> Any:
    """``json.loads`` that refuses NaN and Infinity (a run writes a number that is not finite as null; one in a
    file was put there by hand): a one-line UsageError naming ``where`` otherwise."""

    def refuse(constant: str) -> Any:
        raise UsageError(f"{where}:{line}: {constant} is not a number a run writes (null means not defined)")

    try:
        return json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}:{line + exc.lineno - 1}: not JSON: {exc.msg}") from None


OLDER_SCHEMAS = {
    "vrp-report/1": "its scores pool tasks together",
    "vrp-report/2": "its layers are numbered without the embedding output (hidden state i + 1 was layer i)",
}
"""Report formats this version refuses to read, and why their numbers do not compare with today's."""


def read_report(path: Path) -> dict[str, Any]:
    """A report file that parses (strictly: ``strict_json``) and validates against the schema; otherwise a
    one-line UsageError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text (is it a report?)") from None
    report = strict_json(text, path)
    if isinstance(report, dict) and report.get("schema") in OLDER_SCHEMAS:
        raise UsageError(f"{path} is a {report['schema']} report, from an earlier vrp-bench: "
                         f"{OLDER_SCHEMAS[report['schema']]}; run it again with this version ({SCHEMA_ID})")
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
    traces: dict[Path, bytes]
    """The ``--save_traces`` files as read (parsed by ``report.results.read_traces`` once their hashes are checked)."""
    ablation: dict[str, list[dict[str, Any]]]
    """Per task, the ablation's per-condition records (empty when the run has none on disk)."""
    hashes: dict[str, str]
    """The content hash of every file read besides the report, by file name."""
    filters: dict[str, str] = field(default_factory=dict)
    """Per task, the answer filter its records and metrics are of, when not ``results.FILTER`` (a converted
    lmms-eval run: ``report.lmms_eval_results``)."""
    saved_results: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per task, ``results`` keys the records cannot recompute, kept as saved (key -> why): a converted lmms-eval
    run's metrics whose per-sample values are not numbers and its other filters' values. Empty for a VRP-Bench
    run (every metric of its ``metric_list`` is recomputed or, with a custom aggregation, kept as the
    ``metric_list`` says)."""

    @property
    def files(self) -> RunFiles:
        """The run's file layout (where its samples, ablation records and traces lie)."""
        return RunFiles.of(self.results_path)


def load_run(path: Path) -> SavedRun:
    """The report, samples and traces of the run at ``path`` (a results file or its folder)."""
    results_path = RunFiles.find_results(path)
    files = RunFiles.of(results_path)
    report = read_report(results_path)
    contents: dict[Path, bytes] = {}
    samples = {}
    for task in report["results"]:
        sample_path = files.samples(task)
        if not sample_path.is_file():
            raise UsageError(f"{sample_path.name} is missing beside {results_path.name}: re-scoring needs the run's "
                             "per-sample files (run with --log_samples)")
        samples[task] = _read_jsonl(sample_path, contents)
    ablation = {}
    if report.get("ablation") is not None:
        paths = {task: files.ablation(task) for task in report["results"]}
        missing = [path.name for path in paths.values() if not path.is_file()]
        if missing and len(missing) < len(paths):
            raise UsageError(f"{missing[0]} is missing beside {results_path.name}: re-scoring the ablation needs "
                             "every task's per-condition file (or none, to keep the saved section)")
        ablation = {task: _read_jsonl(path, contents) for task, path in paths.items() if not missing}
    traces = {path: path.read_bytes() for path in files.saved_traces()}
    contents.update(traces)
    hashes = {path.name: content_hash(content) for path, content in contents.items()}
    return SavedRun(results_path, report, samples, traces, ablation, hashes)


def _read_jsonl(path: Path, contents: dict[Path, bytes]) -> list[dict[str, Any]]:
    """The records of a JSONL file; its bytes are added to ``contents``."""
    contents[path] = path.read_bytes()
    lines = jsonl_lines(contents[path].decode("utf-8"))
    return [strict_json(line, path, number) for number, line in enumerate(lines, 1)]


def metric_specs(run: SavedRun, task: str) -> list[dict[str, Any]]:
    """The task's ``metric_list`` as the report saved it in ``configs``: ``{metric, aggregation, higher_is_better}``
    entries, aggregation a registered name or "!function module.name"."""
    specs = run.report["configs"].get(task, {}).get("metric_list")
    if not (isinstance(specs, list) and specs and all(
            isinstance(s, dict) and isinstance(s.get("metric"), str) and isinstance(s.get("aggregation"), str)
            for s in specs)):
        raise UsageError(f"{run.results_path.name}: configs.{task}.metric_list is not a list of "
                         "{metric, aggregation} entries; re-scoring needs it")
    return specs


def check_records(run: SavedRun) -> None:
    """Refuse (one-line UsageError naming the file and doc) a per-sample record that contradicts its metrics: a
    scored one (error null) with none of the metrics of ``metric_list``, or a number metric that is not one, or
    whose ``correct`` is not ``evaluator.correctness_of`` its metrics; a failed one whose ``correct`` is not null;
    and records whose docs (ids, content hashes) are not the doc set the report recorded."""
    recorded = run.report.get("doc_sets") or {}
    for task, digest in doc_sets_of(run.samples).items():
        if task in recorded and recorded[task] != digest:
            raise UsageError(f"{run.files.samples(task).name}: its docs are not the doc set {run.results_path.name} "
                             f"recorded for {task}{EDITED}")
    for task, records in run.samples.items():
        specs = metric_specs(run, task)
        metrics = [spec["metric"] for spec in specs]
        score_key = run.report["configs"].get(task, {}).get("score_key", "score")
        name = run.files.samples(task).name
        for record in records:
            where, correct = f"{name}: doc {record.get('doc_id')}", record.get("correct")
            if record.get("error") is not None:
                if correct is not None:
                    raise UsageError(f"{where}: correct={json.dumps(correct)} on a failed record (error set) must "
                                     f"be null{EDITED}")
                continue
            if not any(metric in record for metric in metrics):
                raise UsageError(f"{where}: scored record has none of the metrics {', '.join(metrics)}{EDITED}")
            not_numbers = [s["metric"] for s in specs if s["aggregation"] == "mean" and s["metric"] in record
                           and not isinstance(record[s["metric"]], (int, float))]
            if not_numbers:
                raise UsageError(f"{where}: scored record has no number for {not_numbers[0]}{EDITED}")
            expected = correctness_of(record, metrics, score_key)
            if correct is not expected:
                primary = next(metric for metric in metrics if metric in record)
                raise UsageError(f"{where}: correct={json.dumps(correct)} disagrees with "
                                 f"{primary}={json.dumps(record[primary])}{EDITED}")


def primary_filter(run: SavedRun, task: str) -> str:
    """The filter pipeline a task's records and ``results`` keys are of: a converted lmms-eval run's, else the
    first of the task's ``filter_list`` (``results.FILTER`` without one)."""
    if task in run.filters:
        return run.filters[task]
    filter_list = run.report["configs"].get(task, {}).get("filter_list")
    return filter_list[0]["name"] if isinstance(filter_list, list) and filter_list else FILTER


def check_hashes(results_path: Path, listed: dict[str, str], found: dict[str, str]) -> None:
    """Refuse (one-line UsageError) a file of ``found`` (name -> content hash) that the report at ``results_path``
    does not list (``listed``: its ``files``) or lists with another hash."""
    for name, digest in found.items():
        if name not in listed:
            raise UsageError(f"{name} is not among the files {results_path.name} lists (not from this run?)")
        if digest != listed[name]:
            raise UsageError(f"{name}: content differs from its sha256 in {results_path.name} (edited after the run?)")


def check_listed_files(results_path: Path, report: dict[str, Any]) -> int:
    """Check the hash of each file the report lists that is beside it (``check_hashes``); how many were there."""
    present = [results_path.with_name(name) for name in report["files"]]
    found = {path.name: content_hash(path.read_bytes()) for path in present if path.is_file()}
    check_hashes(results_path, report["files"], found)
    return len(found)


@dataclass
class RecomputedScores:
    """A task's metrics recomputed from its per-sample records (an ``evaluator.TaskScores``)."""

    metrics: dict[str, float | None]
    stderrs: dict[str, float | None]
    n_scored: int
    n_errors: int
    other_filters: dict[str, tuple[dict[str, float | None], dict[str, float | None]]] = field(default_factory=dict)


def recompute_results(run: SavedRun) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The report's ``results`` and ``groups`` recomputed from the per-sample records as the run computed them,
    and the metrics kept as saved instead
    ("<task> <metric> (!function ...)"): a custom aggregation is task code, not run again."""
    scores: dict[str, RecomputedScores] = {}
    kept: list[str] = []
    for task, records in run.samples.items():
        scored = [r for r in records if r.get("error") is None]
        scores[task] = task_scores = RecomputedScores({}, {}, len(scored), len(records) - len(scored))
        per_filter = {primary_filter(run, task): scored}
        for name in scored[0].get("other_filters", {}) if scored else ():
            per_filter[name] = [r["other_filters"][name]["metrics"] for r in scored]
        for filter_name, values_of in per_filter.items():
            metrics: dict[str, float | None] = {}
            stderrs: dict[str, float | None] = {}
            for spec in metric_specs(run, task):
                metric, aggregation = spec["metric"], spec["aggregation"]
                if aggregation.startswith(FUNCTION_TAG):
                    shown = metric if filter_name == primary_filter(run, task) else f"{metric},{filter_name}"
                    kept.append(f"{task} {shown} ({aggregation})")
                    values = tuple(run.report["results"][task].get(key) for key in result_keys(metric, filter_name))
                else:
                    values = aggregate([r[metric] for r in values_of if metric in r], aggregation)
                metrics[metric], stderrs[metric] = values
            if filter_name == primary_filter(run, task):
                task_scores.metrics, task_scores.stderrs = metrics, stderrs
            else:
                task_scores.other_filters[filter_name] = (metrics, stderrs)
    results = {task: results_entry(task, task_scores, primary_filter(run, task))
               for task, task_scores in scores.items()}
    for task, keys in run.saved_results.items():
        for key, why in keys.items() if task in results else ():
            results[task][key] = run.report["results"][task].get(key)
            if not key.partition(",")[0].endswith("_stderr"):
                kept.append(f"{task} {key} ({why})")
    return results, groups_section(run.report["group_subtasks"], scores), kept


def recount_samples(run: SavedRun) -> dict[str, Any]:
    """The report's ``n-samples`` with each task's ``effective``, ``scored`` and ``errors`` counted from its
    per-sample records (``original``, the docs of the split, as saved)."""
    counts = {}
    for task, records in run.samples.items():
        scored = sum(r.get("error") is None for r in records)
        saved = run.report["n-samples"].get(task)
        if saved is None:
            raise UsageError(f"{run.results_path.name}: n-samples has no entry for {task}")
        counts[task] = samples_entry(saved["original"], len(records),
                                     RecomputedScores({}, {}, scored, len(records) - scored))
    return counts


def rescore(run: SavedRun, settings: ScoringSettings | None = None) -> tuple[dict[str, Any], list[str]]:
    """The run's report recomputed from its saved files, and the metrics kept as saved (``recompute_results``).

    Every record is checked first (``check_records``), then every file's hash against the report's ``files``.
    Recomputed: ``results``, ``groups``, the sample counts (``recount_samples``), every scored section, and the
    ablation section when its per-condition files are there (otherwise it is kept as saved); ``files`` holds the
    hashes of the files read. The signals are read as saved, and so are their settings (``config.signals``), with
    any setting the report predates filled in as the value it was computed with (``comparability.signal_settings``).
    """
    check_records(run)
    check_hashes(run.results_path, run.report["files"], run.hashes)
    settings = settings or ScoringSettings(**run.report["config"]["scoring"])
    metadata = {task: config.get("metadata") or {} for task, config in run.report["configs"].items()}
    saved_probes = run.report.get("probes") or {}
    not_saved = {position: NOT_SAVED for position, probe in saved_probes.items()  # the run had hidden states there
                 if isinstance(probe, dict) and probe.get("reason") != NOT_CAPTURED}
    sections, _ = score_sections(run.samples, read_traces(run.traces), settings, metadata, not_saved)
    results, groups, kept = recompute_results(run)
    report = dict(run.report)
    report.update(sections, results=results, groups=groups, files=run.hashes)
    report["n-samples"] = recount_samples(run)
    if run.ablation and report.get("ablation") is not None:
        report["ablation"] = ablation_section(run.samples, run.ablation, ablation_context(report["ablation"]), settings)
    # signals are not recomputed: a report that predates a signal setting records the value it was computed with
    report["config"] = {**report["config"], "scoring": settings.to_json(), "signals": signal_settings(run.report)}
    return report, kept
