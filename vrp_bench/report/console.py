"""The summary of a run: printed after a run and by ``vrp-bench show`` (``summary_table``), and shown in the run
report's HTML page (``report.html_report``), both from the same blocks (``summary_blocks``): lines of text and
``Table``s."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from vrp_bench.report.results import group_counts, group_metrics, task_counts


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _with_ci(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "-"
    ci = entry.get("ci")
    return f"{entry['value']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{entry['value']:.3f}"


@dataclass(frozen=True)
class Table:
    """A table of the summary: its headers and rows of cells."""

    headers: list[str]
    rows: list[list[Any]]

    def text(self) -> str:
        """The table as the console prints it (GitHub markdown)."""
        return tabulate(self.rows, headers=self.headers, tablefmt="github", disable_numparse=True)


Block = str | Table
"""A block of the summary: a line of text ("" separates sections on the console) or a table."""


def _table(rows: list[list[Any]], headers: list[str]) -> Table:
    return Table(headers, rows)


def results_table(report: dict[str, Any]) -> list[Block]:
    """Task metrics (lmms-eval style), group scores, skipped tasks and failed samples."""
    rows = []
    for name, entry in report["results"].items():
        version = report["versions"].get(name)
        scored, failed = task_counts(report, name)
        for key, value in entry.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or metric.endswith("_stderr"):
                continue
            stderr = entry.get(f"{metric}_stderr,{filter_name}")
            rows.append([name, version, scored, failed, metric, _number(value), _number(stderr)])
    lines: list[Block] = [_table(rows, ["Task", "Version", "n", "Errors", "Metric", "Value", "Stderr"])]
    if report["groups"]:
        group_rows = [[group, *group_counts(report, group), metric, _number(value)]
                      for group in report["groups"] for metric, value in group_metrics(report, group).items()]
        lines += ["", _table(group_rows, ["Group", "n", "Errors", "Metric", "Value"])]
    lines += [f"skipped {name}: {reason}" for name, reason in report["skipped"].items()]
    for name, errors in report["errors"].items():
        if errors:
            first = errors[0]
            lines.append(f"{name}: {len(errors)} sample(s) failed and were not scored; "
                         f"first: doc {first['doc_id']}: {first['reason']}")
    return lines


def signals_table(report: dict[str, Any]) -> list[Block]:
    """Within-task signal quality (AUROC, R_pb, PRR; concatenated AUROC beside it), the split-half best
    signal, probes, fusion, the attention-only classifiers, diagnostics and the verdicts."""
    within, concatenated = report["signals"]["within_task"], report["signals"]["concatenated"]
    if not within["signals"]:
        return ["", f"No reliability signals in this run: accuracy only (n = {within['n']} scored, accuracy "
                    f"{_number(within['accuracy'])})."] if within["n"] else []
    summary = report["summary"]
    listed = summary["signal_auroc"]
    rows = [[" = ".join([name, *listed[name]["same_ranking_as"]]), len(score["tasks"]), score["n"],
             _with_ci(score["statistics"]["auroc"]), _with_ci(score["statistics"]["r_pb"]),
             _number(score["statistics"]["prr"]["value"]),
             _number(concatenated["signals"][name]["statistics"]["auroc"]["value"])]
            for name, score in sorted(((n, within["signals"][n]) for n in listed),
                                      key=lambda item: -(item[1]["statistics"]["auroc"]["value"] or 0))]
    lines: list[Block] = ["", f"Reliability signals within task (pairs of samples from the same task; n = {within['n']}, "
                 f"accuracy {_number(within['accuracy'])}; signals that rank every sample alike are joined by =):",
             _table(rows, ["Signal", "Tasks", "n", "AUROC within [95% CI]", "R_pb within [95% CI]", "PRR within",
                           "AUROC concatenated"])]
    best = summary["best_signal"]
    if best:
        lines.append(f"best signal: {best['name']} (chosen on half of each task's docs, AUROC there "
                     f"{best['selection']['auroc']:.3f}; on the other half {_with_ci(best)})")
    for position, probe in report["probes"].items():
        nested = probe.get("nested")
        if nested and nested["auroc"]["value"] is not None:
            lines.append(f"probe ({probe['kind']}, {position}): {_heldout(nested)}; layer chosen per fold "
                         f"{nested.get('chosen_layers')}")
        elif probe.get("reason") or nested:
            lines.append(f"probe ({position}): {probe.get('reason') or nested['auroc']['reason']}")
    if report["fusion"] and report["fusion"].get("heldout"):
        lines.append(f"fusion of {len(report['fusion']['signals'])} signals: {_heldout(report['fusion']['heldout'])}")
    lines += _attention_lines(report.get("attention_classifiers"))
    lines += _diagnostics_lines(report.get("diagnostics") or {})
    for task, failures in report["signal_failures"].items():
        for name, entry in failures.items():
            lines.append(f"{task}: signal {name} failed on {entry['n']} sample(s) (null there, not scored); "
                         f"first: doc {entry['first_doc_id']}: {entry['first_reason']}")
    return lines + verdict_lines(report["verdicts"])


def verdict_lines(verdicts: dict[str, Any]) -> list[str]:
    """One line per verdict: status, layer, and what decided it (``decided_by``, which names every signal the
    verdict covers but could not test, with why)."""
    lines = []
    for name, verdict in verdicts.items():
        layer = f" (layer {verdict['layer']})" if verdict.get("layer") is not None else ""
        lines.append(f"verdict {name}: {verdict['status']}{layer}: {verdict['decided_by']}")
    return lines


def _heldout(heldout: dict[str, Any]) -> str:
    """A repeated, permutation-tested held-out predictor in one phrase."""
    test, gain = heldout["permutation_test"], heldout["gain_over_task_only"]
    null = test.get("null_band")
    null_text = f", shuffled-label null {null[0]:.3f}-{null[1]:.3f}" if null else ""
    p_value = f"p = {test['p_value']:.3f} ({test['n_permutations']} within-task permutations{null_text})" \
        if test.get("p_value") is not None else "no permutation test"
    return (f"within-task AUROC {_with_ci(heldout['auroc'])} over {heldout['repeats']} CV repeats, {p_value}; "
            f"concatenated AUROC gain over a task-only predictor {_with_ci(gain)}")


def _attention_lines(section: dict[str, Any] | None) -> list[str]:
    """The attention-only classifiers (the stress test), held out like the fusion, or why they could not be
    (none in a report written before them)."""
    if not section:
        return []
    structure, probe = section["structure"], section["ensemble_probe"]
    grid = " x ".join(map(str, probe["grid"])) if probe["grid"] else "-"
    return [f"attention-only classifier ({structure['kind']}, {section['features']['count']} attention-structure "
            f"features): {_heldout(structure['heldout']) if structure['heldout'] else structure['reason']}",
            f"ensemble attention probe (logistic, normalised {probe['map']} maps, {grid}): "
            f"{_heldout(probe['heldout']) if probe['heldout'] else probe['reason']}"]


def _diagnostics_lines(diagnostics: dict[str, Any]) -> list[str]:
    """One line per diagnostic signal: mean for correct vs incorrect samples, per task."""
    by_signal: dict[str, list[str]] = {}
    for task, entries in diagnostics.items():
        for name, entry in entries.items():
            by_signal.setdefault(name, []).append(
                f"{task} {_mean(entry['correct'])} vs {_mean(entry['incorrect'])}")
    if not by_signal:
        return []
    lines = ["diagnostics (read the reference answer: never ranked; mean for correct vs incorrect):"]
    return lines + [f"  {name}: " + "; ".join(parts) for name, parts in by_signal.items()]


def mechanisms_table(report: dict[str, Any]) -> list[Block]:
    """The ``mechanisms`` section: per decoder layer, the blocks' mean contributions to the truth margin's change and
    the mean residual-update norms; the MLP share of the margin's growth and the late forcing, with CIs (nothing in a
    report written before the section, or from a model that captures no residual stream)."""
    section = report.get("mechanisms")
    if not section:
        return []
    attribution, forcing = section["margin_attribution"], section["forcing"]
    per_layer = attribution.get("per_layer") or []
    columns = [*([row[block] for row in per_layer] for block in ("attention", "mlp", "unattributed")),
               *((forcing[position].get("mean_profile") or []) for position in ("image", "last"))]
    n_layers = max(len(column) for column in columns)
    if not n_layers:
        return [f"mechanisms: {attribution['reason']}"]
    rows = [[layer, *(_number(column[layer] if layer < len(column) else None) for column in columns)]
            for layer in range(n_layers)]
    lines: list[Block] = [
        "", "Mechanisms per decoder layer (means over all scored samples; the truth margin reads the reference answer: "
            "descriptive, never ranked):",
        _table(rows, ["Decoder layer", "Margin change from attention", "from MLP", "unattributed",
                      "Update norm, image tokens", "Update norm, last prompt token"])]
    if attribution.get("reason") is None:
        peaks = attribution["peak_layers"]
        lines.append(f"MLP share of the truth margin's growth: {_with_ci(attribution['mlp_share_of_growth'])} "
                     f"(correct {_with_ci(attribution['mlp_share_of_growth_correct'])}, incorrect "
                     f"{_with_ci(attribution['mlp_share_of_growth_incorrect'])}; n = {attribution['n']}); peak layers: "
                     f"attention {peaks['attention']}, MLP {peaks['mlp']}, both {peaks['blocks']}")
    for position, entry in forcing.items():
        if entry.get("reason") is None and entry.get("late_forcing"):
            lines.append(f"late forcing ({position}): {_with_ci(entry['late_forcing'])} (last layers' mean update "
                         f"over the earlier layers'); largest rise at decoder layer {entry['forcing_layer']}")
    return lines


def summary_blocks(report: dict[str, Any]) -> list[Block]:
    """Everything a person wants to see after a run: task metrics, signals, probes, verdicts, mechanisms, the
    ablation."""
    return results_table(report) + signals_table(report) + mechanisms_table(report) + ablation_table(report)


def summary_table(report: dict[str, Any]) -> str:
    """The summary as the console prints it."""
    return "\n".join(block if isinstance(block, str) else block.text() for block in summary_blocks(report))


def _mean(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    ci = entry.get("ci")
    return f"{entry['mean']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{entry['mean']:.3f}"


def ablation_table(report: dict[str, Any]) -> list[Block]:
    """The ablation section: accuracy over the destroyed fraction per layer and unit choice (random:
    mean +- sd over seeds), robustness AUC, breaking point; patch masking; the bottleneck verdict; checks."""
    ablation = report.get("ablation")
    if not ablation:
        return []
    settings, baseline = ablation["settings"], ablation["baseline"]
    fractions = sorted({p for curve in ablation["curves"] for p in curve["fractions"]})
    rows = []
    for curve in ablation["curves"]:
        cells = dict(zip(curve["fractions"], curve["accuracy"]))
        spread = dict(zip(curve["fractions"], curve["accuracy_seed_sd"] or []))
        row = [curve["layer"], f"{curve['selection']} ({curve['n_seeds']} seed{'s' * (curve['n_seeds'] > 1)})"]
        row += ["-" if cells.get(p) is None else f"{cells[p]:.3f}" + (f"±{spread[p]:.3f}" if spread.get(p) else "")
                for p in fractions]
        row += [_number(curve["robustness_auc"]), "-" if curve["breaking_point"] is None else f"{curve['breaking_point']:g}"]
        rows.append(row)
    source = ("chosen by the probe" if settings["layer"] == "probe" else "given") if settings["layer"] != "all" else "all"
    lines: list[Block] = ["", f"Ablation of {settings['space']} units by {settings['method']} (layers {ablation['layers']}, {source}); "
             f"baseline accuracy {_mean(baseline['accuracy'])}, chance {baseline['chance']:.3f}:"]
    if rows:
        lines.append(_table(rows, ["Layer", "Units", *(f"p={p:g}" for p in fractions), "Robustness AUC", "Breaking p"]))
    tracked = ablation["tracked_signals"][:1]
    shown = [c for c in ablation["conditions"] if _headline(c, ablation["conditions"])]
    condition_rows = [[c["id"], _mean(c["accuracy"]), _with_ci(c["accuracy_change"]), _mean(c["flip_rate"]),
                       _mean(c["first_token_kl"]), _with_ci(c["probe_auroc"]),
                       *(_with_ci(c["signal_auroc"].get(name)) for name in tracked)] for c in shown]
    if condition_rows:
        lines += ["Key conditions (patches: input embeddings of the chosen image tokens zeroed; AUROCs under the ablation):",
                  _table(condition_rows, ["Condition", "Accuracy [95% CI]", "Change [95% CI]", "Flip rate",
                                          "First-token KL", "Held-out probe AUROC", *(f"{n} AUROC" for n in tracked)])]
    if ablation["bottleneck"]:
        verdict = ablation["bottleneck"]
        lines.append(f"bottleneck profile: {verdict['verdict']} (most sensitive layer {verdict['most_sensitive_layer']})")
    zero = [c for c in ablation["conditions"] if c["kind"] == "units" and c["fraction"] == 0.0]
    flips = max((c["flip_rate"]["mean"] or 0.0 for c in zero), default=0.0)
    lines.append(f"checks: p = 0 flip rate {flips:.3f}; unablated reference vs baseline answers: "
                 f"{ablation['reference_mismatches']} mismatch(es); hooks removed: {ablation['hooks_removed']}")
    failed = [c for c in ablation["conditions"] if c["n_errors"]]
    if failed:
        lines.append(f"{len(failed)} condition(s) had failed samples (counted, not scored); first: {failed[0]['id']}: "
                     f"{failed[0]['n_errors']} failed")
    return lines


def _headline(condition: dict[str, Any], conditions: list[dict[str, Any]]) -> bool:
    """Conditions worth a console row: p = 0, the largest fraction of each unit choice (first seed), patches."""
    if condition["kind"] == "patches":
        return True
    if condition["fraction"] == 0.0:
        return True
    peers = [c for c in conditions if c["kind"] == "units" and c["layer"] == condition["layer"]
             and c["selection"] == condition["selection"]]
    return condition["fraction"] == max(c["fraction"] for c in peers) and condition["seed"] == min(c["seed"] for c in peers)
