"""The run report (lmms-eval's results JSON keys plus VRP-Bench's sections) and per-sample logs."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import platform
import subprocess
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import vrp_bench
from vrp_bench.api.task import MetricSpec
from vrp_bench.api.yaml_dialect import FunctionRef
from vrp_bench.api.traces import ATTENTION_MAPS, HIDDEN_POSITIONS, LAYER_NUMBERING
from vrp_bench.evaluator import RunResult, TaskResult, TaskScores, group_scores
from vrp_bench.report.run_files import RunFiles
from vrp_bench.report.comparability import doc_set_hash
from vrp_bench.report.schema import SCHEMA_ID
from vrp_bench.report.writer import jsonl_lines, jsonl_text
from vrp_bench.scoring.probes import ProbeFits, encode_probes
from vrp_bench.scoring.records import sample_key
from vrp_bench.scoring.settings import ScoringSettings
from vrp_bench.signals.inputs import SignalSettings

log = logging.getLogger("vrp_bench")

PACKAGES = ("torch", "transformers", "datasets", "numpy", "scipy", "scikit-learn", "pillow")
FILTER = "none"  # lmms-eval's "metric,filter" key suffix; VRP-Bench applies no answer filters yet


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None when absent)."""
    versions: dict[str, str | None] = {"vrp-bench": vrp_bench.__version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def source_git_hash() -> str | None:
    """The git commit of the vrp-bench source tree when it runs from a checkout, else None."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(vrp_bench.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout.strip() or None


def _plain(value: Any) -> Any:
    """A task config value as JSON: ``!function`` references keep their YAML spelling."""
    if isinstance(value, FunctionRef):
        return str(value)
    if isinstance(value, MetricSpec):
        return _plain(value.as_entry())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(vars(value))
    if callable(value):
        return getattr(value, "__name__", str(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def result_keys(metric: str, filter_name: str = FILTER) -> tuple[str, str]:
    """The ``results`` keys of a metric's value and of its standard error."""
    return f"{metric},{filter_name}", f"{metric}_stderr,{filter_name}"


def results_entry(task: str, scores: TaskScores, filter_name: str = FILTER) -> dict[str, Any]:
    """A task's ``results`` entry as lmms-eval writes one: alias, each metric and its standard error per filter
    pipeline (``filter_name``, the primary one, then the scores' ``other_filters`` if any; the sample
    counts are in ``n-samples``: ``samples_entry``)."""
    entry: dict[str, Any] = {"alias": task}
    filters = {filter_name: (scores.metrics, scores.stderrs), **getattr(scores, "other_filters", {})}
    for name, (metrics, stderrs) in filters.items():
        for metric, value in metrics.items():
            value_key, stderr_key = result_keys(metric, name)
            entry[value_key], entry[stderr_key] = value, stderrs[metric]
    return entry


def samples_entry(original: int, effective: int, scores: TaskScores) -> dict[str, int]:
    """A task's ``n-samples`` entry: lmms-eval's ``original`` (docs of the split) and ``effective`` (docs
    evaluated), and VRP-Bench's ``scored`` and ``errors`` (failed docs: counted, not scored)."""
    return {"original": original, "effective": effective, "scored": scores.n_scored, "errors": scores.n_errors}


def groups_section(groups: dict[str, list[str]], results: Mapping[str, TaskScores]) -> dict[str, dict[str, Any]]:
    """The ``groups`` section (``evaluator.group_scores``: each metric shared by a group's tasks, weighted by
    scored samples) as lmms-eval writes it: per group its alias and ``"<metric>,none"`` values (no standard
    error; its counts are its tasks' ``n-samples``, see ``group_counts``)."""
    return {group: {"alias": group, **{result_keys(metric)[0]: value for metric, value in entry.items()}}
            for group, entry in group_scores(groups, results).items()}


def task_counts(report: Mapping[str, Any], task: str) -> tuple[int, int]:
    """A task's (scored, failed) sample counts (its ``n-samples`` entry)."""
    counts = report["n-samples"][task]
    return counts["scored"], counts["errors"]


def group_counts(report: Mapping[str, Any], group: str) -> tuple[int, int]:
    """A group's (scored, failed) sample counts: the sums over its tasks in ``results``."""
    members = [task for task in report["group_subtasks"].get(group, []) if task in report["results"]]
    counts = [task_counts(report, task) for task in members]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def group_metrics(report: Mapping[str, Any], group: str) -> dict[str, Any]:
    """A group's metric values by metric name."""
    entry = report["groups"][group]
    return {key.partition(",")[0]: value for key, value in entry.items()
            if "," in key and not key.partition(",")[0].endswith("_stderr")}


def higher_is_better(run: RunResult) -> dict[str, dict[str, bool | None]]:
    """Per task, and per group of ``groups`` (as lmms-eval writes it: its tasks' value, None where they disagree),
    whether a higher value of each metric is better."""
    tasks = {name: {m.metric: m.higher_is_better for m in r.task.config.metric_list} for name, r in run.results.items()}
    groups: dict[str, dict[str, bool | None]] = {}
    for group in groups_section(run.groups, run.results):
        merged = groups[group] = {}
        for task in (t for t in run.groups[group] if t in tasks):
            for metric, value in tasks[task].items():
                merged[metric] = value if merged.get(metric, value) == value else None
    return {**tasks, **groups}


def build_report(
    run: RunResult, command_line: str, started: float, sections: dict[str, Any], scoring: ScoringSettings,
    files: dict[str, str], ablation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report of a run: lmms-eval's results keys plus the scored sections (``scoring.sections``), the
    content hashes of the ``files`` written beside it (name -> "sha256:<hex>") and, after ``--ablate``, the
    ablation section (``interventions.ablation_section``)."""
    config = run.config
    return {
        "schema": SCHEMA_ID,
        "results": {name: results_entry(name, result, filter_name=result.task.primary_filter)
                    for name, result in run.results.items()},
        "groups": groups_section(run.groups, run.results),
        "group_subtasks": run.groups,
        "skipped": run.skipped,
        "errors": {
            name: [{"doc_id": r.doc_id, "reason": r.error} for r in result.records if r.error is not None]
            for name, result in run.results.items()
        },
        "configs": {name: _plain(r.task.config.__dict__) for name, r in run.results.items()},
        "doc_sets": {name: doc_set_hash((r.doc_id, r.doc_hash) for r in result.records)
                     for name, result in run.results.items()},
        "versions": {name: r.task.config.version for name, r in run.results.items()},
        "n-shot": {name: getattr(r.task.config, "num_fewshot", None) or 0 for name, r in run.results.items()},
        "n-samples": {name: samples_entry(r.n_docs, len(r.records), r) for name, r in run.results.items()},
        "higher_is_better": higher_is_better(run),
        "config": {
            "model": config.model,
            "model_args": config.model_args,
            "tasks": config.tasks,
            "include_path": [str(p) for p in config.include_paths],
            "batch_size": config.batch_size,
            "device": config.device,
            "limit": config.limit,
            "seed": config.seed,
            "gen_kwargs": config.gen_kwargs,
            "scoring": scoring.to_json(),
            "signals": dataclasses.asdict(SignalSettings()),
            "command_line": command_line,
        },
        "model": {"name": config.model, **run.model.describe()},
        "layer_numbering": LAYER_NUMBERING,
        "environment": {"versions": package_versions(), "platform": platform.platform()},
        **sections,
        "ablation": ablation,
        "files": files,
        "git_hash": source_git_hash(),
        "date": started,
        "date_iso": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "total_evaluation_time_seconds": round(time.time() - started, 3),
    }


def sample_logs(run: RunResult) -> dict[str, list[dict[str, Any]]]:
    """Per task, the per-sample log records, exactly as a JSON reader will see them again."""
    return {name: [json.loads(line) for line in jsonl_lines(jsonl_text([r.to_json() for r in result.records]))]
            for name, result in run.results.items()}


def trace_arrays(run: RunResult) -> dict[str, dict[str, np.ndarray]]:
    """What scoring reads of the traces (``scoring.sections.score_sections``): per captured position, ``sample_key``
    -> [n_layers, hidden] float16 hidden states; per attention map (``api.traces.ATTENTION_MAPS``), ``sample_key`` ->
    [layers, rows, cols] float32."""
    arrays: dict[str, dict[str, np.ndarray]] = {name: {} for name in (*HIDDEN_POSITIONS, *ATTENTION_MAPS)}
    for name, result in run.results.items():
        for record in result.records:
            for trace, array in (*record.hidden_states.items(), *record.attention_maps.items()):
                arrays[trace][sample_key(name, record.doc_id)] = array
    return arrays


def traces_npz(result: TaskResult) -> bytes | None:
    """The ``--save_traces`` file of one task: per position, ``<position>`` [n, layers, hidden] float16
    and ``<position>_doc_ids`` [n]; per attention map (``api.traces.ATTENTION_MAPS``), ``<map>`` [n, layers, rows,
    cols] float32 and ``<map>_doc_ids`` [n], of the samples whose map has the shape of the task's first one (the
    others, a grid that differs, are named in ``<map>_left_out_doc_ids`` and a warning); None when nothing was
    captured."""
    arrays: dict[str, np.ndarray] = {}
    for position in HIDDEN_POSITIONS:
        kept = [r for r in result.records if position in r.hidden_states]
        if kept:
            arrays[position] = np.stack([r.hidden_states[position] for r in kept]).astype(np.float16)
            arrays[f"{position}_doc_ids"] = np.array([r.doc_id for r in kept])
    for name in ATTENTION_MAPS:
        captured = [r for r in result.records if name in r.attention_maps]
        if not captured:
            continue
        shape = captured[0].attention_maps[name].shape
        kept = [r for r in captured if r.attention_maps[name].shape == shape]
        arrays[name] = np.stack([r.attention_maps[name] for r in kept]).astype(np.float32)
        arrays[f"{name}_doc_ids"] = np.array([r.doc_id for r in kept])
        if len(kept) < len(captured):
            left_out = [r.doc_id for r in captured if r.attention_maps[name].shape != shape]
            arrays[f"{name}_left_out_doc_ids"] = np.array(left_out)
            log.warning("%s: %d %s map(s) not saved in the traces file: their grid differs from the first sample's "
                        "%s (first: doc %d)", result.task.name, len(left_out), name, shape[1:], left_out[0])
    if not arrays:
        return None
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def read_traces(files: dict[Path, bytes]) -> dict[str, dict[str, np.ndarray]]:
    """Hidden states and attention maps from the contents of ``traces_npz`` files (named by ``RunFiles.traces``),
    keyed like ``trace_arrays``."""
    arrays: dict[str, dict[str, np.ndarray]] = {name: {} for name in (*HIDDEN_POSITIONS, *ATTENTION_MAPS)}
    for path, content in files.items():
        task = RunFiles.traces_task(path)
        with np.load(io.BytesIO(content)) as data:
            for name in arrays:
                if name in data:
                    for doc_id, array in zip(data[f"{name}_doc_ids"], data[name]):
                        arrays[name][sample_key(task, int(doc_id))] = array
    return arrays


def read_attention_maps(content: bytes) -> dict[str, dict[int, np.ndarray]]:
    """The attention maps of one ``traces_npz`` file's contents: per map of ``api.traces.ATTENTION_MAPS`` that it
    holds, doc id -> [layers, rows, cols] float32 (empty for a file written before maps were saved)."""
    with np.load(io.BytesIO(content)) as data:
        return {name: dict(zip((int(doc_id) for doc_id in data[f"{name}_doc_ids"]), data[name]))
                for name in ATTENTION_MAPS if name in data}


def probe_files(fits: ProbeFits, stem: Path) -> dict[Path, bytes]:
    """The saved probes (``scoring.probes.encode_probes``: .npz arrays + .json provenance) by path; ``stem``:
    ``RunFiles.probes`` of their position."""
    return {stem.parent / name: data for name, data in encode_probes(fits, stem.name).items()}
