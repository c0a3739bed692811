"""Console tables: the summary printed after a run (and by ``vrp-bench show`` later)."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def summary_table(report: dict[str, Any]) -> str:
    """Accuracy-style metrics per task and group, then skipped tasks and per-sample errors."""
    rows = []
    for name, entry in report["results"].items():
        version = report["versions"].get(name)
        for key, value in entry.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or metric.endswith("_stderr"):
                continue
            stderr = entry.get(f"{metric}_stderr,{filter_name}")
            rows.append([name, version, entry["n"], entry["n_errors"], metric, _number(value), _number(stderr)])
    lines = [tabulate(rows, headers=["Task", "Version", "n", "Errors", "Metric", "Value", "Stderr"], tablefmt="github", disable_numparse=True)]
    if report["groups"]:
        group_rows = [
            [group, entry["n"], entry["n_errors"], metric, _number(value)]
            for group, entry in report["groups"].items()
            for metric, value in entry.items()
            if metric not in ("n", "n_errors")
        ]
        lines += ["", tabulate(group_rows, headers=["Group", "n", "Errors", "Metric", "Value"], tablefmt="github", disable_numparse=True)]
    for name, reason in report["skipped"].items():
        lines.append(f"skipped {name}: {reason}")
    for name, errors in report["errors"].items():
        if errors:
            first = errors[0]
            lines.append(f"{name}: {len(errors)} sample(s) failed and were not scored; first: doc {first['doc_id']}: {first['reason']}")
    return "\n".join(lines)
