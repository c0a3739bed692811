"""``vrp_bench.evaluate``: one call from a model and tasks to a scored, validated report (lm-eval's
``simple_evaluate``).

It evaluates, scores the reliability signals, optionally runs the ablation sweep, builds the report and checks
it against the schema, and with ``output_path`` writes the run folder (``report.run_files.RunFiles``) all at
once at the end: a failed run writes nothing. The ``vrp-bench run`` / ``ablate`` commands only turn their flags
into its arguments and print what it returns; a notebook or another harness calls it directly::

    import vrp_bench

    result = vrp_bench.evaluate("constant", "vrp_shapes_color", limit=20)
    result.report["results"]["vrp_shapes_color"]
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vrp_bench import evaluator
from vrp_bench.api.arguments import parse_key_values
from vrp_bench.api.errors import UsageError
from vrp_bench.api.files import content_hash, removed_if_left_empty, write_files_atomically
from vrp_bench.api.model import VLM
from vrp_bench.api.task_index import TaskIndex
from vrp_bench.api.traces import LAST_PROMPT
from vrp_bench.builtins import register_builtins
from vrp_bench.cpu_threads import set_threads
from vrp_bench.distributed import ProcessGroup, launched
from vrp_bench.evaluator import Progress, RunConfig, RunResult
from vrp_bench.report.results import build_report, probe_files, sample_logs, trace_arrays, traces_npz
from vrp_bench.report.run_files import RunFiles
from vrp_bench.report.schema import require_valid
from vrp_bench.report.writer import check_writable, json_text, jsonl_text
from vrp_bench.sample_cache import SampleCache
from vrp_bench.scoring.probes import ProbeFits
from vrp_bench.scoring.sections import score_sections
from vrp_bench.scoring.settings import ScoringSettings

if TYPE_CHECKING:
    from vrp_bench.interventions import AblationSettings
    from vrp_bench.interventions.runner import AblationRun

ProgressFactory = Callable[[str], Callable[[int], Progress]]
"""``progress(description)`` -> ``make(total)`` -> a reporter (``update`` / ``close``: a ``tqdm`` bar fits);
descriptions: "docs" (the run), "ablation" (the sweep)."""


@dataclass
class Evaluation:
    """What ``evaluate`` returns: the run and everything built from it."""

    run: RunResult
    """The evaluator's result: config, the model, per task its ``SampleRecord``s and metrics, skipped tasks, groups."""
    samples: dict[str, list[dict[str, Any]]]
    """Per task, the per-sample log records, exactly as the ``samples`` JSONL files hold them."""
    sections: dict[str, Any]
    """The report's scored sections (``scoring.sections.score_sections``)."""
    probe_fits: dict[str, ProbeFits]
    """Per hidden-state position, the trained probes (saved beside the report)."""
    ablation: AblationRun | None
    """The ablation sweep (settings, layers, conditions, per-condition ``records``), or None."""
    report: dict[str, Any]
    """The schema-validated report: what ``<stem>_results.json`` holds."""
    files: RunFiles | None
    """The run folder's layout, or None without ``output_path``."""
    written: list[Path]
    """Every file written (the report last); empty without ``output_path``."""

    @property
    def ablation_records(self) -> dict[str, list[dict[str, Any]]]:
        """Per task, the ablation's per-condition records (empty without an ablation)."""
        return self.ablation.records if self.ablation is not None else {}


def evaluate(
    model: str | VLM,
    tasks: str | Sequence[str],
    *,
    model_args: dict[str, Any] | str | None = None,
    include_paths: Sequence[Path | str] = (),
    dataset_paths: dict[str, str] | None = None,
    limit: int | float | None = None,
    batch_size: int = 1,
    device: str | None = None,
    seed: int = 0,
    gen_kwargs: dict[str, Any] | None = None,
    max_failed_share: float | None = None,
    scoring: ScoringSettings | None = None,
    ablation: AblationSettings | None = None,
    output_path: Path | str | None = None,
    log_samples: bool = False,
    save_traces: bool = False,
    progress: ProgressFactory | None = None,
    command_line: str | None = None,
    cache: bool = True,
    cache_dir: Path | str | None = None,
    threads: int | None = None,
) -> Evaluation | None:
    """Evaluate ``model`` on ``tasks``, score its reliability signals and build the report.

    ``model``: a registered name (``vrp-bench models``; built from ``model_args`` -- a dict or "k=v,k=v" -- on
    ``device``) or an already-built ``VLM`` (then neither is given; the report names it by its registered
    ``name``, else its class name). ``tasks``: task / group names, comma lists, tags, wildcards, "all", or a
    list of them. ``include_paths``: more folders of task YAMLs. ``dataset_paths``: datasets redirected without
    editing a YAML (a task's ``dataset_path`` -> a local folder or file), on top of the ``VRP_DATASET_PATH_OVERRIDE``
    environment variable ("hub_id=path,hub_id=path"). ``limit``: first N docs per task, or a
    fraction. ``seed`` seeds every random choice of the run, and the scoring unless ``scoring`` (default
    ``ScoringSettings(seed=seed)``) says otherwise. ``gen_kwargs`` override every task's generation_kwargs;
    ``max_failed_share`` ends the run (``RunError``) when a task's share of failed docs exceeds it (default:
    only when every doc failed). ``ablation``: also run the ablation sweep (a transformers model with capture on).

    ``output_path``: write ``<output_path>/<model>/<stem>_results.json`` (plus, with ``log_samples``, per-sample
    JSONL; with ``save_traces``, hidden states; and the trained probes); it is checked to be writable before the
    model is built, and everything is written at the end, atomically. ``progress`` makes progress reporters
    (``ProgressFactory``); ``command_line`` is recorded in the report (default: this call, spelled in Python).

    ``cache``: keep every finished sample in ``cache_dir`` (default ``<output_path>/<model>/cache``; no cache
    without either) and take the ones already there (``sample_cache``): a run that was killed, started again,
    finishes with the report an uninterrupted run writes. ``threads``: CPU threads for the model (default
    ``cpu_threads.default_threads``: the idle cores). Under a data-parallel launcher (``accelerate launch`` /
    ``torchrun``, see ``distributed``) every process answers its share of the docs; the first returns the
    run, every other returns None.

    Bad input raises ``UsageError`` before any doc is answered; a failed run raises ``RunError``.
    """
    given = {name: value for name, value in locals().items() if name not in ("model", "tasks", "progress",
                                                                                 "command_line")}
    register_builtins()
    for flag, on in (("log_samples", log_samples), ("save_traces", save_traces)):
        if on and output_path is None:
            raise UsageError(f"{flag} needs output_path (where to write the per-sample files)")
    model_name = model if isinstance(model, str) else (model.name or type(model).__name__)
    config = RunConfig(
        model=model_name,
        tasks=tasks if isinstance(tasks, str) else ",".join(tasks),
        model_args=parse_key_values(model_args, "model_args") if isinstance(model_args, str) else dict(model_args or {}),
        include_paths=[Path(include_paths)] if isinstance(include_paths, (str, Path))
        else [Path(p) for p in include_paths],
        dataset_paths={**dataset_path_overrides_from_env(), **(dataset_paths or {})},
        limit=limit,
        batch_size=batch_size,
        device=device,
        seed=seed,
        gen_kwargs=dict(gen_kwargs or {}),
        max_failed_share=max_failed_share,
    )
    scoring = scoring if scoring is not None else ScoringSettings(seed=seed)
    started = time.time()
    files = RunFiles.for_run(output_path, model_name, started) if output_path is not None else None
    config.output_folder = files.folder if files is not None else None
    shards = ProcessGroup.from_environment() if launched() else None
    if shards is not None and isinstance(model, str):
        config.device = shards.device(device)
    local_processes = shards.local_world_size if shards is not None else 1
    set_threads(threads, local_processes)  # for loading the model
    if cache and cache_dir is None and files is not None:
        cache_dir = files.folder / "cache"
    cache_folder = Path(cache_dir) if cache and cache_dir is not None else None

    def check_model(vlm: VLM) -> None:
        set_threads(threads, local_processes, vlm.n_parameters)  # again, now that the model's size is known
        if ablation is not None:
            from vrp_bench.interventions.runner import check_ablatable

            check_ablatable(vlm, ablation)

    with removed_if_left_empty([folder for folder in (files.folder if files else None, cache_folder) if folder]):
        run = evaluator.evaluate(
            config,
            TaskIndex(config.include_paths, config.dataset_paths),
            before_model=(lambda: check_writable(files.folder)) if files is not None else (lambda: None),
            progress=progress("docs") if progress is not None else None,
            check_model=check_model,
            model=None if isinstance(model, str) else model,
            make_cache=lambda vlm: SampleCache.for_model(cache_folder, vlm),
            shards=shards,
        )
        if shards is not None:
            shards.close()
        if run is None:  # a data-parallel process other than the first: its records went to the first
            return None
        samples = sample_logs(run)
        metadata = {name: task_result.task.config.metadata for name, task_result in run.results.items()}
        sections, probe_fits = score_sections(samples, trace_arrays(run), scoring, metadata)
        ablation_run, ablation_section = None, None
        if ablation is not None:
            from vrp_bench.interventions import ablation_section as build_ablation_section
            from vrp_bench.interventions.runner import run_ablation

            ablation_run = run_ablation(run, sections, ablation, probe_fits.get(LAST_PROMPT),
                                        progress=progress("ablation") if progress is not None else None)
            ablation_section = build_ablation_section(samples, ablation_run.records, ablation_run.context(), scoring)
        contents: dict[Path, str | bytes] = {}  # written beside the report, which records their hashes
        if files is not None:
            if log_samples:
                contents.update({files.samples(task): jsonl_text(records) for task, records in samples.items()})
                if ablation_run is not None:
                    contents.update({files.ablation(task): jsonl_text(records)
                                     for task, records in ablation_run.records.items()})
            if save_traces:
                for task, task_result in run.results.items():
                    traces = traces_npz(task_result)
                    if traces is not None:
                        contents[files.traces(task)] = traces
            for position, fits in probe_fits.items():
                contents.update(probe_files(fits, files.probes(position)))
        if command_line is None:
            command_line = _python_call(model, config.tasks, given)
        hashes = {path.name: content_hash(content) for path, content in contents.items()}
        report = build_report(run, command_line, started, sections, scoring, hashes, ablation_section)
        require_valid(report)
        if files is not None:
            contents[files.results] = json_text(report)
            write_files_atomically(contents)
    return Evaluation(run, samples, sections, probe_fits, ablation_run, report, files, list(contents))


def _python_call(model: str | VLM, tasks: str, given: dict[str, Any]) -> str:
    """``evaluate``'s call as the report's command line: model, tasks and each argument not at its default."""
    defaults = inspect.signature(evaluate).parameters
    shown = repr(model) if isinstance(model, str) else f"<{type(model).__name__} instance>"
    arguments = [f"model={shown}", f"tasks={tasks!r}"]
    arguments += [f"{name}={value!r}" for name, value in given.items() if value != defaults[name].default]
    return f"vrp_bench.evaluate({', '.join(arguments)})"


DATASET_PATH_OVERRIDE_ENV = "VRP_DATASET_PATH_OVERRIDE"


def parse_dataset_paths(items: Sequence[str], source: str) -> dict[str, str]:
    """``dataset_path=local path`` items (``--dataset_path_override``, the environment variable) as a mapping."""
    paths: dict[str, str] = {}
    for item in items:
        original, sep, local = item.partition("=")
        if not sep or not original.strip() or not local.strip():
            raise UsageError(f"{source}: expected <dataset_path as the YAML writes it>=<local path>, got {item!r}")
        paths[original.strip()] = local.strip()
    return paths


def dataset_path_overrides_from_env() -> dict[str, str]:
    """The ``VRP_DATASET_PATH_OVERRIDE`` environment variable ("hub_id=path,hub_id=path"), parsed."""
    import os

    text = os.environ.get(DATASET_PATH_OVERRIDE_ENV, "")
    return parse_dataset_paths([part for part in text.split(",") if part.strip()], DATASET_PATH_OVERRIDE_ENV)
