"""lmms-eval's result files read as a VRP-Bench run, so ``vrp-bench show`` and ``vrp-bench score`` compare existing
lmms-eval runs on accuracy (no model, no lmms-eval import).

lmms-eval (``--output_path OUT [--log_samples]``, its ``EvaluationTracker``) writes into
``OUT/<model_name_sanitized>/`` (``OUT`` itself when the model args name no model) files sharing a date stamp:

- ``<stamp>_results.json``: ``results`` (per task: ``alias`` and ``"<metric>,<filter>"`` values, with
  ``"<metric>_stderr,<filter>"``, ``"N/A"`` where not computed), ``groups`` (when the run has groups),
  ``group_subtasks``, ``configs`` (each task's config with its ``metric_list``), ``versions``, ``n-shot``,
  ``higher_is_better``, ``n-samples``, ``config`` (model, model_args, batch size, limit, seeds, ...),
  ``lmms_eval_version``, ``git_hash``, ``date``; and no ``schema``, which every VRP-Bench report has;
- ``<stamp>_samples_<task>.jsonl`` (``--log_samples``), one line per doc: ``doc_id``, ``target`` (a string),
  ``input`` (the prompt), ``filtered_resps`` (the answer after the task's filter; a one-element list unwrapped),
  ``resps`` (only when it differs), ``doc_hash``, ``token_counts`` and the values ``process_results`` returned per
  metric (numbers, or any JSON value that task code aggregates). The doc itself is not kept. A task with several
  filters has one line per doc and filter, filter after filter, in the order of its ``results`` keys.

The conversion is a report of schema ``vrp-report/3`` (``results.build_report``'s layout) whose ``results`` are
lmms-eval's numbers (``"N/A"`` -> null), and per-sample records in VRP-Bench's form: ``prediction`` (the filtered
answer when it is a string), ``correct`` (``evaluator.is_correct`` of the task's first metric, as VRP-Bench
decides it), the metric values, ``error`` null, ``doc`` empty and no ``signals`` (lmms-eval records none: scoring
reports accuracy and says there are no signals), except for a run of a VRP model through VRP's lmms-eval plugin,
whose per-sample signals file beside lmms-eval's output is merged in (``vrp_signals``). Per task, the records are those of the filter of its first
metric's first ``results`` key; a metric whose per-sample values are not all numbers, and every other filter's
values, are kept as lmms-eval saved them (``SavedRun.saved_results``); a task whose first metric is not a number
per sample cannot be told right from wrong and is skipped (``skipped`` says why). ``config.lmms_eval`` keeps
lmms-eval's own ``config``; ``converted_from`` names the source.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import vrp_bench
from vrp_bench.api.errors import UsageError
from vrp_bench.api.files import content_hash
from vrp_bench.api.metrics import AGGREGATIONS
from vrp_bench.api.traces import LAYER_NUMBERING
from vrp_bench.api.yaml_dialect import FUNCTION_TAG
from vrp_bench.evaluator import correctness_of
from vrp_bench.report.comparability import doc_sets_of
from vrp_bench.report.results import samples_entry
from vrp_bench.report.run_files import RESULTS_SUFFIX, RunFiles
from vrp_bench.report.saved_run import RecomputedScores, SavedRun, load_run, read_report
from vrp_bench.report.schema import SCHEMA_ID
from vrp_bench.report.writer import jsonl_lines
from vrp_bench.scoring.sections import score_sections
from vrp_bench.scoring.settings import ScoringSettings
from vrp_bench.signals.inputs import SignalSettings

NO_SIGNALS = ("an lmms-eval run: answers and metrics only; lmms-eval records no reliability signals (they are null "
              "here)")
SHOWN_AS_SAVED = "metrics as lmms-eval computed them; `vrp-bench score` recomputes them from the --log_samples files"
AUXILIARY_SUFFIXES = ("_stderr", "_stderr_clt", "_stderr_clustered", "_expected_accuracy", "_consensus_accuracy",
                      "_internal_variance", "_consistency_rate")
"""lmms-eval's ``results`` keys that qualify a metric (standard errors, repeat statistics), not metrics."""
FUNCTION_REPR = re.compile(r"<function (\S+) at 0x[0-9a-fA-F]+>")
"""How lmms-eval's config dump writes a function (a task's custom aggregation)."""


def results_file(path: Path) -> Path:
    """The results file named by ``path``: the file itself, the only ``*_results.json`` of a folder, or of its
    subfolders (lmms-eval's ``--output_path``, which holds ``<model>/<stamp>_results.json``)."""
    if path.is_file():
        return RunFiles.not_samples(path)
    if not path.is_dir():
        raise UsageError(f"{path} is neither a results file nor a folder")
    found = sorted(path.glob(f"*{RESULTS_SUFFIX}")) or sorted(path.glob(f"*/*{RESULTS_SUFFIX}"))
    if len(found) != 1:
        names = ", ".join(str(f.relative_to(path)) for f in found) or "none"
        raise UsageError(f"{path} must hold exactly one *{RESULTS_SUFFIX} (found {names}); name the file")
    return found[0]


def _json(text: str, where: Path, line: int = 1) -> Any:
    """lmms-eval's JSON (which may hold NaN: read as null), or a one-line UsageError naming ``where``."""
    try:
        return json.loads(text, parse_constant=lambda constant: None)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}:{line + exc.lineno - 1}: not JSON: {exc.msg}") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text (is it a results file?)") from None


def _read_results(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """The results file of ``path`` and, when it is lmms-eval's, its content (None for a VRP-Bench report)."""
    results_path = results_file(path)
    content = _json(_read_text(results_path), results_path)
    if isinstance(content, dict) and "schema" in content:
        return results_path, None
    if not (isinstance(content, dict) and isinstance(content.get("results"), dict)
            and isinstance(content.get("configs"), dict)):
        raise UsageError(f"{results_path} is neither a VRP-Bench report (no \"schema\") nor an lmms-eval results "
                         "file (no \"results\" and \"configs\" objects)")
    return results_path, content


def read_shown_report(path: Path) -> tuple[dict[str, Any], list[str]]:
    """What ``vrp-bench show`` prints for ``path`` (a results file or its folder): a VRP-Bench report (validated:
    ``saved_run.read_report``), or an lmms-eval results file converted with lmms-eval's numbers as saved (no
    per-sample file needed); and the lines to print after its tables."""
    results_path, content = _read_results(path)
    if content is None:
        return read_report(results_path), []
    run = _convert(results_path, content, samples=None)
    return run.report, [f"{results_path.name}: {NO_SIGNALS}; {SHOWN_AS_SAVED}"]


def load_scored_run(path: Path) -> tuple[SavedRun, list[str]]:
    """What ``vrp-bench score`` re-scores for ``path`` (a results file or its folder): a VRP-Bench run
    (``saved_run.load_run``), or an lmms-eval run converted from its results and ``--log_samples`` files (module
    docstring); and the lines to print after its tables."""
    results_path, content = _read_results(path)
    if content is None:
        return load_run(results_path), []
    tasks = _tasks(results_path, content)
    files = RunFiles.of(results_path)
    samples: dict[str, list[dict[str, Any]]] = {}
    hashes: dict[str, str] = {}
    for task in tasks:
        sample_path = files.samples(task)
        if not sample_path.is_file():
            raise UsageError(f"{sample_path.name} is missing beside {results_path.name}: scoring an lmms-eval run "
                             "needs its per-sample files (run lmms-eval with --log_samples)")
        data = sample_path.read_bytes()
        hashes[sample_path.name] = content_hash(data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{sample_path} is not UTF-8 text") from None
        samples[task] = [_json(line, sample_path, number) for number, line in enumerate(jsonl_lines(text), 1)
                         if line.strip()]
    signals_path, signals = vrp_signals(results_path, content, samples)
    if signals_path is not None:
        hashes[signals_path.name] = content_hash(signals_path.read_bytes())
    run = _convert(results_path, content, samples, hashes, signals)
    if signals_path is None:
        notes = [f"{results_path.name}: {NO_SIGNALS}"]
    else:
        notes = [f"{results_path.name}: reliability signals from {signals_path} (written by VRP's lmms-eval plugin)"]
    notes += [f"skipped {task}: {reason}" for task, reason in run.report["skipped"].items()]
    return run, notes


def _tasks(results_path: Path, content: dict[str, Any]) -> list[str]:
    """The tasks of an lmms-eval results file: its ``results`` entries with a config (groups have none)."""
    tasks = [name for name in content["results"] if name in content["configs"]]
    if not tasks:
        raise UsageError(f"{results_path.name}: no task of \"results\" has an entry in \"configs\"")
    for task in tasks:
        if not isinstance(content["results"][task], dict) or not isinstance(content["configs"][task], dict):
            raise UsageError(f"{results_path.name}: results.{task} and configs.{task} must be objects")
        _metric_list(results_path, task, content["configs"][task])
    return tasks


def _number(value: Any) -> float | int | None:
    """A saved value as a report number: numbers as they are, anything else ("N/A", null) null."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and value == value  # bools count (lmms-eval's acc may be one)


def _aggregation(value: Any) -> str:
    """A ``metric_list`` aggregation as VRP-Bench names one: a registered name as it is (missing: "mean", as
    lmms-eval and VRP-Bench default), anything else task code (``FUNCTION_TAG`` + its name): kept as saved."""
    if value is None:
        return "mean"
    if isinstance(value, str) and value in AGGREGATIONS:
        return value
    match = FUNCTION_REPR.fullmatch(str(value).strip())
    return FUNCTION_TAG + (match.group(1) if match else str(value).removeprefix(FUNCTION_TAG))


def _metric_list(results_path: Path, task: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    specs = config.get("metric_list")
    if not (isinstance(specs, list) and specs and all(isinstance(s, dict) and isinstance(s.get("metric"), str)
                                                      for s in specs)):
        raise UsageError(f"{results_path.name}: configs.{task}.metric_list is not a list of {{metric, aggregation}} "
                         "entries; reading the task's results needs it")
    return [{**spec, "aggregation": _aggregation(spec.get("aggregation")),
             "higher_is_better": bool(spec.get("higher_is_better", True))} for spec in specs]


def _metric_keys(entry: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, filter) of each metric value in a saved ``results`` entry, in its order."""
    pairs = [key.partition(",") for key in entry if isinstance(key, str) and "," in key]
    return [(metric, filter_name) for metric, _, filter_name in pairs
            if filter_name and not metric.endswith(AUXILIARY_SUFFIXES) and not metric.startswith("paired_")]


def _results_entry(task: str, entry: dict[str, Any], metrics: list[str]) -> dict[str, Any]:
    """A saved lmms-eval ``results`` entry as VRP-Bench's: alias, each metric's value and standard error."""
    kept: dict[str, Any] = {"alias": task}
    for metric, filter_name in _metric_keys(entry):
        if metric in metrics:
            for key in (f"{metric},{filter_name}", f"{metric}_stderr,{filter_name}"):
                if key in entry:
                    kept[key] = _number(entry[key])
    return kept


def _metadata(value: Any) -> dict[str, Any]:
    """A task's YAML metadata as one mapping (lmms-eval also accepts a list of mappings)."""
    if isinstance(value, dict):
        return value
    merged: dict[str, Any] = {}
    for item in value if isinstance(value, list) else ():
        if isinstance(item, dict):
            merged.update(item)
    return merged


def _key_values(value: Any) -> dict[str, Any]:
    """lmms-eval's ``k=v,k=v`` arguments (model_args, gen_kwargs) as a mapping (``{"args": text}`` otherwise)."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value.strip():
        return {}
    parts = [part.partition("=") for part in value.split(",") if part.strip()]
    if not all(sep for _, sep, _ in parts):
        return {"args": value}
    return {key.strip(): text.strip() for key, _, text in parts}


def _record(line: Any, where: str, metrics: list[str], primary: str, score_key: str) -> dict[str, Any]:
    """One lmms-eval sample line as a VRP-Bench per-sample record (module docstring)."""
    if not isinstance(line, dict) or not isinstance(line.get("doc_id"), int) or isinstance(line["doc_id"], bool):
        raise UsageError(f"{where}: not a sample line of lmms-eval (an object with an integer doc_id)")
    if primary not in line:
        raise UsageError(f"{where}: doc {line['doc_id']} has no value of {primary}")
    filtered = line.get("filtered_resps")
    return {
        "doc_id": line["doc_id"],
        "target": line.get("target"),
        "prediction": filtered if isinstance(filtered, str) else None,
        "resps": line.get("resps", filtered),  # lmms-eval leaves it out when it is the filtered answer
        "filtered_resps": filtered,
        "correct": correctness_of(line, metrics, score_key),
        **{metric: line[metric] for metric in metrics if metric in line},
        "question_type": None,
        "input": line.get("input"),
        "doc": {},
        "doc_hash": line.get("doc_hash") if isinstance(line.get("doc_hash"), str) else None,
        "error": None,
    }


def vrp_signals(results_path: Path, content: dict[str, Any], samples: dict[str, list[Any]]
                ) -> tuple[Path | None, dict[tuple[str, int], dict[str, Any]]]:
    """The reliability signals VRP's lmms-eval plugin (``vrp_bench.integrations``) wrote for this run, by (task,
    doc_id): the newest ``<out>/vrp_bench/<model>/*_signals.jsonl`` (``<out>``: lmms-eval's output folder) whose
    answers are exactly this run's raw answers; (None, {}) when there is none (any other lmms-eval model)."""
    model = str((content.get("config") or {}).get("model") or "")
    answers = {(task, line["doc_id"]): _raw_answer(line) for task, lines in samples.items() for line in lines
               if isinstance(line, dict) and isinstance(line.get("doc_id"), int)}
    candidates = sorted({path for root in (results_path.parent.parent, results_path.parent)
                         for path in (root / "vrp_bench" / model).glob("*_signals.jsonl")} if model else set(),
                        reverse=True)
    for path in candidates:
        by_doc = {}
        for number, line in enumerate(jsonl_lines(_read_text(path)), 1):
            record = _json(line, path, number) if line.strip() else None
            if isinstance(record, dict) and record.get("request_type") == "generate_until" and not record.get("repeat"):
                by_doc[(record.get("task"), record.get("doc_id"))] = record
        if answers and all(key in by_doc and (by_doc[key].get("prediction") or "").strip() == answer
                           for key, answer in answers.items()):
            return path, by_doc
    return None, {}


def _raw_answer(line: dict[str, Any]) -> str | None:
    """A sample line's raw answer (lmms-eval writes ``resps`` only when it differs from ``filtered_resps``)."""
    raw = line.get("resps", line.get("filtered_resps"))
    while isinstance(raw, list) and raw:
        raw = raw[0]
    return raw.strip() if isinstance(raw, str) else None


def _convert(results_path: Path, content: dict[str, Any], samples: dict[str, list[Any]] | None,
             hashes: dict[str, str] | None = None, signals: Mapping[tuple[str, int], dict[str, Any]] | None = None
             ) -> SavedRun:
    """The lmms-eval run as a ``SavedRun`` (module docstring); ``samples``: each task's sample lines (None: the
    results file alone, for ``show``; its numbers as saved)."""
    tasks = _tasks(results_path, content)
    files = RunFiles.of(results_path)
    saved_counts = content.get("n-samples") if isinstance(content.get("n-samples"), dict) else {}
    results, configs, records, counts, skipped = {}, {}, {}, {}, {}
    filters: dict[str, str] = {}
    saved_results: dict[str, dict[str, str]] = {}
    for task in tasks:
        entry, config = content["results"][task], dict(content["configs"][task])
        specs = _metric_list(results_path, task, config)
        metrics = [spec["metric"] for spec in specs]
        primary = metrics[0]
        keys = [filter_name for metric, filter_name in _metric_keys(entry) if metric == primary]
        if not keys:
            raise UsageError(f"{results_path.name}: results.{task} has no value of its first metric {primary}")
        filters[task] = keys[0]
        results[task] = _results_entry(task, entry, metrics)
        config["metric_list"], config["metadata"] = specs, _metadata(config.get("metadata"))
        saved = saved_counts.get(task) if isinstance(saved_counts.get(task), dict) else {}
        effective = saved.get("effective") if isinstance(saved.get("effective"), int) else 0
        original = saved.get("original") if isinstance(saved.get("original"), int) else effective
        if samples is None:
            configs[task] = config
            counts[task] = samples_entry(original, effective, RecomputedScores({}, {}, effective, 0))
            continue
        name = files.samples(task).name
        seen: set[int] = set()
        task_records = []
        for number, line in enumerate(samples[task], 1):
            record = _record(line, f"{name}:{number}", metrics, primary, str(config.get("score_key") or "score"))
            if record["doc_id"] not in seen:  # later lines of the same doc: the task's other filters
                seen.add(record["doc_id"])
                captured = (signals or {}).get((task, record["doc_id"]))
                if captured is not None and captured.get("signals"):
                    record["signals"] = captured["signals"]
                    if captured.get("signal_errors"):
                        record["signal_errors"] = captured["signal_errors"]
                task_records.append(record)
        if all(r["correct"] is None for r in task_records):
            skipped[task] = (f"its first metric {primary} is neither a number nor a dict with a score per sample in "
                             f"{name} (task code aggregates it), so VRP-Bench cannot tell right from wrong answers")
            del results[task]
            continue
        numeric = [spec for spec in specs if all(_is_number(r.get(spec["metric"])) for r in task_records)]
        config["metric_list"] = numeric
        configs[task], records[task] = config, task_records
        saved_results[task] = {}
        for metric, filter_name in _metric_keys(entry):
            why = _why_kept(metric, filter_name, filters[task], numeric) if metric in metrics else None
            for key in (f"{metric},{filter_name}", f"{metric}_stderr,{filter_name}") if why else ():
                if key in results[task]:
                    saved_results[task][key] = why
        counts[task] = samples_entry(original or len(task_records), len(task_records),
                                     RecomputedScores({}, {}, len(task_records), 0))
    scoring = ScoringSettings()
    sections, _ = score_sections(records, {}, scoring, {task: configs[task]["metadata"] for task in records})
    report = _report(results_path, content, results, configs, counts, skipped, records, hashes or {}, scoring,
                     sections, with_signals=bool(signals))
    return SavedRun(results_path, report, records, {}, {}, dict(hashes or {}), filters, saved_results)


def _why_kept(metric: str, filter_name: str, primary_filter: str, numeric: list[dict[str, Any]]) -> str | None:
    """Why a saved ``results`` value is kept as saved rather than recomputed from the records (None: it is not)."""
    if filter_name != primary_filter:
        return f"filter {filter_name}: its answers are not the records scored"
    if not any(spec["metric"] == metric for spec in numeric):
        return "not a number per sample"
    return None


def _groups(content: dict[str, Any], tasks: list[str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """lmms-eval's ``groups`` (alias and metric values) and ``group_subtasks`` (groups with members only)."""
    subtasks = content.get("group_subtasks") if isinstance(content.get("group_subtasks"), dict) else {}
    members = {group: [str(t) for t in listed] for group, listed in subtasks.items()
               if isinstance(listed, list) and listed and group not in tasks}
    saved = content.get("groups") if isinstance(content.get("groups"), dict) else {}
    groups = {}
    for group, entry in saved.items():
        if isinstance(entry, dict):
            groups[group] = {"alias": str(group), **{f"{m},{f}": _number(entry[f"{m},{f}"])
                                                     for m, f in _metric_keys(entry)}}
    return groups, members


def _report(results_path: Path, content: dict[str, Any], results: dict[str, Any], configs: dict[str, Any],
            counts: dict[str, Any], skipped: dict[str, str], records: Mapping[str, list[dict[str, Any]]],
            hashes: dict[str, str], scoring: ScoringSettings, sections: dict[str, Any], with_signals: bool = False
            ) -> dict[str, Any]:
    """The converted run's report: lmms-eval's keys as VRP-Bench writes them, and the scored sections."""
    config = content.get("config") if isinstance(content.get("config"), dict) else {}
    groups, group_subtasks = _groups(content, list(configs))
    versions = content.get("versions") if isinstance(content.get("versions"), dict) else {}
    n_shot = content.get("n-shot") if isinstance(content.get("n-shot"), dict) else {}
    higher = content.get("higher_is_better") if isinstance(content.get("higher_is_better"), dict) else {}
    batch_size, seed, limit = config.get("batch_size"), config.get("random_seed"), config.get("limit")
    model = str(config.get("model") or "lmms-eval")
    date = results_path.stat().st_mtime
    return {
        "schema": SCHEMA_ID,
        "converted_from": {"format": "lmms-eval", "file": results_path.name,
                           "lmms_eval_version": content.get("lmms_eval_version"), "date": content.get("date")},
        "results": results,
        "groups": groups,
        "group_subtasks": group_subtasks,
        "skipped": skipped,
        "errors": {task: [] for task in results},
        "configs": configs,
        "doc_sets": doc_sets_of(records),
        "versions": {task: versions.get(task) for task in configs},
        "n-shot": {task: n if isinstance(n := n_shot.get(task), int) and n >= 0 else 0 for task in configs},
        "n-samples": counts,
        "higher_is_better": {name: higher[name] for name in [*configs, *groups] if isinstance(higher.get(name), dict)},
        "config": {
            "model": model,
            "model_args": _key_values(config.get("model_args")),
            "tasks": ",".join(configs),
            "include_path": [],
            "batch_size": batch_size if isinstance(batch_size, int) and batch_size >= 1 else 1,
            "device": config.get("device"),
            "limit": limit if _is_number(limit) and not isinstance(limit, bool) else None,
            "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else 0,
            "gen_kwargs": _key_values(config.get("gen_kwargs")),
            "scoring": scoring.to_json(),
            "signals": dataclasses.asdict(SignalSettings()) if with_signals else None,
            "command_line": f"lmms-eval (results read by vrp-bench from {results_path.name})",
            "lmms_eval": config,
        },
        "model": {"name": str(content.get("model_name") or model), "source": "lmms-eval",
                  "model_args": config.get("model_args")},
        "layer_numbering": LAYER_NUMBERING,
        "environment": {"versions": {"vrp-bench": vrp_bench.__version__, "python": None,
                                     "lmms-eval": content.get("lmms_eval_version")}, "platform": None},
        **sections,
        "ablation": None,
        "files": dict(hashes),
        "git_hash": content.get("git_hash") if isinstance(content.get("git_hash"), str) else None,
        "date": date,
        "date_iso": datetime.fromtimestamp(date, timezone.utc).isoformat(),
    }
