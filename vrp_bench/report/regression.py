"""The regression gate: is a run worse than a baseline run on the same docs? (``vrp-bench regress``)

Both runs are read back (``saved_run.load_run``: the report and its per-sample files, so both need
``--log_samples``), verified as ``vrp-bench score`` verifies a run (``check_records``, then ``check_hashes``),
and refused (``NotComparable``, exit 2) when ``comparability.differences`` names a reason they cannot be put
side by side (other docs, tasks, task versions, generation, signal or scoring settings). Docs are paired by
(task, doc_id) with equal ``doc_hash``; a doc counts when both runs scored it (a failed doc is never wrong).

Paired bootstrap: one matrix of doc multiplicities W [B, n] (``bootstrap.resample_weights``, stratified by
task, seeded) weights both runs' records of a doc alike. Every quantity q is computed on the data (every
weight 1) and on each of the B weightings; its change is q_current - q_baseline per weighting, so what both
runs share (which docs are hard) cancels out of the change's spread.

Quantities, all higher-is-better, for each task and, when there are several, pooled within task
(``within_task``):

- ``accuracy`` = sum_i w_i y_i / sum_i w_i, y_i = 1 when the answer is right (pooled: every resample keeps
  each task's size, so this is the size-weighted mean of the task accuracies);
- ``auroc:<signal>``: the within-task AUROC (``stratified.StratifiedTally``: sum_t area_t / sum_t N1_t N0_t),
  in the signal's orientation, of each reliability signal (``records.reliability_view``: no signal that reads
  the reference; scalar, with an orientation) that both runs score, over the docs where the run has a value;
  pooled over the tasks where both runs score it. A signal defined on fewer than ``min_samples`` docs of a
  run, or whose AUROC is undefined there (one class, constant), is not compared, and ``not_compared`` says so;
- ``robustness_auc:L<layer>/<units>``: when both runs ablated with the same settings and their per-condition
  files lie beside the reports, the robustness AUC of each curve both have (all tasks together, as in the
  report), recomputed for each weighting by ``interventions.outcomes`` itself from the conditions' paired
  accuracies on the weighted docs: acc(0) = the run's weighted accuracy, acc(p) = acc(0) + the weighted mean
  of (ablated - unablated correctness) over the docs the condition answered. On the data this is the report's
  value (when both runs scored the same docs).

Verdict of a change d with 95% percentile CI [lo, hi] and tolerance tol (per kind, default 0.02):
``regression`` when hi < -tol, ``improvement`` when lo > +tol, ``undetermined`` when there is no CI (the
quantity is undefined in too many resamples), else ``no significant change``. The gate fails on any
regression; with many quantities, a real but harmless change can now and then cross the line by chance
(no multiplicity correction: it is a gate, a person reads the table).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from vrp_bench.api.errors import UsageError
from vrp_bench.api.files import write_files_atomically
from vrp_bench.interventions.outcomes import ablation_context, robustness_curves
from vrp_bench.report.comparability import differences
from vrp_bench.report.saved_run import SavedRun, check_hashes, check_records, load_run
from vrp_bench.report.writer import json_text
from vrp_bench.scoring.bootstrap import CONFIDENCE, percentile_ci, resample_weights
from vrp_bench.scoring.records import (
    correctness,
    reliability_view,
    sample_key,
    scalar_signal_names,
    scored_records,
    signal_values,
)
from vrp_bench.scoring.signal_quality import oriented
from vrp_bench.scoring.stratified import StratifiedTally
from vrp_bench.signals.catalogue import SIGNALS

WITHIN_TASK = "within_task"
DEFAULT_TOLERANCE = 0.02
REGRESSION, IMPROVEMENT, NO_CHANGE, UNDETERMINED = "regression", "improvement", "no significant change", "undetermined"


class NotComparable(UsageError):
    """The two reports cannot be compared (exit 2); ``reasons``: every one of ``comparability.differences``."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons)
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        super().__init__(f"the reports are not comparable: {reasons[0]}{more}")


@dataclass(frozen=True)
class Tolerance:
    """How large a significant drop must be to count as a regression, per kind of quantity."""

    accuracy: float = DEFAULT_TOLERANCE
    auroc: float = DEFAULT_TOLERANCE
    robustness_auc: float = DEFAULT_TOLERANCE

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        """``--tolerance``: one number for every kind ("0.02"), or kind=number pairs ("accuracy=0.01,auroc=0.03";
        kinds not named keep the default)."""
        kinds = [f.name for f in fields(cls)]
        try:
            if "=" not in text:
                return cls(**dict.fromkeys(kinds, _tolerance_value(text)))
            pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
            unknown = [kind.strip() for kind, _ in pairs if kind.strip() not in kinds]
            if unknown:
                raise UsageError(f"--tolerance {text!r}: unknown kind {unknown[0]!r}; kinds: {', '.join(kinds)}")
            return cls(**{kind.strip(): _tolerance_value(value) for kind, value in pairs})
        except ValueError:
            raise UsageError(f"--tolerance {text!r}: give a number >= 0, or kind=number pairs such as "
                             "accuracy=0.01,auroc=0.03") from None

    def of(self, kind: str) -> float:
        return float(getattr(self, kind))

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def _tolerance_value(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(text)
    return value


@dataclass(frozen=True)
class Change:
    """One quantity of one scope in both runs, its change (current - baseline) and the verdict."""

    task: str
    """A task, or ``WITHIN_TASK`` (pooled within task; robustness AUC: all tasks, as in the report)."""
    quantity: str
    """``accuracy``, ``auroc:<signal>`` or ``robustness_auc:L<layer>/<units>``."""
    baseline: float
    current: float
    change: float
    ci: list[float] | None
    verdict: str
    n: int
    """Paired docs in the scope."""
    reason: str | None = None

    @property
    def kind(self) -> str:
        return self.quantity.split(":", 1)[0]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind}


@dataclass
class Comparison:
    """The result of ``compare_runs``: every change, what was not compared and why, and how."""

    baseline: Path
    current: Path
    tolerance: Tolerance
    n_resamples: int
    seed: int
    docs: dict[str, int]
    """Paired docs per task."""
    unpaired: int
    """Docs scored by one run only (left out)."""
    changes: list[Change] = field(default_factory=list)
    not_compared: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == REGRESSION]

    def summary_line(self) -> str:
        counts = {verdict: sum(c.verdict == verdict for c in self.changes)
                  for verdict in (REGRESSION, IMPROVEMENT, NO_CHANGE, UNDETERMINED)}
        tolerance = ", ".join(f"{kind} {value:g}" for kind, value in self.tolerance.to_json().items())
        outcome = "FAIL" if counts[REGRESSION] else "PASS"
        return (f"{outcome}: {counts[REGRESSION]} regression(s), {counts[IMPROVEMENT]} improvement(s), "
                f"{counts[NO_CHANGE]} without significant change, {counts[UNDETERMINED]} undetermined among "
                f"{len(self.changes)} changes (tolerance {tolerance}; paired bootstrap, {self.n_resamples} resamples "
                f"of {sum(self.docs.values())} docs, seed {self.seed})")

    def table(self) -> str:
        """The changes as a GitHub-format table."""
        rows = [[c.task, c.quantity, f"{c.baseline:.3f}", f"{c.current:.3f}", _change_text(c), c.verdict]
                for c in self.changes]
        return tabulate(rows, headers=["Task", "Quantity", "Baseline", "Current", "Change [95% CI]", "Verdict"],
                        tablefmt="github", disable_numparse=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": str(self.baseline), "current": str(self.current), "tolerance": self.tolerance.to_json(),
            "confidence": CONFIDENCE, "n_resamples": self.n_resamples, "seed": self.seed,
            "docs": self.docs, "unpaired_docs": self.unpaired, "passed": not self.regressions,
            "changes": [c.to_json() for c in self.changes], "not_compared": self.not_compared,
        }


def _change_text(change: Change) -> str:
    ci = "[-]" if change.ci is None else f"[{change.ci[0]:+.3f}, {change.ci[1]:+.3f}]"
    return f"{change.change:+.3f} {ci}"


def verdict(change_ci: Sequence[float] | None, tolerance: float) -> str:
    """``regression`` if hi < -tolerance, ``improvement`` if lo > tolerance, ``undetermined`` without a CI."""
    if change_ci is None:
        return UNDETERMINED
    low, high = change_ci
    return REGRESSION if high < -tolerance else IMPROVEMENT if low > tolerance else NO_CHANGE


def verified_run(path: Path) -> SavedRun:
    """The run at ``path`` with its per-sample files, checked as ``vrp-bench score`` checks it."""
    run = load_run(path)
    check_records(run)
    check_hashes(run.results_path, run.report["files"], run.hashes)
    return run


@dataclass(frozen=True)
class _Side:
    """One run's paired records, aligned with the comparison's doc order."""

    run: SavedRun
    records: list[dict[str, Any]]
    """Reliability view of each paired doc's record."""
    names: dict[str, list[str]]
    """Per task, the reliability signals this run scores there."""

    @cached_property
    def correct(self) -> np.ndarray:
        return correctness(self.records).astype(float)

    def oriented(self, name: str, positions: np.ndarray) -> np.ndarray:
        """The signal's oriented values at ``positions`` (NaN where absent)."""
        spec = SIGNALS.get(name)
        values = np.array([np.nan if v is None else v
                           for v in signal_values([self.records[i] for i in positions], name)], dtype=float)
        return oriented(values, spec.orientation, spec.probability)


def _views(run: SavedRun) -> dict[str, dict[int, dict[str, Any]]]:
    metadata = {task: config.get("metadata") or {} for task, config in run.report["configs"].items()}
    return {task: {r["doc_id"]: r for r in records}
            for task, records in reliability_view(scored_records(run.samples), metadata).items()}


def _pair(baseline: SavedRun, current: SavedRun) -> tuple[list[str], list[str], _Side, _Side, int]:
    """Paired doc keys (``sample_key``), their tasks, both sides, and how many docs one run scored alone."""
    views = _views(baseline), _views(current)
    keys, tasks, unpaired = [], [], 0
    aligned: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    for task, by_id in views[0].items():
        other = views[1].get(task, {})
        unpaired += len(set(by_id) ^ set(other))
        for doc_id, record in by_id.items():
            if doc_id not in other:
                continue
            if record.get("doc_hash") != other[doc_id].get("doc_hash"):
                raise NotComparable([f"{task}: doc {doc_id} differs between the runs (doc_hash)"])
            keys.append(sample_key(task, doc_id))
            tasks.append(task)
            aligned[0].append(record)
            aligned[1].append(other[doc_id])
    sides = tuple(_Side(run, records, {task: scalar_signal_names(list(view[task].values())) for task in view})
                  for run, records, view in zip((baseline, current), aligned, views))
    return keys, tasks, sides[0], sides[1], unpaired


def compare_runs(
    baseline_path: Path, current_path: Path, tolerance: Tolerance | None = None,
    n_resamples: int | None = None, seed: int | None = None,
) -> Comparison:
    """Compare the current run with the baseline (module docstring). ``n_resamples`` and ``seed`` default to
    the baseline's scoring settings. Raises ``NotComparable`` (a ``UsageError``) for runs that cannot be compared."""
    baseline, current = verified_run(Path(baseline_path)), verified_run(Path(current_path))
    reasons = differences(baseline.report, current.report)
    if reasons:
        raise NotComparable(reasons)
    scoring = baseline.report["config"]["scoring"]
    n_resamples = scoring["n_resamples"] if n_resamples is None else n_resamples
    seed = scoring["seed"] if seed is None else seed
    keys, tasks, base, cur, unpaired = _pair(baseline, current)
    labels = np.asarray(tasks)
    # row 0: the data itself; rows 1..B: the paired bootstrap weightings
    weights = np.vstack([np.ones((1, len(keys)), dtype=np.int64),
                         resample_weights(len(keys), n_resamples, seed, strata=labels)])
    docs = {task: int((labels == task).sum()) for task in dict.fromkeys(tasks)}
    comparison = Comparison(baseline.results_path, current.results_path, tolerance or Tolerance(), n_resamples, seed,
                            docs, unpaired)
    comparison.not_compared += [f"{task}: no doc scored by both runs" for task in baseline.report["results"]
                                if task not in docs]
    scopes = [(task, np.flatnonzero(labels == task)) for task in docs]
    if len(docs) > 1:
        scopes.append((WITHIN_TASK, np.arange(len(keys))))
    for scope, positions in scopes:
        _accuracy(comparison, scope, positions, base, cur, weights)
        _signals(comparison, scope, positions, labels, base, cur, weights, scoring["min_samples"])
    _robustness(comparison, keys, base, cur, weights)
    return comparison


def _add(comparison: Comparison, scope: str, quantity: str, base: np.ndarray, cur: np.ndarray, n: int) -> None:
    """Append the change of a quantity given per weighting ([1 + B], row 0 the data) in both runs."""
    change = cur - base
    ci = percentile_ci(change[1:], CONFIDENCE)
    kind = quantity.split(":", 1)[0]
    comparison.changes.append(Change(scope, quantity, float(base[0]), float(cur[0]), float(change[0]), ci.interval,
                                     verdict(ci.interval, comparison.tolerance.of(kind)), n, ci.reason))


def _accuracy(comparison: Comparison, scope: str, positions: np.ndarray, base: _Side, cur: _Side,
              weights: np.ndarray) -> None:
    w = weights[:, positions]
    total = w.sum(axis=1)
    _add(comparison, scope, "accuracy", w @ base.correct[positions] / total, w @ cur.correct[positions] / total,
         len(positions))


def _signals(comparison: Comparison, scope: str, positions: np.ndarray, labels: np.ndarray, base: _Side, cur: _Side,
             weights: np.ndarray, min_samples: int) -> None:
    """The within-task AUROC change of every reliability signal both runs score on the scope's tasks."""
    scope_tasks = list(dict.fromkeys(labels[positions]))
    in_base, in_cur = ({name for task in scope_tasks for name in side.names.get(task, [])} for side in (base, cur))
    for name in sorted(in_base ^ in_cur):
        which = "baseline" if name in in_base else "current"
        comparison.not_compared.append(f"{scope} auroc:{name}: scored by the {which} run only")
    for name in [n for n in SIGNALS if n in in_base & in_cur]:
        covered = [t for t in scope_tasks if name in base.names.get(t, []) and name in cur.names.get(t, [])]
        at = positions[np.isin(labels[positions], covered)]
        per_side = []
        for side, which in ((base, "baseline"), (cur, "current")):
            values = side.oriented(name, at)
            present = ~np.isnan(values)
            if present.sum() < min_samples:
                per_side.append(f"defined on {int(present.sum())} docs of the {which} run, fewer than "
                                f"min_samples = {min_samples}")
                continue
            tally = StratifiedTally.from_samples(values[present], side.correct[at][present], labels[at][present],
                                                 weights[:, at][:, present])
            auroc = tally.auroc()
            per_side.append(auroc if not np.isnan(auroc[0]) else
                            f"AUROC undefined in the {which} run (one class, or constant within every task)")
        problem = next((p for p in per_side if isinstance(p, str)), None)
        if problem is not None:
            comparison.not_compared.append(f"{scope} auroc:{name}: {problem}")
            continue
        _add(comparison, scope, f"auroc:{name}", per_side[0], per_side[1], len(at))


def _robustness(comparison: Comparison, keys: list[str], base: _Side, cur: _Side, weights: np.ndarray) -> None:
    """The robustness AUC change of every ablation curve both runs have (module docstring)."""
    sections = [side.run.report.get("ablation") for side in (base, cur)]
    if sections[0] is None and sections[1] is None:
        return
    problem = None
    if sections[0] is None or sections[1] is None:
        problem = f"only the {'baseline' if sections[0] is not None else 'current'} run ablated"
    elif sections[0]["settings"] != sections[1]["settings"]:
        problem = "the runs ablated with different settings"
    else:
        missing = [side.run.results_path.name for side in (base, cur) if not side.run.ablation]
        if missing:
            problem = f"no per-condition files beside {missing[0]} (run the ablation with --log_samples)"
    if problem is not None:
        comparison.not_compared.append(f"{WITHIN_TASK} robustness_auc: {problem}")
        return
    index = {key: i for i, key in enumerate(keys)}
    curves = [_robustness_curves(side, index, weights) for side in (base, cur)]
    for name in sorted(set(curves[0]) ^ set(curves[1])):
        comparison.not_compared.append(f"{WITHIN_TASK} robustness_auc:{name}: a curve of one run only")
    for name in [n for n in curves[0] if n in curves[1]]:
        if np.isnan(curves[0][name][0]) or np.isnan(curves[1][name][0]):
            comparison.not_compared.append(f"{WITHIN_TASK} robustness_auc:{name}: undefined in a run (no accuracy "
                                           "at some fraction, or a baseline accuracy of 0)")
            continue
        _add(comparison, WITHIN_TASK, f"robustness_auc:{name}", curves[0][name], curves[1][name], len(keys))


def _robustness_curves(side: _Side, index: Mapping[str, int], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Per curve ("L<layer>/<units>"), its robustness AUC under each weighting ([1 + B]; NaN where undefined),
    from ``outcomes.robustness_curves`` fed with each weighting's paired accuracy changes."""
    section = side.run.report["ablation"]
    conditions = ablation_context(section)["conditions"]
    correct = side.correct
    docs: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for task, records in side.run.ablation.items():
        for record in records:
            position = index.get(sample_key(task, record["doc_id"]))
            if position is not None and record.get("error") is None:
                docs[record["condition"]][0].append(position)
                docs[record["condition"]][1].append(float(bool(record["correct"])) - correct[position])
    accuracy = weights @ correct / weights.sum(axis=1)
    changes = {}
    for condition in conditions:
        positions, delta = docs[condition["id"]]
        w = weights[:, positions]
        total = w.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            changes[condition["id"]] = np.where(total > 0, w @ np.asarray(delta, dtype=float) / total, np.nan)
    chance = section["baseline"]["chance"]
    table: dict[str, list[float]] = defaultdict(list)
    for row in range(len(weights)):
        outcomes = [{**c, "accuracy_change": {"value": None if np.isnan(changes[c["id"]][row])
                                              else float(changes[c["id"]][row])}} for c in conditions]
        for curve in robustness_curves(outcomes, float(accuracy[row]), chance):
            value = curve["robustness_auc"]
            table[f"L{curve['layer']}/{curve['selection']}"].append(np.nan if value is None else value)
    return {name: np.array(values) for name, values in table.items()}


def write_comparison(comparison: Comparison, path: Path) -> None:
    """The comparison as JSON at ``path``, written atomically."""
    write_files_atomically({path: json_text(comparison.to_json())})
