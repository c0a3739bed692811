"""The board's charts as hand-written SVG: line charts with intervals, deterministic to the byte.

Written by hand rather than with matplotlib so that a rebuild of an unchanged board changes no file (no dates,
no random ids in the output), no text is read as mathtext (a model name may hold ``$``), and every piece of text
is escaped in one place (``_text``). A chart is a list of ``Series`` on shared axes: each a line with markers, an
optional interval per point (drawn as a shaded band, or as whiskers) and an optional dash pattern.

The charts of a run (``run_charts``) read only its report: the per-layer profiles of the ``layers`` section (mean
of each per-layer signal for correct vs incorrect samples, with CIs), the hidden-state probe's within-task AUROC
per layer (``probes``), the ablation curves of the most predictive layer (paired accuracy vs the fraction p of
destroyed units, random units with their range over seeds vs probe-ranked units, chance dashed) and the
bottleneck profile of a per-layer sweep (sensitivity = 1 - robustness AUC per layer).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vrp_bench.api.traces import LAST_PROMPT

WIDTH, HEIGHT = 520, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 40, 78
COLORS = {"correct": "#1b7837", "incorrect": "#c51b7d", "random": "#2166ac", "probe": "#b2182b",
          "reference": "#777777", "value": "#2166ac"}


@dataclass
class Series:
    """One line: points (x, y) with y None where undefined, an optional interval per point, a colour."""

    label: str
    x: Sequence[float]
    y: Sequence[float | None]
    interval: Sequence[Sequence[float] | None] | None = None
    color: str = COLORS["value"]
    dashed: bool = False
    band: bool = False
    """True: the interval is a shaded band between the points; False: whiskers at each point."""
    offset: float = 0.0
    """Horizontal shift in pixels (whiskers of two series at the same x side by side)."""


def _text(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != 0 else "0"


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """About ``count`` round tick values covering [low, high] (steps of 1, 2 or 5 times a power of ten; whole
    steps when ``integer``)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(step, 1) if integer else step
    start = math.floor(low / step) * step
    ticks = []
    tick = start
    while tick <= high + step * 1e-9 or len(ticks) < 2:
        ticks.append(round(tick, 10))
        tick += step
    if ticks[-1] < high:
        ticks.append(round(tick, 10))
    return ticks


def line_chart(title: str, x_label: str, y_label: str, series: Sequence[Series],
               y_range: tuple[float, float] | None = None, integer_x: bool = False) -> str:
    """An SVG document of ``series`` on shared axes, with a title, axis labels and a legend; ``integer_x``: whole
    x ticks only (layers)."""
    xs = [x for s in series for x in s.x]
    ys = [y for s in series for y in s.y if y is not None]
    ys += [v for s in series for pair in (s.interval or []) if pair is not None for v in pair if v is not None]
    x_ticks = nice_ticks(min(xs, default=0.0), max(xs, default=1.0), integer=integer_x)
    y_ticks = nice_ticks(*(y_range or (min(ys, default=0.0), max(ys, default=1.0))))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float, offset: float = 0.0) -> float:
        return LEFT + (x - x0) / ((x1 - x0) or 1.0) * plot_w + offset

    def py(y: float) -> float:
        return TOP + plot_h - (y - y0) / ((y1 - y0) or 1.0) * plot_h

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
              f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">'),
             f"<title>{_text(title)}</title>",
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
             f'<text x="{WIDTH / 2:.1f}" y="20" text-anchor="middle" font-size="13">{_text(title)}</text>']
    for tick in y_ticks:
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" '
                     'stroke="#e5e5e5"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">{_number(tick)}</text>')
    for tick in x_ticks:
        parts.append(f'<text x="{px(tick):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{_number(tick)}</text>')
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999999"/>')
    parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h + 34}" text-anchor="middle">'
                 f"{_text(x_label)}</text>")
    parts.append(f'<text transform="translate(16 {TOP + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 f"{_text(y_label)}</text>")
    for s in series:
        parts += _series(s, px, py)
    for index, s in enumerate(series):  # legend: one row of entries under the x label
        x = LEFT + index * (plot_w / max(len(series), 1))
        y = HEIGHT - 14
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        parts.append(f'<line x1="{x:.1f}" x2="{x + 18:.1f}" y1="{y - 4}" y2="{y - 4}" stroke="{s.color}" '
                     f'stroke-width="2"{dash}/>')
        parts.append(f'<text x="{x + 22:.1f}" y="{y}">{_text(s.label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _series(s: Series, px, py) -> list[str]:
    """The SVG elements of one series: its interval (band or whiskers), its line (broken where y is undefined)
    and its markers."""
    parts = []
    points = [(x, y) for x, y in zip(s.x, s.y)]
    intervals = list(s.interval or [None] * len(points))
    defined = [(x, pair) for x, pair in zip(s.x, intervals) if pair is not None and None not in pair]
    if s.band and len(defined) > 1:
        upper = " ".join(f"{px(x):.1f},{py(pair[1]):.1f}" for x, pair in defined)
        lower = " ".join(f"{px(x):.1f},{py(pair[0]):.1f}" for x, pair in reversed(defined))
        parts.append(f'<polygon points="{upper} {lower}" fill="{s.color}" fill-opacity="0.15" stroke="none"/>')
    elif not s.band:
        for x, (low, high) in defined:
            x_px = px(x, s.offset)
            parts.append(f'<line x1="{x_px:.1f}" x2="{x_px:.1f}" y1="{py(low):.1f}" y2="{py(high):.1f}" '
                         f'stroke="{s.color}" stroke-opacity="0.6"/>')
    dash = ' stroke-dasharray="5 3"' if s.dashed else ""
    run: list[str] = []
    for x, y in [*points, (None, None)]:
        if y is None:
            if len(run) > 1:
                parts.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{s.color}" '
                             f'stroke-width="2"{dash}/>')
            run = []
        else:
            run.append(f"{px(x, s.offset):.1f},{py(y):.1f}")
    if not s.dashed:
        parts += [f'<circle cx="{px(x, s.offset):.1f}" cy="{py(y):.1f}" r="3" fill="{s.color}"/>'
                  for x, y in points if y is not None]
    return parts


# --- the charts of one run ---------------------------------------------------------------------------------


@dataclass
class Chart:
    """A chart of a run's page: file name (without folder), caption, SVG text."""

    name: str
    caption: str
    svg: str


def layer_profile_charts(report: dict[str, Any]) -> list[Chart]:
    """Per per-layer signal of the ``layers`` section: mean (CI) by layer for correct vs incorrect samples."""
    charts = []
    for name, rows in sorted((report.get("layers") or {}).items()):
        layers = [row["layer"] for row in rows]
        series = [Series(side, layers, [row[side]["mean"] for row in rows], [row[side]["ci"] for row in rows],
                         COLORS[side], offset=offset) for side, offset in (("correct", -3.0), ("incorrect", 3.0))]
        charts.append(Chart(f"layers_{name}.svg",
                            f"{name}: mean per layer for correct vs incorrect samples (95% CIs; descriptive)",
                            line_chart(f"{name} by layer", "layer", f"mean {name}", series, integer_x=True)))
    return charts


def probe_chart(report: dict[str, Any]) -> list[Chart]:
    """The probe's within-task AUROC per layer (one fixed split per layer), chance (0.5) dashed."""
    per_layer = ((report.get("probes") or {}).get(LAST_PROMPT) or {}).get("per_layer")
    if not per_layer:
        return []
    layers = [row["layer"] for row in per_layer]
    series = [Series("probe AUROC", layers, [row["auroc"]["value"] for row in per_layer],
                     [row["auroc"]["ci"] for row in per_layer], COLORS["value"]),
              Series("chance", [layers[0], layers[-1]], [0.5, 0.5], color=COLORS["reference"], dashed=True)]
    return [Chart("probe_per_layer.svg",
                  "Within-task AUROC of a hidden-state probe per layer (last prompt position; out of fold, 95% CIs). "
                  "Choosing the best layer here is selection on the evaluation data: the ranked figure is the "
                  "nested probe's.",
                  line_chart("Probe AUROC by layer", "hidden state (HF numbering, 0 = embeddings)", "within-task AUROC",
                             series, (0.0, 1.0), True))]


def ablation_charts(report: dict[str, Any], layer: int | None) -> list[Chart]:
    """Accuracy vs destroyed fraction at ``layer`` (random units: mean over seeds with their range; probe-ranked
    units), chance dashed; and the bottleneck profile of a per-layer sweep."""
    ablation = report.get("ablation") or {}
    curves = [c for c in ablation.get("curves") or [] if c["layer"] == layer]
    charts = []
    if curves:
        chance = ablation["baseline"]["chance"]
        series = [Series(f"{c['selection']} units" + (f" ({c['n_seeds']} seeds)" if c["n_seeds"] > 1 else ""),
                         c["fractions"], c["accuracy"], c.get("accuracy_seed_range"),
                         COLORS.get(c["selection"], COLORS["value"]), band=True) for c in curves]
        series.append(Series("chance", [curves[0]["fractions"][0], curves[0]["fractions"][-1]], [chance, chance],
                             color=COLORS["reference"], dashed=True))
        space, method = curves[0]["space"], curves[0]["method"]
        charts.append(Chart(f"ablation_layer{layer}.svg",
                            f"Accuracy when a fraction p of layer {layer}'s {space} units is destroyed ({method}): "
                            "random units (shaded: range over seeds) vs units ranked by the probe",
                            line_chart(f"Ablation of layer {layer}", "fraction of units destroyed", "accuracy",
                                       series, (0.0, 1.0))))
    profile = (ablation.get("bottleneck") or {}).get("profile") or []
    if profile:
        series = [Series("sensitivity", [row["layer"] for row in profile], [row["sensitivity"] for row in profile])]
        verdict = ablation["bottleneck"].get("verdict") or "no verdict"
        charts.append(Chart("bottleneck.svg", f"Per-layer sensitivity (1 - robustness AUC of random units): {verdict}",
                            line_chart("Bottleneck profile", "layer", "sensitivity", series, integer_x=True)))
    return charts


def run_charts(report: dict[str, Any], layer: int | None) -> list[Chart]:
    """Every chart of a run's page (module docstring); ``layer``: the most predictive layer."""
    return [*layer_profile_charts(report), *probe_chart(report), *ablation_charts(report, layer)]
