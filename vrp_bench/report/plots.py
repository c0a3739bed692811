"""The pictures of a run, as PNG: matplotlib drawing on its Agg canvas directly (no pyplot: no global backend or
figure state is touched).

Each picture function reads ``report.plot_inputs.PlotInputs`` and returns ``Picture``s: a file name, a caption
saying what it shows, and the PNG, or, where the run lacks the data, the reason it was skipped (never an
exception). Deterministic for a run: the only random draws are the bootstrap bands of the per-task layer profiles,
seeded with the run's scoring seed; sizes, fonts and colours are fixed, no text is read as mathtext (a prediction
may hold ``$``), and no date or software version is written into a file.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from vrp_bench.api.errors import UsageError
from vrp_bench.api.traces import ATTENTION_MAPS
from vrp_bench.report.plot_inputs import PlotInputs, ShownDoc, recreated_task, resolve_layers, shown_docs
from vrp_bench.scoring.calibration import uniform_bins
from vrp_bench.scoring.records import concatenated_records, correctness, reliability_view, signal_values
from vrp_bench.scoring.sections import layer_profiles
from vrp_bench.scoring.signal_quality import oriented
from vrp_bench.scoring.stratified import StratifiedTally
from vrp_bench.signals.catalogue import SIGNALS
from vrp_bench.signals.spec import SignalSpec

STYLE = {"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7, "text.parse_math": False,
         "savefig.dpi": 100, "axes.spines.top": False, "axes.spines.right": False}
COLORS = {"correct": "tab:green", "incorrect": "tab:pink", "random": "tab:blue", "probe": "tab:red",
          "reference": "tab:gray"}
LINES = ("tab:blue", "tab:orange", "tab:purple", "tab:brown")
BOX_COLOR = "#00e5ff"
"""The outline of ground-truth boxes on the heatmaps (cyan: absent from the colour map and from the shapes)."""
ATTENTION_CMAP, ATTENTION_ALPHA = "magma", 0.6
STACKS = {"answer_attention_mean": "decoder", "vision_attention": "vision"}
"""The heatmaps' attention maps (``api.traces.ATTENTION_MAPS``) by the stack they come from."""
PER_SIDE = 2
"""Heatmaps show the first this many correct and the first this many wrong samples of a task (by doc id)."""
TOP_SIGNALS = 4
"""Risk-coverage curves are drawn for this many reliability signals of highest within-task AUROC."""
COVERAGES = np.linspace(0.02, 1.0, 50)
PROFILES = ("h_s_layers", "delta_h_s_layers", "gaze_divergence_layers", "residual_update_image_layers",
            "margin_attention_layers", "margin_mlp_layers")
"""The per-layer signals drawn by layer (of ``scoring.sections.LAYER_PROFILES``, the report's ``layers``): attention
structure, the detachment of the decoder's gaze from the encoder's, the forcing profile at the image tokens and the
blocks' contributions to the truth margin's change."""
DECODER_LAYER = "decoder layer (HF output_attentions numbering)"
X_LABELS = {"delta_h_s_layers": "decoder layer i (change from layer i to i + 1)"}
NO_TRACES = "no traces file for this task (run with --save_traces; a model that captures nothing writes none)"


@dataclass(frozen=True)
class Picture:
    """One figure of the run: drawn (``png``) or skipped (``skipped``: why)."""

    name: str
    """File name, e.g. ``probe_per_layer.png``."""
    caption: str
    png: bytes | None = None
    skipped: str | None = None


def _draw(name: str, caption: str, size: tuple[float, float], draw: Callable[[Figure], None]) -> Picture:
    """A picture drawn by ``draw`` on a fresh figure of ``size`` inches, in ``STYLE``."""
    with rc_context(STYLE):
        figure = Figure(figsize=size, layout="constrained")
        draw(figure)
        buffer = io.BytesIO()
        FigureCanvasAgg(figure).print_png(buffer, metadata={"Software": None})
    return Picture(name, caption, buffer.getvalue())


def _panels(figure: Figure, n: int, columns: int = 3) -> list[Axes]:
    """``n`` axes in rows of ``columns``; the grid's unused cells are hidden."""
    rows = math.ceil(n / columns)
    grid = figure.subplots(rows, min(n, columns), squeeze=False).ravel()
    for axes in grid[n:]:
        axes.set_visible(False)
    return list(grid[:n])


def _size(n: int, columns: int = 3, panel: tuple[float, float] = (3.2, 2.5)) -> tuple[float, float]:
    return panel[0] * min(n, columns), panel[1] * math.ceil(n / columns)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _line(axes: Axes, x: Sequence[float], y: Sequence[Any], intervals: Sequence[Any] | None, label: str,
          color: str) -> None:
    """A line with markers (None: a gap) and, where intervals are given, a shaded band."""
    axes.plot(x, [_number(v) for v in y], marker="o", markersize=3, color=color, label=label)
    if intervals is not None:
        low = [_number(ci[0]) if ci else math.nan for ci in intervals]
        high = [_number(ci[1]) if ci else math.nan for ci in intervals]
        axes.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)


# --- layer profiles -------------------------------------------------------------------------------------------


def layer_profile_pictures(inputs: PlotInputs) -> list[Picture]:
    """Per signal of ``PROFILES``: its mean per layer for correct vs incorrect samples with 95% bootstrap bands;
    first all tasks together (the report's ``layers`` section), then each task alone
    (``scoring.sections.layer_profiles`` of its records, with the run's seed)."""
    per_task = {task: layer_profiles(records, inputs.settings) for task, records in inputs.samples.items()}
    pictures = []
    for name in PROFILES:
        file_name = f"layers_{name}.png"
        caption = (f"{name}: mean per layer for correct vs incorrect samples (95% bootstrap CI bands; descriptive); "
                   "first all tasks together (the report's layers section), then each task alone.")
        pooled = (inputs.report.get("layers") or {}).get(name)
        if not pooled:
            pictures.append(Picture(file_name, caption, skipped=f"no sample has a complete {name} (it needs the "
                                                                 "attention maps, or boxes, the signal reads)"))
            continue
        panels = [("all tasks", pooled), *((task, profiles[name]) for task, profiles in per_task.items()
                                           if name in profiles)]

        def draw(figure: Figure, name: str = name, panels: list[tuple[str, Any]] = panels) -> None:
            for axes, (title, rows) in zip(_panels(figure, len(panels)), panels):
                layers = [row["layer"] for row in rows]
                for side in ("correct", "incorrect"):
                    _line(axes, layers, [row[side]["mean"] for row in rows], [row[side]["ci"] for row in rows],
                          f"{side} (n={rows[0][side]['n']})", COLORS[side])
                axes.set(title=title, xlabel=X_LABELS.get(name, DECODER_LAYER), ylabel=f"mean {name}", xticks=layers)
                axes.legend()

        pictures.append(_draw(file_name, caption, _size(len(panels)), draw))
    return pictures


# --- attention heatmaps ---------------------------------------------------------------------------------------


def draw_attention(axes: Axes, image: Image.Image, attention: np.ndarray, boxes: Sequence[Sequence[float]]) -> None:
    """``image`` in its pixel coordinates, ``attention`` ([rows, cols] on the patch grid, which splits the image
    evenly, as ``signals.grounding`` reads it) blown up over it cell by cell, scaled to its own maximum and
    alpha-blended, and each ground-truth box [x0, y0, x1, y1) outlined in ``BOX_COLOR`` on its pixel edges."""
    width, height = image.size
    extent = (0, width, height, 0)
    axes.imshow(np.asarray(image.convert("RGB")), extent=extent, interpolation="nearest")
    weights = np.nan_to_num(np.asarray(attention, dtype=float), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0.0)
    if weights.max() > 0:
        axes.imshow(weights, extent=extent, interpolation="nearest", cmap=ATTENTION_CMAP, alpha=ATTENTION_ALPHA,
                    vmin=0.0, vmax=weights.max())
    for x0, y0, x1, y1 in boxes:
        axes.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=BOX_COLOR, linewidth=1.5))
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_xticks([])
    axes.set_yticks([])


def shown_samples(records: Sequence[dict[str, Any]], doc_ids: set[int]) -> list[dict[str, Any]]:
    """The first ``PER_SIDE`` correct and the first ``PER_SIDE`` wrong records (by doc id) among ``doc_ids``."""
    ordered = sorted((r for r in records if r["doc_id"] in doc_ids), key=lambda r: r["doc_id"])
    return [*[r for r in ordered if r["correct"]][:PER_SIDE], *[r for r in ordered if not r["correct"]][:PER_SIDE]]


def _short(text: Any, limit: int = 18) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def attention_pictures(inputs: PlotInputs, layers: Sequence[int] | None = None) -> list[Picture]:
    """Per task: where the model looked, for its first ``PER_SIDE`` correct and first ``PER_SIDE`` wrong samples
    (rows): the decoder's attention from the answer tokens to the image (mean over answer tokens and heads) and the
    vision encoder's attention, at ``layers`` of each (negative: from the last; default first, middle, last), over
    the image the model saw, with the ground-truth boxes outlined. A layer that no stack has is a ``UsageError``."""
    if not inputs.samples:
        return [Picture("attention.png", "Attention heatmaps",
                        skipped="the run has no per-sample files (run with --log_samples)")]
    pictures = []
    for task, records in inputs.samples.items():
        name = f"attention_{task}.png"
        caption = (f"{task}: attention over the image at chosen layers for the first {PER_SIDE} correct and the first "
                   f"{PER_SIDE} wrong samples (by doc id); each map on its patch grid, scaled to its own maximum; "
                   "ground-truth boxes outlined.")
        maps = inputs.attention.get(task)
        if maps is None:
            pictures.append(Picture(name, caption, skipped=NO_TRACES))
            continue
        if not maps:
            pictures.append(Picture(name, caption, skipped="its traces file holds no attention maps (the model "
                                                           "captured none, or the file predates saved maps)"))
            continue
        columns, notes = _attention_columns(maps, layers)
        chosen = shown_samples(records, {doc_id for by_doc in maps.values() for doc_id in by_doc})
        try:
            docs, problems = shown_docs(inputs.report, recreated_task(inputs.report, task), chosen)
        except UsageError as exc:
            pictures.append(Picture(name, caption, skipped=f"its images cannot be re-created: {exc}"))
            continue
        rows = [r for r in chosen if r["doc_id"] in docs]
        notes += [problems[r["doc_id"]] for r in chosen if r["doc_id"] in problems]
        caption += "".join(f" {note}." for note in notes)
        if not rows:
            pictures.append(Picture(name, caption, skipped="none of its chosen docs could be re-created"))
            continue

        def draw(figure: Figure, rows: list[dict[str, Any]] = rows, columns: list[tuple[str, int, str]] = columns,
                 maps: dict[str, dict[int, np.ndarray]] = maps, docs: dict[int, ShownDoc] = docs) -> None:
            grid = figure.subplots(len(rows), len(columns), squeeze=False)
            for index, (row, record) in enumerate(zip(grid, rows)):
                doc_id = record["doc_id"]
                for axes, (field, layer, title) in zip(row, columns):
                    sample = maps[field].get(doc_id)
                    if sample is None:
                        axes.text(0.5, 0.5, "no saved map", ha="center", va="center", transform=axes.transAxes)
                        axes.set(xticks=[], yticks=[])
                    else:
                        draw_attention(axes, docs[doc_id].image, sample[layer], docs[doc_id].boxes)
                    if index == 0:
                        axes.set_title(title)
                verdict = "right" if record["correct"] else "wrong"
                row[0].set_ylabel(f"doc {doc_id}: {verdict}\n{_short(record['prediction'])}\n"
                                  f"(target {_short(record['target'])})")

        pictures.append(_draw(name, caption, (1.6 * len(columns) + 1.2, 1.6 * len(rows) + 0.4), draw))
    return pictures


def _attention_columns(maps: dict[str, dict[int, np.ndarray]], layers: Sequence[int] | None
                       ) -> tuple[list[tuple[str, int, str]], list[str]]:
    """The heatmap columns (map, layer, title) of ``layers`` in each stack the task has maps of, and a note per
    stack lacking some of them; ``UsageError`` when no stack has any of them."""
    columns, notes, depths = [], [], []
    for field in ATTENTION_MAPS:
        if not maps.get(field):
            continue
        depth = len(next(iter(maps[field].values())))
        shown, missing = resolve_layers(layers, depth)
        columns += [(field, layer, f"{STACKS[field]} layer {layer}") for layer in shown]
        depths.append(f"{STACKS[field]} 0..{depth - 1}")
        if missing:
            notes.append(f"the {STACKS[field]} has no layer {', '.join(map(str, missing))} (layers 0..{depth - 1})")
    if not columns:
        raise UsageError(f"--layers {','.join(map(str, layers or ()))}: no such layer (layers: {'; '.join(depths)})")
    return columns, notes


# --- calibration and selective prediction ---------------------------------------------------------------------


def reliability_picture(inputs: PlotInputs) -> Picture:
    """Reliability diagrams of the probability signals (``SignalSpec.probability``: sc_agreement, p_tok_prob):
    per equal-width bin (the report's binning) the observed rate of being right (sc_agreement: of its majority
    answer, which it is calibrated against) against the mean stated probability, marker area by bin count, the
    diagonal is perfect calibration; all tasks' samples pooled, with the report's within-task ECE in the title."""
    name = "reliability.png"
    caption = ("Reliability diagrams of the probability signals: observed rate of being right vs mean stated "
               "probability per bin (marker area: samples in the bin; diagonal: perfect calibration); all tasks' "
               "samples pooled, the titles give the report's within-task ECE.")
    if not inputs.samples:
        return Picture(name, caption, skipped="the run has no per-sample files (run with --log_samples)")
    records, _ = concatenated_records(inputs.samples)
    diagrams = []
    for _, spec in SIGNALS.items():
        if spec.probability:
            p, y = _calibration_pairs(records, spec)
            if len(p):
                diagrams.append((spec.name, p, y))
    if not diagrams:
        return Picture(name, caption, skipped="no probability signal has values (self-consistency off and no "
                                              "token log-probabilities captured?)")
    n_bins = inputs.settings.options().n_bins
    statistics = ((inputs.report.get("signals") or {}).get("within_task") or {}).get("signals") or {}

    def draw(figure: Figure) -> None:
        for axes, (signal, p, y) in zip(_panels(figure, len(diagrams)), diagrams):
            bins = uniform_bins(p, n_bins)
            count = np.bincount(bins, minlength=n_bins)
            used = count > 0
            stated = np.bincount(bins, weights=p, minlength=n_bins)[used] / count[used]
            observed = np.bincount(bins, weights=y, minlength=n_bins)[used] / count[used]
            axes.plot([0, 1], [0, 1], linestyle="--", color=COLORS["reference"], linewidth=1)
            axes.plot(stated, observed, color=LINES[0], linewidth=1)
            axes.scatter(stated, observed, s=12 + 120 * count[used] / count.max(), color=LINES[0], zorder=3,
                         clip_on=False)
            axes.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"mean {signal} in bin", ylabel="observed rate right",
                     title="\n".join([f"{signal} (n={len(p)})", _ece_text(statistics.get(signal))]).strip())

    return _draw(name, caption, _size(len(diagrams), panel=(3.4, 3.4)), draw)


def _calibration_pairs(records: Sequence[dict[str, Any]], spec: SignalSpec) -> tuple[np.ndarray, np.ndarray]:
    """(oriented probability, 0/1 label) of every record where both are defined; the label is the signal's
    ``calibrated_against`` when it has one, else the record's correctness."""
    values = signal_values(records, spec.name)
    labels = ([r["correct"] for r in records] if spec.calibrated_against is None
              else [(r.get("signals") or {}).get(spec.calibrated_against) for r in records])
    kept = [(v, bool(y)) for v, y in zip(values, labels) if v is not None and y is not None]
    p = oriented(np.array([v for v, _ in kept], dtype=float), spec.orientation, True)
    return p, np.array([y for _, y in kept], dtype=float)


def _ece_text(entry: dict[str, Any] | None) -> str:
    """The report's within-task calibration of a signal, a line per statistic ("" when it has none)."""
    statistics = (entry or {}).get("statistics") or {}
    raw, debiased = statistics.get("ece") or {}, statistics.get("ece_l2_debiased") or {}
    parts = []
    if raw.get("value") is not None:
        expected = (raw.get("expected_if_calibrated") or {}).get("mean")
        parts.append(f"ECE {raw['value']:.3f}" + (f" (calibrated ~{expected:.3f})" if expected is not None else ""))
    if debiased.get("value") is not None:
        ci = debiased.get("ci")
        parts.append(f"L2 debiased {debiased['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
    return "\n".join(parts)


def risk_coverage_picture(inputs: PlotInputs) -> Picture:
    """Risk-coverage curves of the ``TOP_SIGNALS`` reliability signals of highest within-task AUROC (the report's
    ``summary``): keeping the most confident share c of each task's samples, the error rate among those kept,
    within task as the report computes selective accuracy (``scoring.stratified``: the per-task rates weighted by
    task size, ties broken in expectation); the error rate without abstention dashed."""
    name = "risk_coverage.png"
    caption = (f"Risk-coverage curves of the {TOP_SIGNALS} reliability signals with the highest within-task AUROC: "
               "error rate among the most confident share of each task's samples (within task, sample-weighted "
               "over the tasks where the signal ranks both classes); dashed: no abstention.")
    if not inputs.samples:
        return Picture(name, caption, skipped="the run has no per-sample files (run with --log_samples)")
    ranked = sorted(((signal, entry["value"]) for signal, entry in inputs.report["summary"]["signal_auroc"].items()
                     if entry.get("value") is not None), key=lambda item: (-item[1], item[0]))[:TOP_SIGNALS]
    if not ranked:
        return Picture(name, caption, skipped="the summary scores no reliability signal")
    metadata = {task: config.get("metadata") or {} for task, config in inputs.report["configs"].items()}
    records, tasks = concatenated_records(reliability_view(inputs.samples, metadata))
    correct = correctness(records)

    def draw(figure: Figure) -> None:
        axes = figure.subplots()
        for color, (signal, auroc) in zip(LINES, ranked):
            spec, values = SIGNALS.get(signal), signal_values(records, signal)
            kept = np.array([v is not None for v in values])
            confidence = oriented(np.array([v for v in values if v is not None], dtype=float), spec.orientation,
                                  spec.probability)
            tally = StratifiedTally.from_samples(confidence, correct[kept], np.asarray(tasks)[kept])
            risk = [1.0 - tally.selective_accuracy(c)[0] for c in COVERAGES]
            axes.plot(COVERAGES, risk, color=color, label=f"{signal} (AUROC {auroc:.2f}, n={int(kept.sum())})")
        axes.axhline(1.0 - correct.mean(), linestyle="--", color=COLORS["reference"],
                     label=f"no abstention (all {len(correct)} samples)")
        axes.set(xlim=(0, 1), ylim=(0, None), xlabel="coverage (share of samples kept)", ylabel="error rate kept",
                 title="Risk vs coverage (within task)")
        axes.legend()

    return _draw(name, caption, (5.5, 3.6), draw)


# --- probes and ablation --------------------------------------------------------------------------------------


def probe_picture(inputs: PlotInputs) -> Picture:
    """The hidden-state probes' within-task AUROC per layer (out of fold, 95% CI bands), one line per position,
    each nested probe's AUROC (its layer chosen inside the cross-validation) dotted, chance (0.5) dashed."""
    name = "probe_per_layer.png"
    caption = ("Within-task AUROC of a hidden-state probe per layer (out of fold, 95% CI bands), per position; "
               "dotted: the nested probe (layer chosen inside the cross-validation), the figure the summary reports.")
    probes = {position: entry for position, entry in (inputs.report.get("probes") or {}).items() if entry}
    drawn = {position: entry for position, entry in probes.items() if entry.get("per_layer")}
    if not drawn:
        reasons = "; ".join(f"{position}: {entry['reason']}" for position, entry in probes.items() if entry.get("reason"))
        return Picture(name, caption, skipped=reasons or "the run has no hidden-state probes (no hidden states "
                                                          "captured)")

    def draw(figure: Figure) -> None:
        axes = figure.subplots()
        for color, (position, entry) in zip(LINES, sorted(drawn.items())):
            rows = entry["per_layer"]
            layers = [row["layer"] for row in rows]
            _line(axes, layers, [row["auroc"]["value"] for row in rows], [row["auroc"]["ci"] for row in rows],
                  position, color)
            nested = ((entry.get("nested") or {}).get("auroc") or {}).get("value")
            if nested is not None:
                axes.axhline(nested, linestyle=":", color=color, label=f"{position} nested ({nested:.2f})")
        axes.axhline(0.5, linestyle="--", color=COLORS["reference"], label="chance")
        axes.set(ylim=(0, 1), xlabel="hidden state (HF numbering: 0 = embeddings)", ylabel="within-task AUROC",
                 title="Probe AUROC by layer",
                 xticks=sorted({row["layer"] for entry in drawn.values() for row in entry["per_layer"]}))
        axes.legend()

    return _draw(name, caption, (5.5, 3.6), draw)


def ablation_picture(inputs: PlotInputs) -> Picture:
    """Accuracy retention acc(p) / acc(0) when a fraction p of a layer's units is destroyed, one panel per ablated
    layer: random units (mean over seeds; shaded: their range) vs units ranked by the probe, with each curve's
    robustness AUC; chance's retention dashed (the report's ``ablation`` curves, paired accuracy)."""
    name = "ablation_retention.png"
    caption = ("Accuracy retention acc(p) / acc(0) when a fraction p of a layer's units is destroyed: random units "
               "(shaded: range over seeds) vs probe-ranked units, per ablated layer; dashed: chance.")
    ablation = inputs.report.get("ablation")
    if ablation is None:
        return Picture(name, caption, skipped="the run did not ablate (run with --ablate, or `vrp-bench ablate`)")
    curves = ablation.get("curves") or []
    if not curves:
        return Picture(name, caption, skipped="the ablation destroyed no units (patch masking only)")
    layers = sorted({curve["layer"] for curve in curves})
    chance = ablation["baseline"]["chance"]

    def draw(figure: Figure) -> None:
        for axes, layer in zip(_panels(figure, len(layers)), layers):
            shown = [c for c in curves if c["layer"] == layer]
            base = dict(zip(shown[0]["fractions"], shown[0]["accuracy"])).get(0.0)
            for curve in shown:
                retention = [None if a is None or not base else a / base for a in curve["accuracy"]]
                spread = curve.get("accuracy_seed_range")
                band = [[low / base, high / base] for low, high in spread] if spread and base else None
                auc = curve.get("robustness_auc")
                seeds = f", {curve['n_seeds']} seeds" if curve["n_seeds"] > 1 else ""
                _line(axes, curve["fractions"], retention, band,
                      f"{curve['selection']} units{seeds}" + (f" (AUC {auc:.2f})" if auc is not None else ""),
                      COLORS.get(curve["selection"], LINES[0]))
            if base:
                axes.axhline(chance / base, linestyle="--", color=COLORS["reference"], label="chance")
            axes.set(xlim=(0, 1), ylim=(0, None), xlabel="fraction of units destroyed", ylabel="accuracy retention",
                     title=f"hidden state {layer} ({shown[0]['space']}, {shown[0]['method']})")
            axes.legend()

    return _draw(name, caption, _size(len(layers)), draw)


def run_pictures(inputs: PlotInputs, layers: Sequence[int] | None = None) -> list[Picture]:
    """Every picture of a run, in the order the HTML report shows them; ``layers``: the heatmaps' layers."""
    return [*attention_pictures(inputs, layers), *layer_profile_pictures(inputs), reliability_picture(inputs),
            risk_coverage_picture(inputs), probe_picture(inputs), ablation_picture(inputs)]
