"""What a run's pictures (``report.plots``) read: a saved run's report, its per-sample records (``--log_samples``),
its attention maps (``--save_traces``), and the images and ground-truth boxes of the docs a heatmap shows,
re-created from the tasks as the run recorded them.

Every file read is checked against the sha256 the report recorded for it (a picture of edited data would be
wrong), as ``vrp-bench score`` checks them; a run without per-sample files still has its report's pictures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vrp_bench.api.errors import UsageError
from vrp_bench.api.instance import doc_hash
from vrp_bench.api.task import DocError, Task
from vrp_bench.api.task_index import TaskIndex
from vrp_bench.report.results import read_attention_maps
from vrp_bench.report.run_files import RunFiles
from vrp_bench.report.saved_run import (
    check_hashes,
    check_listed_files,
    load_run,
    read_report,
)
from vrp_bench.scoring.records import scored_records
from vrp_bench.scoring.settings import ScoringSettings


@dataclass
class PlotInputs:
    """A saved run as its pictures read it."""

    results_path: Path
    report: dict[str, Any]
    samples: dict[str, list[dict[str, Any]]]
    """Per task, the scored per-sample records in file order; empty when the run has no per-sample files."""
    attention: dict[str, dict[str, dict[int, np.ndarray]]]
    """Per task with a traces file, ``report.results.read_attention_maps`` of it (map -> doc id -> maps)."""

    @property
    def settings(self) -> ScoringSettings:
        """The run's scoring settings (the seed of every bootstrap a picture draws)."""
        return ScoringSettings(**self.report["config"]["scoring"])


def load_plot_inputs(path: Path) -> PlotInputs:
    """The run at ``path`` (a results file or its folder); a one-line ``UsageError`` for a folder without exactly
    one run, a report that does not parse or validate, or a file that differs from its recorded hash."""
    results_path = RunFiles.find_results(path)
    files = RunFiles.of(results_path)
    report = read_report(results_path)
    if any(files.samples(task).is_file() for task in report["results"]):
        run = load_run(results_path)
        check_hashes(results_path, report["files"], run.hashes)
        samples, traces = scored_records(run.samples), run.traces
    else:
        check_listed_files(results_path, report)
        samples, traces = {}, {}
    attention = {RunFiles.traces_task(path): read_attention_maps(content) for path, content in traces.items()}
    return PlotInputs(results_path, report, samples, attention)


@dataclass(frozen=True)
class ShownDoc:
    """A doc as the model saw it: its first image and its ground-truth boxes ([x0, y0, x1, y1) in that image's
    pixels; empty when the task names none for it)."""

    image: Image.Image
    boxes: list[list[float]]


def recreated_task(report: dict[str, Any], task: str) -> Task:
    """``task`` built and loaded as the run recorded it (its ``--include_path`` folders); ``UsageError`` when it
    cannot be (renamed, its data not on this machine: nothing is downloaded for a picture)."""
    index = TaskIndex([Path(p) for p in report["config"].get("include_path") or []])
    if task not in index.tasks:
        raise UsageError(f"task {task!r} is not among the tasks this machine has (renamed or removed?)")
    offline = index.data_offline(task)
    if offline != "yes":
        raise UsageError(f"the data of task {task!r} is not on this machine: {offline}")
    built = index.build(task)
    built.load()
    return built


def shown_docs(report: dict[str, Any], task: Task, records: Sequence[dict[str, Any]]
               ) -> tuple[dict[int, ShownDoc], dict[int, str]]:
    """Per record, its doc re-created from ``task`` with the run's seed and generation overrides and checked
    against the record's ``doc_hash``; and, per doc that could not be, the reason."""
    config = report["config"]
    prompt_kwargs = task.prompt_kwargs(())
    shown: dict[int, ShownDoc] = {}
    problems: dict[int, str] = {}
    for record in records:
        doc_id = record["doc_id"]
        try:
            doc, request = task.render(doc_id, prompt_kwargs, config.get("gen_kwargs") or {}, config["seed"])
        except DocError as exc:
            problems[doc_id] = f"doc {doc_id} does not load: {exc}"
            continue
        if doc_hash(task.doc_fields(doc), request.target, request.images) != record.get("doc_hash"):
            problems[doc_id] = f"doc {doc_id} of {task.name} is no longer the doc the run answered (its hash differs)"
        elif not request.images:
            problems[doc_id] = f"doc {doc_id} has no image"
        else:
            shown[doc_id] = ShownDoc(request.images[0], task.boxes(doc) or [])
    return shown, problems


def check_layers(text: str | None) -> tuple[int, ...] | None:
    """``--layers``: a comma list of layer indices (negative counts from the last); None when not given."""
    if text is None:
        return None
    try:
        layers = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--layers {text!r}: expected whole numbers separated by commas (e.g. 0,-1)") from None
    if not layers:
        raise UsageError("--layers is empty: give layer indices separated by commas (e.g. 0,-1)")
    return layers


def resolve_layers(requested: Sequence[int] | None, n_layers: int) -> tuple[list[int], list[int]]:
    """(the layers of a stack of ``n_layers`` to show, the requested ones it does not have): by default its first,
    middle and last; a negative index counts from the last."""
    if requested is None:
        return sorted({0, n_layers // 2, n_layers - 1}), []
    shown = [layer % n_layers for layer in requested if -n_layers <= layer < n_layers]
    return list(dict.fromkeys(shown)), [layer for layer in requested if not -n_layers <= layer < n_layers]
