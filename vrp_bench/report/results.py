"""The run report (lmms-eval's results JSON keys plus VRP-Bench's sections) and per-sample logs."""

from __future__ import annotations

import platform
import subprocess
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import vrp_bench
from vrp_bench.api.yaml_dialect import FunctionRef
from vrp_bench.evaluator import RunResult, group_scores

REPORT_FORMAT = "vrp-results/0"
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
        return f"!function {value.dotted_name}"
    if callable(value):
        return getattr(value, "__name__", str(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def build_report(run: RunResult, command_line: str, started: float) -> dict[str, Any]:
    """The results JSON of a run."""
    config = run.config
    results: dict[str, Any] = {}
    for name, result in run.results.items():
        entry: dict[str, Any] = {"alias": name}
        for metric, value in result.metrics.items():
            entry[f"{metric},{FILTER}"] = value
            entry[f"{metric}_stderr,{FILTER}"] = result.stderrs[metric]
        entry["n"] = result.n_scored
        entry["n_errors"] = result.n_errors
        results[name] = entry
    return {
        "format": REPORT_FORMAT,
        "results": results,
        "groups": group_scores(run),
        "group_subtasks": run.groups,
        "skipped": run.skipped,
        "errors": {
            name: [{"doc_id": r.doc_id, "reason": r.error} for r in result.records if r.error is not None]
            for name, result in run.results.items()
        },
        "configs": {name: _plain(r.task.config.__dict__) for name, r in run.results.items()},
        "versions": {name: r.task.config.version for name, r in run.results.items()},
        "n-samples": {name: {"original": r.n_docs, "effective": len(r.records)} for name, r in run.results.items()},
        "higher_is_better": {
            name: {m.metric: m.higher_is_better for m in r.task.config.metric_list} for name, r in run.results.items()
        },
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
            "command_line": command_line,
        },
        "model": run.model.describe(),
        "environment": {"versions": package_versions(), "platform": platform.platform()},
        "git_hash": source_git_hash(),
        "date": started,
        "date_iso": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "total_evaluation_time_seconds": round(time.time() - started, 3),
    }


def sample_logs(run: RunResult) -> dict[str, list[dict[str, Any]]]:
    """Per task, the per-sample log records."""
    return {name: [r.to_json() for r in result.records] for name, result in run.results.items()}
