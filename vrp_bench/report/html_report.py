"""The run report: one HTML page of a saved run (``vrp-bench plot``, ``vrp-bench run --plots``) with its summary
(the console's blocks, ``report.console.summary_blocks``: task metrics, the reliability signals' within-task AUROC
with CIs, probes, fusion, verdicts, the ablation) and its pictures (``report.plots``), written with the PNGs into
one folder.

The page loads nothing from the network (``report.html_page``: inline CSS, no script, the PNGs beside it by
relative path, so the folder can be moved or opened from disk); every text from the report is escaped. A picture
the run lacks the data for is listed with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vrp_bench.api.files import write_files_atomically
from vrp_bench.report.console import Block, summary_blocks
from vrp_bench.report.html_page import escape, page, table
from vrp_bench.report.plot_inputs import PlotInputs, load_plot_inputs
from vrp_bench.report.plots import Picture, run_pictures

PLOTS_FOLDER = "plots"
"""The default folder of the pictures, beside the run's results file."""
PAGE_NAME = "report.html"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 90rem; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.85rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
p.line { margin: 0.2rem 0; font-size: 0.9rem; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #444; max-width: 60rem; }
li.skipped { margin: 0.3rem 0; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def _provenance(inputs: PlotInputs) -> list[list[str]]:
    report = inputs.report
    model, config = report["model"], report["config"]
    fields = [("model", model.get("name")), ("checkpoint", model.get("pretrained")), ("family", model.get("family")),
              ("fingerprint", model.get("fingerprint")), ("device", model.get("device")), ("seed", config.get("seed")),
              ("tasks", ", ".join(report["results"])), ("date", report.get("date_iso")),
              ("vrp-bench", report["environment"]["versions"].get("vrp-bench")),
              ("command", config.get("command_line")), ("report", inputs.results_path.name)]
    return [[escape(key), escape("-" if value is None else value)] for key, value in fields]


def _block(block: Block) -> list[str]:
    """A summary block as HTML (the console's empty separator lines are left out)."""
    if isinstance(block, str):
        return [f'<p class="line">{escape(block)}</p>'] if block else []
    return table([[escape(cell) for cell in row] for row in block.rows], block.headers)


def _picture(picture: Picture) -> str:
    return (f'<figure><img src="{escape(picture.name)}" alt="{escape(picture.caption)}">'
            f"<figcaption>{escape(picture.caption)}</figcaption></figure>")


def report_html(inputs: PlotInputs, pictures: Sequence[Picture]) -> str:
    """The page: provenance, the summary blocks, the pictures (each PNG by its file name beside the page), and the
    pictures skipped with their reasons."""
    title = f"{inputs.report['model']['name']} on {', '.join(inputs.report['results'])}"
    drawn = [p for p in pictures if p.png is not None]
    skipped = [p for p in pictures if p.png is None]
    body = [f"<h1>{escape(title)}</h1>", *table(_provenance(inputs), ["", ""]), "<h2>Summary</h2>"]
    body += [line for block in summary_blocks(inputs.report) for line in _block(block)]
    body += ["<h2>Pictures</h2>", *(_picture(p) for p in drawn)]
    if skipped:
        body += ["<h3>Not drawn</h3>", "<ul>"]
        body += [f'<li class="skipped"><code>{escape(p.name)}</code>: {escape(p.caption)} <strong>Skipped: '
                 f"{escape(p.skipped)}.</strong></li>" for p in skipped]
        body.append("</ul>")
    return page(f"{title} - VRP-Bench run report", body, STYLE)


def write_run_report(path: Path, output: Path | None = None, layers: Sequence[int] | None = None) -> list[Path]:
    """Draw the pictures of the run at ``path`` (a results file or its folder) and write them with
    ``report.html`` into ``output`` (default: ``plots/`` beside the results file), all at once
    (``api.files.write_files_atomically``); the paths written, the page last. ``layers``: the heatmaps' layers.
    Bad input is a one-line ``UsageError`` before anything is written."""
    inputs = load_plot_inputs(path)
    pictures = run_pictures(inputs, layers)
    folder = output if output is not None else inputs.results_path.parent / PLOTS_FOLDER
    contents: dict[Path, str | bytes] = {folder / p.name: p.png for p in pictures if p.png is not None}
    contents[folder / PAGE_NAME] = report_html(inputs, pictures)
    write_files_atomically(contents)
    return list(contents)
