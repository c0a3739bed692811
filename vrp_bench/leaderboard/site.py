"""The static site: ``index.html`` (the board, sortable) and a page per run with its charts.

Layout (every link relative, so the site works opened from disk as well as served):

- ``index.html``: the ranked board (band, model, each quantity as value [95% interval] with its rank interval,
  bottleneck, best signal, accuracy, n), how it is ranked, the runs that are not comparable and those not on the
  board, each with the reason. Clicking a column heading sorts the rows by it (again: the other way); cells carry
  their sort key in ``data-value``, so a value sorts as a number, not as text.
- ``models/<slug>.html``: one run: provenance, its board figures and ranks, every reliability signal's
  within-task AUROC, the verdicts, and its charts (``figures``), as ``models/<slug>/<chart>.svg``.

Safety: every text from a report (names, reasons, verdicts) goes through ``html.escape``; the pages load nothing
from the network: inline CSS, one inline script of a few lines (no library), SVG images beside the page. A
Content-Security-Policy allows exactly that (``report.html_page``, the page skeleton shared with the run report):
no source but the page's own folder for images, and only the sorter script, by its sha256 (``script-src
'sha256-...'``), so even an injected inline script or event handler would not run. No page holds anything that
changes between two builds of the same submissions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from vrp_bench.leaderboard.figures import run_charts
from vrp_bench.leaderboard.ranking import (
    QUANTITIES,
    Board,
    Entry,
    Figure,
    how_ranked,
    listed_apart,
    robustness_curve,
)
from vrp_bench.leaderboard.submissions import Submission
from vrp_bench.report.html_page import escape, page, prose, table

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 80rem; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.35rem 0.6rem; text-align: left; vertical-align: top; }
table.board th { cursor: pointer; user-select: none; background: #f4f4f4; }
table.board th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.board th[aria-sort="descending"]::after { content: " \\25BC"; }
td small { color: #666; }
figure { display: inline-block; margin: 0.5rem 1rem 1rem 0; max-width: 520px; vertical-align: top; }
figcaption { font-size: 0.85rem; color: #444; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""
SORTER = """
document.querySelectorAll("table.board").forEach(function (table) {
  var headings = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(headings, function (heading, column) {
    function sort() {
      var ascending = heading.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(headings, function (h) { h.removeAttribute("aria-sort"); });
      heading.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var numeric = heading.dataset.type === "number";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    }
    heading.tabIndex = 0;
    heading.addEventListener("click", sort);
    heading.addEventListener("keydown", function (event) { if (event.key === "Enter") { sort(); } });
  });
});
"""


def _cell(value: Any, text: str, extra: str = "") -> str:
    key = "" if value is None else escape(value)
    return f'<td data-value="{key}">{text}{extra}</td>'


def _figure_cell(figure: Figure) -> str:
    rank = f"<br><small>{escape(figure.rank_text())}</small>" if figure.rank else ""
    title = f' title="{escape(figure.note)}"' if figure.note else ""
    key = "" if figure.value is None else repr(figure.value)
    return f'<td data-value="{key}"{title}>{escape(figure.text())}{rank}</td>'


def _link(submission: Submission, label: str | None = None) -> str:
    """A link to the run's page, showing ``label`` (default: its name)."""
    return f'<a href="models/{escape(submission.slug)}.html">{escape(submission.name if label is None else label)}</a>'


def _band_position(band: str | None) -> int | None:
    return None if band is None else int(band.split("-")[0])


def board_table(board: Board) -> list[str]:
    """The sortable table of the ranked runs."""
    names = [e.submission.name for e in board.entries]
    headings = [("Band", "number"), ("Model", "text"), *((q.heading, "number") for q in QUANTITIES),
                ("Bottleneck", "text"), ("Best signal (split-half)", "number"), ("Accuracy", "number"), ("n", "number")]
    meanings = {q.heading: q.meaning for q in QUANTITIES}
    head = "".join(f'<th scope="col" data-type="{kind}" title="{escape(meanings.get(text, text))}">{escape(text)}</th>'
                   for text, kind in headings)
    rows = []
    for entry in board.entries:
        band = entry.figures[board.primary].band if board.primary else None
        best = entry.best_signal or {}
        label = entry.submission.label(names)
        rows.append("<tr>" + "".join([
            _cell(_band_position(band), escape(band or "-")),
            _cell(label, _link(entry.submission, label)),
            *(_figure_cell(entry.figures[q.key]) for q in QUANTITIES),
            _cell(entry.bottleneck, escape(entry.bottleneck or "-")),
            _cell(best.get("value"), escape(entry.best_signal_text())),
            _cell(entry.accuracy, "-" if entry.accuracy is None else f"{entry.accuracy:.3f}"),
            _cell(entry.n, str(entry.n)),
        ]) + "</tr>")
    return ['<table class="board" id="board">', f"<thead><tr>{head}</tr></thead>", "<tbody>", *rows, "</tbody>",
            "</table>"]


def index_page(board: Board) -> str:
    """``index.html``."""
    body = ["<h1>VRP-Bench leaderboard</h1>",
            ("<p>How well each model's reliability signals predict whether its answers are right, and how robust it "
             "is to destroying its most predictive layer. Click a column heading to sort.</p>")]
    if not board.entries and not board.not_comparable and not board.not_on_board:
        body.append("<p>No submissions yet: see CONTRIBUTING.md, &ldquo;Submitting a model to the "
                    "leaderboard&rdquo;.</p>")
    if board.entries:
        tasks = sorted(board.entries[0].submission.report["results"])
        body += [f"<h2>Ranked board</h2><p>{len(board.entries)} runs; tasks: {escape(', '.join(tasks))}.</p>",
                 *board_table(board), "<h2>How the board is ranked</h2>",
                 *(f"<p>{prose(paragraph)}</p>" for paragraph in how_ranked(board))]
    paged = {s.slug for s, _ in board.not_comparable}
    for heading, meaning, runs in listed_apart(board):
        body += [f"<h2>{escape(heading)}</h2>", f"<p>{escape(meaning)}</p>", "<ul>"]
        body += [f"<li>{_link(s) if s.slug in paged else escape(s.name)} (<code>{escape(s.location)}</code>): "
                 f"{escape(reason)}</li>" for s, reason in runs]
        body.append("</ul>")
    return page("VRP-Bench leaderboard", body, STYLE, SORTER)


def _provenance(report: dict[str, Any], entry: Entry) -> list[list[str]]:
    model, config = report["model"], report["config"]
    fields = [("model", model.get("name")), ("checkpoint", model.get("checkpoint")), ("family", model.get("family")),
              ("fingerprint", model.get("fingerprint")), ("seed", config.get("seed")),
              ("vrp-bench", report["environment"]["versions"].get("vrp-bench")), ("date", report.get("date_iso")),
              ("tasks", ", ".join(sorted(report["results"]))), ("docs scored", entry.n),
              ("accuracy", None if entry.accuracy is None else f"{entry.accuracy:.3f}"),
              ("report", entry.submission.location)]
    return [[escape(key), escape("-" if value is None else value)] for key, value in fields]


def model_page(entry: Entry, name: str, charts: Sequence[tuple[str, str]]) -> str:
    """A run's page, headed ``name``; ``charts``: (relative image path, caption)."""
    report = entry.submission.report
    figures = [[escape(q.heading), escape(entry.figures[q.key].text()),
                escape(f"{entry.figures[q.key].band} ({entry.figures[q.key].rank_text()})"
                       if entry.figures[q.key].band else ("not ranked" if q.ranked else "-")),
                escape(entry.figures[q.key].note or q.meaning)] for q in QUANTITIES]
    signals = sorted(report["summary"]["signal_auroc"].items(), key=lambda item: -(item[1]["value"] or 0.0))
    signal_rows = [[escape(", ".join([signal, *scored["same_ranking_as"]])),
                    escape(Figure(scored["value"], scored["ci"]).text())] for signal, scored in signals]
    verdicts = [[escape(verdict), escape(found.get("status"))] for verdict, found in sorted(report["verdicts"].items())]
    body = ['<p><a href="../index.html">&larr; the board</a></p>', f"<h1>{escape(name)}</h1>",
            *table(_provenance(report, entry), ["", ""]),
            "<h2>Board figures</h2>",
            *table(figures, ["quantity", "value [95% interval]", "band (rank interval)", "note"]),
            (f"<p>Best signal (chosen on half of the docs, scored on the other half; not ranked): "
             f"{escape(entry.best_signal_text())}</p>"),
            ("<h2>Reliability signals</h2><p>Within-task AUROC of each reliability signal (signals that rank every "
             "sample the same way are listed together).</p>"), *table(signal_rows, ["signal", "AUROC [95% CI]"]),
            "<h2>Verdicts</h2>", *table(verdicts, ["verdict", "status"]),
            "<h2>Charts</h2>"]
    body += [f'<figure><img src="{escape(path)}" alt="{escape(caption)}" width="520" height="320">'
             f"<figcaption>{escape(caption)}</figcaption></figure>" for path, caption in charts]
    if not charts:
        body.append("<p>No charts: the report has no layer profiles, probe or ablation.</p>")
    return page(f"{name} - VRP-Bench leaderboard", body, STYLE)


def site_files(board: Board, others: Sequence[Entry]) -> dict[PurePosixPath, str]:
    """Every file of the site, by path relative to the site's folder."""
    files = {PurePosixPath("index.html"): index_page(board)}
    names = [e.submission.name for e in [*board.entries, *others]]
    for entry in [*board.entries, *others]:
        slug = entry.submission.slug
        curve = robustness_curve(entry.submission.report) or {}
        charts = run_charts(entry.submission.report, curve.get("layer", entry.most_predictive_layer))
        for chart in charts:
            files[PurePosixPath("models", slug, chart.name)] = chart.svg
        files[PurePosixPath("models", f"{slug}.html")] = model_page(
            entry, entry.submission.label(names), [(f"{slug}/{chart.name}", chart.caption) for chart in charts])
    return files
