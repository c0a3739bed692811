"""Console tables: the summary printed after a run and by ``vrp-bench show``."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

POOLED = "pooled"


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _with_ci(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "-"
    ci = entry.get("ci")
    return f"{entry['value']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{entry['value']:.3f}"


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def results_table(report: dict[str, Any]) -> list[str]:
    """Task metrics (lmms-eval style), group scores, skipped tasks and failed samples."""
    rows = []
    for name, entry in report["results"].items():
        version = report["versions"].get(name)
        for key, value in entry.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or metric.endswith("_stderr"):
                continue
            stderr = entry.get(f"{metric}_stderr,{filter_name}")
            rows.append([name, version, entry["n"], entry["n_errors"], metric, _number(value), _number(stderr)])
    lines = [_table(rows, ["Task", "Version", "n", "Errors", "Metric", "Value", "Stderr"])]
    if report["groups"]:
        group_rows = [[group, entry["n"], entry["n_errors"], metric, _number(value)]
                      for group, entry in report["groups"].items()
                      for metric, value in entry.items() if metric not in ("n", "n_errors")]
        lines += ["", _table(group_rows, ["Group", "n", "Errors", "Metric", "Value"])]
    lines += [f"skipped {name}: {reason}" for name, reason in report["skipped"].items()]
    for name, errors in report["errors"].items():
        if errors:
            first = errors[0]
            lines.append(f"{name}: {len(errors)} sample(s) failed and were not scored; "
                         f"first: doc {first['doc_id']}: {first['reason']}")
    return lines


def signals_table(report: dict[str, Any]) -> list[str]:
    """Pooled signal quality: AUROC [CI], R_pb [CI], PRR; then probes, fusion and the verdicts."""
    pooled = report["signals"][POOLED]
    if not pooled["signals"]:
        return []
    rows = [[name, score["n"], _with_ci(score["statistics"]["auroc"]), _with_ci(score["statistics"]["r_pb"]),
             _number(score["statistics"]["prr"]["value"])]
            for name, score in sorted(pooled["signals"].items(),
                                      key=lambda item: -(item[1]["statistics"]["auroc"]["value"] or 0))]
    lines = ["", f"Reliability signals, pooled over tasks (n = {pooled['n']}, accuracy {_number(pooled['accuracy'])}):",
             _table(rows, ["Signal", "n", "AUROC [95% CI]", "R_pb [95% CI]", "PRR"])]
    for position, probe in report["probes"].items():
        nested = probe.get("nested")
        if nested:
            chosen = nested.get("chosen_layers")
            lines.append(f"probe ({probe['kind']}, {position}): held-out AUROC {_with_ci(nested['auroc'])}, "
                         f"layer chosen per fold {chosen}; shuffled-label control "
                         f"{_with_ci((probe.get('shuffled_control') or {}).get('auroc'))}")
        elif probe.get("reason"):
            lines.append(f"probe ({position}): {probe['reason']}")
    lines.append(f"fusion of signals: AUROC {_with_ci(report['summary']['fusion_auroc'])}")
    cluster = report["verdicts"]["cluster_failure"]["holds"]
    if cluster is not None:
        lines.append(f"cluster failure (attention structure uncorrelated with correctness): {'holds' if cluster else 'does not hold'}")
    return lines


def summary_table(report: dict[str, Any]) -> str:
    """Everything a person wants to see after a run."""
    return "\n".join(results_table(report) + signals_table(report))
