"""What the board ranks, and how sure the order is: every figure from the report, every rank with an interval.

**The ranked quantities** (``QUANTITIES``), each read from the report's ``summary`` (``scoring/summary.py``, where
they are defined) or ``ablation`` section (``interventions/outcomes.py``), never recomputed another way:

- ``sc_auroc``: within-task AUROC of self-consistency, ``sc_agreement`` (the majority share of K sampled answers);
- ``signal_auroc``: within-task AUROC of the pre-registered single-pass signal ``PREREGISTERED_SIGNAL`` (``p_tok``,
  the mean log-probability of the answer tokens: the study's single-pass signal). It is fixed in advance, for
  every model: taking each model's best of some forty correlated signals would reward whichever model's noise
  happened to favour one of them (the maximum of many noisy AUROCs is biased upward, more so for small runs).
  The report's ``best_signal`` (chosen on one half of the docs, scored on the other) is shown beside it as
  information, never ranked;
- ``probe_auroc``: within-task AUROC of the held-out nested hidden-state probe (last prompt position), mean over
  cross-validation repeats; shown with its ``gain_over_task_only`` (what it knows beyond the task);
- ``robustness_auc``: the robustness AUC of the random-unit ablation curve of the most predictive layer (the
  layer the nested probe chose most often; the lowest on ties): the mean accuracy retention acc(p) / acc(0) over
  the swept fractions p of destroyed units. Shown with that curve's breaking point and the bottleneck verdict
  of a per-layer sweep (``--layer all``).

Shown, not ranked: ``probe_gain``, ``fusion_auroc`` (the fusion's per-doc out-of-fold predictions are not among
the run's files, so no rank interval can be drawn for it), ``breaking_point`` (a step on a coarse grid of p).

**The primary order** (``PRIMARY_ORDER``) is ``sc_auroc``: the signal-accuracy figure the summary lists first
(``signal_auroc``), and the fairest across models: it needs only sampled answers (any model, open or closed, with
any architecture, can give them), it is one pre-registered signal (no per-model choice) and it has no training
variance, unlike the probe, whose AUROC also depends on the hidden size and depth it is fitted on. Where it is
not defined for every comparable model (runs without self-consistency), the next of ``PRIMARY_ORDER`` defined for
all of them orders the table. The site sorts by any column.

**Rank intervals** (``rank_intervals``): B = ``RANK_RESAMPLES`` joint bootstrap replicates over the docs (every
doc of the comparable runs' shared doc set, resampled within its task, seeded by ``RANK_SEED``; one weighting w_b
applied to every model). In replicate b each model's figure is recomputed from its per-sample records under w_b:
the within-task AUROC (``stratified.StratifiedTally``) of ``sc_agreement`` and of the pre-registered signal (the
``signals`` of the samples JSONL, oriented as registered, on the tasks where they are reliability signals), of
the probe's saved out-of-fold P(correct) (the probe files, keyed by doc: the first cross-validation repeat), and
the robustness AUC from the ablation's per-condition records (paired accuracies as in ``outcomes``, mean over
random seeds). The models are ranked in each replicate (rank = 1 + the number of models with a strictly higher
figure; an undefined figure ranks last); a model's rank interval is the [2.5, 97.5] percentile interval of its B
ranks (lower / higher order statistics, so the ends are ranks). The unweighted recomputation must equal the
report's figure (to ``AGREEMENT``); a run where it does not is taken off the board with that reason (edited
after the run?). A quantity whose per-doc values are absent (no probe files, no ablation records) is shown with
the report's interval and marked as not ranked.

**Bands** (``bands``): models are listed by their figure, best first; a model joins the band of the models above
it when its rank interval overlaps the union of theirs (so overlaps chain along the sorted order); a band that
covers positions 1 and 2 is shown "1-2". Models in one band are not told apart by the data; the board never
claims an order its data cannot support.

**Comparability** (``comparable_groups``): only runs with the same comparison basis (``report.comparability``:
task names, versions, doc-set hashes, generation, signal and scoring settings) are ranked together. The board is
the largest comparable group (the earliest on ties); every other run is listed with the reasons
(``comparability.differences`` against the board's first run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vrp_bench.api.traces import LAST_PROMPT
from vrp_bench.interventions.conditions import most_chosen_layer
from vrp_bench.interventions.outcomes import robustness_auc
from vrp_bench.leaderboard.submissions import Submission
from vrp_bench.report.comparability import differences
from vrp_bench.scoring.bootstrap import resample_weights
from vrp_bench.scoring.probes import load_probes
from vrp_bench.scoring.records import (
    correctness,
    reliability_view,
    sample_key,
    scored_records,
    signal_values,
)
from vrp_bench.scoring.signal_quality import oriented
from vrp_bench.scoring.stratified import StratifiedTally
from vrp_bench.signals.catalogue import SIGNALS

SELF_CONSISTENCY = "sc_agreement"
PREREGISTERED_SIGNAL = "p_tok"
"""The single-pass signal every model is ranked by, fixed before seeing any run (module docstring)."""
PRIMARY_ORDER = ("sc_auroc", "probe_auroc", "signal_auroc")
RANK_RESAMPLES = 1000
RANK_SEED = 0
RANK_PERCENTILES = (2.5, 97.5)
AGREEMENT = 1e-9
"""Largest difference between the report's figure and its unweighted recomputation from the per-sample files."""


@dataclass(frozen=True)
class Quantity:
    """A column of the board: its key, its heading, whether it is ranked, and what it is."""

    key: str
    heading: str
    ranked: bool
    meaning: str


QUANTITIES = (
    Quantity("sc_auroc", "SC AUROC", True, f"within-task AUROC of self-consistency ({SELF_CONSISTENCY})"),
    Quantity("signal_auroc", f"{PREREGISTERED_SIGNAL} AUROC", True,
             f"within-task AUROC of the pre-registered single-pass signal ({PREREGISTERED_SIGNAL})"),
    Quantity("probe_auroc", "Probe AUROC", True,
             "within-task AUROC of the held-out nested hidden-state probe (last prompt position)"),
    Quantity("probe_gain", "Probe gain", False,
             "the probe's gain in concatenated AUROC over a task-only predictor"),
    Quantity("fusion_auroc", "Fusion AUROC", False,
             "within-task AUROC of the held-out logistic fusion of the reliability signals (not ranked)"),
    Quantity("robustness_auc", "Robustness AUC", True,
             "mean accuracy retention when random units of the most predictive layer are destroyed"),
    Quantity("breaking_point", "Breaking point", False,
             "smallest destroyed fraction p that halves the accuracy's distance to chance (not ranked)"),
)
BY_KEY = {quantity.key: quantity for quantity in QUANTITIES}


@dataclass
class Figure:
    """A value of one quantity for one run: from its report, with its interval, and its rank where ranked."""

    value: float | None
    ci: list[float] | None = None
    note: str | None = None
    """What the interval is when it is not the report's 95% CI, or why there is no value / no rank."""
    rank: tuple[int, int] | None = None
    band: str | None = None

    def text(self, digits: int = 2) -> str:
        """``0.71 [0.65, 0.77]``, ``0.71`` without an interval, ``-`` without a value."""
        if self.value is None:
            return "-"
        interval = f" [{self.ci[0]:.{digits}f}, {self.ci[1]:.{digits}f}]" if self.ci else ""
        return f"{self.value:.{digits}f}{interval}"

    def rank_text(self) -> str:
        """``rank 1-2`` (its rank interval), or ``not ranked``."""
        if self.rank is None:
            return "not ranked"
        low, high = self.rank
        return f"rank {low}" if low == high else f"rank {low}-{high}"


@dataclass
class Entry:
    """One run on the board: its figures, and what is shown beside them."""

    submission: Submission
    figures: dict[str, Figure]
    best_signal: dict[str, Any] | None
    bottleneck: str | None
    most_predictive_layer: int | None
    replicates: dict[str, np.ndarray] = field(default_factory=dict)
    """Per ranked quantity, its figure in each joint bootstrap replicate (row 0: unweighted, the check)."""

    @property
    def n(self) -> int:
        return self.submission.report["summary"]["n"]

    @property
    def accuracy(self) -> float | None:
        return self.submission.report["summary"]["accuracy"]

    def best_signal_text(self) -> str:
        """The split-half best signal as ``name 0.93 [0.86, 0.98]`` (``-`` when there is none)."""
        best = self.best_signal or {}
        return "-" if best.get("value") is None else f"{best['name']} {Figure(best['value'], best.get('ci')).text()}"


@dataclass
class Board:
    """The ranked comparable group and everything that is listed beside it."""

    entries: list[Entry]
    """The board's runs, in the primary order (unranked ones last)."""
    primary: str | None
    not_comparable: list[tuple[Submission, list[str]]]
    not_on_board: list[tuple[Submission, str]]
    resamples: int
    seed: int


def how_ranked(board: Board) -> list[str]:
    """The board's ranking rules in a few plain sentences (for the Markdown and the site; escaped there)."""
    primary = BY_KEY[board.primary].heading if board.primary else "nothing (no ranked quantity has per-doc values)"
    return [
        f"Runs are ordered by {primary}; every figure comes from the run's report (its `summary` and `ablation` "
        "sections), with its 95% interval. Ranked: " + "; ".join(
            f"{q.heading}: {q.meaning}" for q in QUANTITIES if q.ranked) + ".",
        (f"Each rank has an interval: {board.resamples} joint bootstrap replicates over the docs (resampled "
         f"within each task, seed {board.seed}, the same weighting for every run) recompute each figure from the "
         "per-sample files and rank the runs; a rank interval is the 2.5-97.5 percentile of a run's ranks. Runs "
         "whose rank intervals overlap share a band (shown as \"1-2\"): the data cannot order them."),
        (f"{PREREGISTERED_SIGNAL} is the pre-registered single-pass signal, the same for every model; the best "
         "signal (chosen on half of the docs, scored on the other half) is shown for information, never ranked. "
         "Only runs with the same tasks, task versions, doc sets and signal, generation and scoring settings are "
         "ranked together; the others are listed with the reason."),
    ]


def listed_apart(board: Board) -> list[tuple[str, str, list[tuple[Submission, str]]]]:
    """The runs listed beside the ranked board, by section: (heading, what the section means, [(run, reason)]);
    empty sections left out."""
    sections = [("Not comparable with the board",
                 "Listed, not ranked: these runs differ from the board's in what they measure.",
                 [(s, "; ".join(reasons)) for s, reasons in board.not_comparable]),
                ("Not on the board", "These runs could not be read, or their files disagree with their reports.",
                 list(board.not_on_board))]
    return [section for section in sections if section[2]]


# --- figures from the report ------------------------------------------------------------------------------


def signal_entry(summary: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The summary's ``signal_auroc`` entry of ``name``, also when it is listed under another signal that ranks
    every sample the same way (``same_ranking_as``)."""
    for listed, entry in summary["signal_auroc"].items():
        if listed == name or name in entry["same_ranking_as"]:
            return entry
    return None


def most_predictive_layer(report: dict[str, Any]) -> int | None:
    """The layer the nested probe chose in most outer folds, the lowest on ties (the ablation's ``--layer probe``)."""
    return most_chosen_layer((report.get("ablation") or {}).get("probe_chosen_layers") or [])


def robustness_curve(report: dict[str, Any]) -> dict[str, Any] | None:
    """The random-unit ablation curve of the most predictive layer (the only ablated layer when the probe chose
    none); None without one."""
    ablation = report.get("ablation") or {}
    layer = most_predictive_layer(report)
    if layer is None and len(ablation.get("layers") or []) == 1:
        layer = ablation["layers"][0]
    return next((c for c in ablation.get("curves") or [] if c["layer"] == layer and c["selection"] == "random"), None)


def _value_ci(entry: dict[str, Any] | None, missing: str) -> Figure:
    if entry is None or entry.get("value") is None:
        return Figure(None, note=(entry or {}).get("reason") or missing)
    return Figure(entry["value"], entry.get("ci"))


def reported_figures(report: dict[str, Any]) -> dict[str, Figure]:
    """Every quantity's value and interval as the report holds it (``QUANTITIES``)."""
    summary = report["summary"]
    curve = robustness_curve(report)
    figures = {
        "sc_auroc": _value_ci(signal_entry(summary, SELF_CONSISTENCY), "no self-consistency samples (--sc_samples 0?)"),
        "signal_auroc": _value_ci(signal_entry(summary, PREREGISTERED_SIGNAL), f"no {PREREGISTERED_SIGNAL} values"),
        "probe_auroc": _value_ci(summary["probe_auroc"], "no held-out probe"),
        "probe_gain": _value_ci(summary["probe_auroc"]["gain_over_task_only"], "no held-out probe"),
        "fusion_auroc": _value_ci(summary["fusion_auroc"], "no fusion"),
        "robustness_auc": Figure(None, note="no ablation (vrp-bench ablate)"),
        "breaking_point": Figure(None, note="no ablation (vrp-bench ablate)"),
    }
    if curve is None and report.get("ablation") is not None:
        for key in ("robustness_auc", "breaking_point"):
            figures[key].note = (f"the most predictive layer ({most_predictive_layer(report)}) was not ablated with "
                                 "random units")
    if curve is not None:
        seeds = [v for v in curve.get("robustness_auc_seeds") or [] if v is not None]
        figures["robustness_auc"] = Figure(
            curve["robustness_auc"], [min(seeds), max(seeds)] if len(seeds) > 1 else None,
            note="interval: range over the ablation's random seeds; not ranked (no per-condition records)")
        figures["breaking_point"] = Figure(curve["breaking_point"],
                                           note=None if curve["breaking_point"] is not None else "never breaks")
    return figures


def describe(submission: Submission) -> Entry:
    """A run's board entry from its report alone."""
    report = submission.report
    bottleneck = (report.get("ablation") or {}).get("bottleneck") or {}
    return Entry(submission, reported_figures(report), report["summary"]["best_signal"], bottleneck.get("verdict"),
                 most_predictive_layer(report))


# --- per-replicate recomputation from the per-sample files ------------------------------------------------


@dataclass(frozen=True)
class JointWeights:
    """One bootstrap weighting of the docs shared by the compared runs: row 0 all ones (the unweighted figure),
    rows 1..B the replicates; ``of(keys)`` gives the columns of the docs ``keys`` (``sample_key``)."""

    keys: dict[str, int]
    weights: np.ndarray  # [1 + B, n_docs]

    @classmethod
    def over(cls, submissions: Sequence[Submission], resamples: int, seed: int) -> JointWeights:
        """Weights over every doc any of ``submissions`` recorded, resampled within each task."""
        keys = sorted({sample_key(task, r["doc_id"]) for s in submissions for task, records in s.run.samples.items()
                       for r in records})
        tasks = [key.rsplit("/", 1)[0] for key in keys]
        replicates = resample_weights(len(keys), resamples, seed, strata=tasks).astype(float)
        return cls({key: i for i, key in enumerate(keys)}, np.vstack([np.ones((1, len(keys))), replicates]))

    def of(self, keys: Sequence[str]) -> np.ndarray:
        return self.weights[:, [self.keys[key] for key in keys]]


def within_task_auroc(values: np.ndarray, correct: np.ndarray, keys: Sequence[str], joint: JointWeights) -> np.ndarray:
    """Within-task AUROC (tasks: the ``task/`` part of each key) of the defined ``values`` under every weighting."""
    present = ~np.isnan(values)
    if not present.any():
        return np.full(len(joint.weights), np.nan)
    kept = [key for key, keep in zip(keys, present) if keep]
    tasks = [key.rsplit("/", 1)[0] for key in kept]
    return StratifiedTally.from_samples(values[present], correct[present].astype(float), tasks,
                                        joint.of(kept)).auroc()


def signal_replicates(submission: Submission, name: str, joint: JointWeights) -> np.ndarray | None:
    """A reliability signal's within-task AUROC per weighting, on the tasks the report scored it on; None when
    the report did not score it."""
    report = submission.report
    scored = report["signals"]["within_task"]["signals"].get(name)
    if scored is None:
        return None
    metadata = {task: config.get("metadata") or {} for task, config in report["configs"].items()}
    reliable = reliability_view(scored_records(submission.run.samples), metadata)
    records = [r for task in scored["tasks"] for r in reliable[task]]
    keys = [sample_key(task, r["doc_id"]) for task in scored["tasks"] for r in reliable[task]]
    spec = SIGNALS.get(name)
    values = np.array([np.nan if v is None else v for v in signal_values(records, name)], dtype=float)
    return within_task_auroc(oriented(values, spec.orientation, spec.probability), correctness(records), keys, joint)


def probe_replicates(submission: Submission, joint: JointWeights) -> tuple[np.ndarray, float] | None:
    """The nested probe's within-task AUROC per weighting from its saved out-of-fold P(correct), and the figure it
    must reproduce unweighted (the report's first repeat); None without probe files."""
    nested = (submission.report["probes"].get(LAST_PROMPT) or {}).get("nested") or {}
    repeats = (nested.get("auroc") or {}).get("repeats")
    stem = submission.run.files.probes(LAST_PROMPT)
    if not repeats or not stem.with_name(f"{stem.name}.json").is_file():
        return None
    fits = load_probes(stem)
    probability = fits.oof_probability.get("nested")
    if probability is None:
        return None
    correct = {sample_key(task, r["doc_id"]): bool(r["correct"])
               for task, records in scored_records(submission.run.samples).items() for r in records}
    keys = [str(key) for key in fits.doc_ids]
    labels = np.array([correct[key] for key in keys], dtype=int)
    return within_task_auroc(np.asarray(probability, dtype=float), labels, keys, joint), repeats[0]


def _weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    total = weights.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, weights @ values / np.where(total > 0, total, 1.0), np.nan)


def robustness_replicates(submission: Submission, joint: JointWeights) -> np.ndarray | None:
    """The robustness AUC of ``robustness_curve`` per weighting, from the ablation's per-condition records, as
    ``outcomes`` computes it: acc(0)_w the weighted baseline accuracy; a condition's paired accuracy acc(0)_w +
    the weighted mean of (ablated - baseline) correctness over the docs it answered; the mean over random seeds
    of [paired acc at p = 0, at each swept p]; ``outcomes.robustness_auc`` of that. None without the records."""
    report, run = submission.report, submission.run
    curve = robustness_curve(report)
    if curve is None or not run.ablation:
        return None
    baseline = {sample_key(task, r["doc_id"]): float(bool(r["correct"]))
                for task, records in scored_records(run.samples).items() for r in records}
    acc0 = _weighted_mean(joint.of(list(baseline)), np.array(list(baseline.values())))
    answered: dict[str, list[tuple[str, float]]] = {}
    for task, records in run.ablation.items():
        for r in records:
            key = sample_key(task, r["doc_id"])
            if key in baseline and r.get("error") is None:
                answered.setdefault(r["condition"], []).append((key, float(bool(r["correct"]))))

    def paired(condition: str) -> np.ndarray:
        pairs = answered.get(condition, [])
        change = np.array([ablated - baseline[key] for key, ablated in pairs])
        return acc0 + _weighted_mean(joint.of([key for key, _ in pairs]), change)

    same = {k: curve[k] for k in ("layer", "space", "method")}
    units = [c for c in report["ablation"]["conditions"]
             if c["kind"] == "units" and all(c[k] == v for k, v in same.items())]
    start = next((c for c in units if c["fraction"] == 0.0), None)
    zero = paired(start["id"]) if start is not None else acc0
    swept = sorted({c["fraction"] for c in units if c["selection"] == "random" and c["fraction"] > 0})
    seeds = sorted({c["seed"] for c in units if c["selection"] == "random" and c["fraction"] > 0})
    by_id = {(c["seed"], c["fraction"]): c["id"] for c in units if c["selection"] == "random"}
    table = np.array([[zero, *(paired(by_id[(seed, p)]) for p in swept)] for seed in seeds])  # [seeds, 1 + p, 1 + B]
    mean = table.mean(axis=0)
    fractions = [0.0, *swept]
    return np.array([np.nan if (auc := robustness_auc(fractions, mean[:, b], acc0[b])) is None else auc
                     for b in range(mean.shape[1])])


Recompute = Callable[[Submission, JointWeights], Any]
"""(submission, weights) -> (replicates with row 0 unweighted, the report figure row 0 must equal), or None."""


def _recomputations() -> dict[str, Recompute]:
    """Per ranked quantity: (replicates with row 0 unweighted, the report figure row 0 must equal) or None."""

    def signal(name: str) -> Recompute:
        def recompute(submission: Submission, joint: JointWeights):
            rows = signal_replicates(submission, name, joint)
            entry = signal_entry(submission.report["summary"], name)
            return None if rows is None or entry is None else (rows, entry["value"])
        return recompute

    def robustness(submission: Submission, joint: JointWeights):
        rows = robustness_replicates(submission, joint)
        return None if rows is None else (rows, robustness_curve(submission.report)["robustness_auc"])

    return {"sc_auroc": signal(SELF_CONSISTENCY), "signal_auroc": signal(PREREGISTERED_SIGNAL),
            "probe_auroc": probe_replicates, "robustness_auc": robustness}


def _agrees(recomputed: float, reported: float) -> bool:
    return not np.isnan(recomputed) and abs(recomputed - reported) <= AGREEMENT


def attach_replicates(entry: Entry, joint: JointWeights) -> str | None:
    """Fill ``entry.replicates`` for every ranked quantity with per-doc values on disk; the first disagreement
    between a report figure and its recomputation, as a reason, or None."""
    for key, recompute in _recomputations().items():
        found = recompute(entry.submission, joint)
        if found is None or found[1] is None:  # no per-doc values, or the report has no figure (too few samples)
            continue
        rows, reported = found
        if not _agrees(float(rows[0]), reported):
            return (f"its {BY_KEY[key].heading} {reported} is not what its per-sample files give "
                    f"({float(rows[0])}): edited after the run?")
        entry.replicates[key] = rows[1:]
        figure = entry.figures[key]
        if key == "robustness_auc":
            figure.ci = _percentile_interval(rows[1:])
            figure.note = "interval: 95% bootstrap over docs (the report has none)"
    return None


def _percentile_interval(replicates: np.ndarray) -> list[float] | None:
    defined = replicates[~np.isnan(replicates)]
    return [float(v) for v in np.percentile(defined, RANK_PERCENTILES)] if len(defined) else None


# --- ranks and bands ------------------------------------------------------------------------------------------


def rank_intervals(replicates: np.ndarray) -> list[tuple[int, int]]:
    """Per model (row of ``replicates`` [M, B]), the [2.5, 97.5] percentile interval of its rank over the
    replicates; rank = 1 + the number of models with a strictly higher figure, an undefined (NaN) figure last."""
    figures = np.where(np.isnan(replicates), -np.inf, replicates)
    ranks = 1 + (figures[None, :, :] > figures[:, None, :]).sum(axis=1)  # [M, B]: models above model m
    low = np.percentile(ranks, RANK_PERCENTILES[0], axis=1, method="lower")
    high = np.percentile(ranks, RANK_PERCENTILES[1], axis=1, method="higher")
    return [(int(lo), int(hi)) for lo, hi in zip(low, high)]


def bands(intervals: Sequence[tuple[int, int]]) -> list[str]:
    """Band labels of models listed best first with these rank intervals (module docstring): "1-2" for a band
    over positions 1 and 2, "3" for a model alone in its band."""
    members: list[list[int]] = []
    reach = -np.inf
    for position, (low, high) in enumerate(intervals, start=1):
        if members and low <= reach:
            members[-1].append(position)
            reach = max(reach, high)
        else:
            members.append([position])
            reach = high
    return [str(band[0]) if len(band) == 1 else f"{band[0]}-{band[-1]}" for band in members for _ in band]


def _rankable(entry: Entry, key: str) -> bool:
    return entry.figures[key].value is not None and key in entry.replicates


def rank_quantity(entries: Sequence[Entry], key: str) -> list[Entry]:
    """Give each entry with a figure and replicates of ``key`` its rank interval and band; returns those entries
    best first (the others are marked not ranked)."""
    ranked = sorted((e for e in entries if _rankable(e, key)),
                    key=lambda e: (-e.figures[key].value, e.submission.name, e.submission.slug))
    for entry in entries:
        if not _rankable(entry, key) and entry.figures[key].value is not None and entry.figures[key].note is None:
            entry.figures[key].note = "not ranked: its per-doc values are not among the submitted files"
    if not ranked:
        return []
    intervals = rank_intervals(np.vstack([e.replicates[key] for e in ranked]))
    for entry, interval, band in zip(ranked, intervals, bands(intervals)):
        entry.figures[key].rank, entry.figures[key].band = interval, band
    return ranked


def comparable_groups(submissions: Sequence[Submission]) -> list[list[Submission]]:
    """The runs partitioned by comparison basis (each joins the first group it can be compared with), in order."""
    groups: list[list[Submission]] = []
    for submission in submissions:
        group = next((g for g in groups if not differences(g[0].report, submission.report)), None)
        if group is None:
            groups.append([submission])
        else:
            group.append(submission)
    return groups


def primary_quantity(entries: Sequence[Entry]) -> str | None:
    """The first of ``PRIMARY_ORDER`` ranked for every entry; else the first ranked for any; else None."""
    for every in (all, any):
        found = next((key for key in PRIMARY_ORDER if entries and every(_rankable(e, key) for e in entries)), None)
        if found is not None:
            return found
    return None


def rank_board(submissions: Sequence[Submission], resamples: int = RANK_RESAMPLES, seed: int = RANK_SEED) -> Board:
    """The board of the module docstring from every submitted run."""
    not_on_board = [(s, s.problem) for s in submissions if s.problem is not None]
    groups = comparable_groups([s for s in submissions if s.problem is None])
    board = max(groups, key=len) if groups else []  # max keeps the earliest of equal sizes
    not_comparable = [(s, differences(board[0].report, s.report)) for g in groups if g is not board for s in g]
    entries = []
    joint = JointWeights.over(board, resamples, seed) if board else None
    for submission in board:
        entry = describe(submission)
        problem = attach_replicates(entry, joint)
        if problem is None:
            entries.append(entry)
        else:
            not_on_board.append((submission, problem))
    orders = {quantity.key: rank_quantity(entries, quantity.key) for quantity in QUANTITIES if quantity.ranked}
    primary = primary_quantity(entries)
    if primary is not None:
        entries = orders[primary] + [e for e in entries if e not in orders[primary]]
    return Board(entries, primary, not_comparable, not_on_board, resamples, seed)
