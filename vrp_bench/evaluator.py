"""The evaluation loop: tasks x model -> per-sample records -> metrics -> a run result.

``evaluate`` validates everything it can before the model is built (task names, task YAML,
data, output folder), then answers every doc in batches, scores each answer, and aggregates.
A doc that fails (an image that does not decode, a model error) is recorded with its reason and
counted in ``n_errors``; it is never scored as wrong.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vrp_bench.api.errors import RunError, UsageError
from vrp_bench.api.instance import Request, Response, doc_hash
from vrp_bench.api.model import MODELS, VLM
from vrp_bench.api.task import DocError, Task, generation_settings
from vrp_bench.api.task_index import TaskIndex
from vrp_bench.api.traces import HiddenPosition, Traces
from vrp_bench.signals.compute import SampleSignals, compute_signals
from vrp_bench.signals.inputs import SignalInputs

log = logging.getLogger(__name__)

CORRECT_THRESHOLD = 0.5
"""A sample is correct when its primary (first) metric reaches this value (exact match: 1 vs 0)."""


@dataclass
class RunConfig:
    """Everything that defines a run (what ``vrp_bench.evaluate`` / the CLI was given)."""

    model: str
    """A registered model name, or the name of the already-built model passed to ``evaluate``."""
    tasks: str
    model_args: dict[str, Any] = field(default_factory=dict)
    include_paths: list[Path] = field(default_factory=list)
    dataset_paths: dict[str, str] = field(default_factory=dict)
    """A task's ``dataset_path`` -> the local path read instead (``TaskIndex``)."""
    limit: int | float | None = None
    batch_size: int = 1
    device: str | None = None
    seed: int = 0
    gen_kwargs: dict[str, Any] = field(default_factory=dict)
    output_folder: Path | None = None
    """Where the run's files go (task code that writes files, e.g. submissions, writes there); None: nowhere."""
    max_failed_share: float | None = None
    """A task whose share of failed docs exceeds this ends the run (exit 1); None: only when every doc failed."""


@dataclass
class SampleRecord:
    """One doc's outcome."""

    doc_id: int
    target: str | list[str] | None = None
    prediction: str | None = None
    filtered: Any = None
    """The prediction after the task's primary filter pipeline (what its metrics were computed on)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """The primary filter's metric values (usually floats; a task's ``process_results`` may return any JSON value,
    e.g. a dict its custom aggregation reads)."""
    other_filters: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Every other filter pipeline: name -> {"filtered": value, "metrics": {...}}."""
    correct: bool | None = None
    signals: dict[str, Any] = field(default_factory=dict)
    signal_errors: dict[str, str] = field(default_factory=dict)
    """Signals that failed on this sample (their value is None): name -> reason."""
    doc: dict[str, Any] = field(default_factory=dict)
    doc_hash: str | None = None
    """``api.instance.doc_hash`` of the doc (None when it could not be rendered)."""
    error: str | None = None
    hidden_states: dict[HiddenPosition, np.ndarray] = field(default_factory=dict)
    """Per captured position, [n_layers, hidden] float16 (kept for probes, never in the JSONL)."""
    attention_maps: dict[str, np.ndarray] = field(default_factory=dict)
    """``Traces.attention_maps``: read by the ensemble attention probe, written with ``--save_traces`` (for the run
    report's heatmaps and for re-scoring that probe), never in the JSONL."""

    def to_json(self) -> dict[str, Any]:
        """The per-sample log line, with lmms-eval's ``resps`` / ``filtered_resps`` keys (``filtered_resps`` as
        lmms-eval writes it: the primary filter's value, a string after ``take_first``)."""
        record: dict[str, Any] = {
            "doc_id": self.doc_id,
            "target": self.target,
            "prediction": self.prediction,
            "resps": [[self.prediction]] if self.prediction is not None else [],
            "filtered_resps": self.filtered,
            "correct": self.correct,
            **self.metrics,
            "question_type": self.doc.get("question_type"),
            "doc": self.doc,
            "doc_hash": self.doc_hash,
            "error": self.error,
        }
        if self.other_filters:
            record["other_filters"] = self.other_filters
        if self.signals:
            record["signals"] = self.signals
        if self.signal_errors:
            record["signal_errors"] = self.signal_errors
        return record


@dataclass
class TaskResult:
    """A task's aggregated scores and its per-sample records."""

    task: Task
    n_docs: int
    records: list[SampleRecord]
    metrics: dict[str, float | None] = field(default_factory=dict)
    """The primary filter's aggregated metrics."""
    stderrs: dict[str, float | None] = field(default_factory=dict)
    other_filters: dict[str, tuple[dict[str, float | None], dict[str, float | None]]] = field(default_factory=dict)
    """Every other filter pipeline: name -> (metrics, stderrs)."""

    @property
    def n_errors(self) -> int:
        return sum(r.error is not None for r in self.records)

    @property
    def n_scored(self) -> int:
        return len(self.records) - self.n_errors


@dataclass
class RunResult:
    """The outcome of ``evaluate``."""

    config: RunConfig
    model: VLM
    results: dict[str, TaskResult]
    skipped: dict[str, str]
    groups: dict[str, list[str]]


def resolve_limit(limit: int | float | None, n_docs: int) -> int:
    """How many docs to run: all, the first ``limit`` (int >= 1) or a fraction (0 < float < 1)."""
    if limit is None:
        return n_docs
    if isinstance(limit, float) and limit < 1:
        return max(1, int(n_docs * limit))
    return min(n_docs, int(limit))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (when loaded) torch, for code that uses global generators."""
    import sys

    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def prepare_tasks(
    config: RunConfig, index: TaskIndex, image_size: int | None = None
) -> tuple[list[Task], dict[str, str], dict[str, list[str]]]:
    """Select, build and load the tasks; returns (tasks, skipped task -> reason, group -> tasks). Tasks reached
    only through ``all`` or a wildcard are skipped when their data is not on this machine, when they declare an
    image size (``metadata: {image_size: N}``) other than the one the model suits (``image_size``: ``VLM.image_size``),
    or when they are a variant of another task (``metadata: {variant: reasoning}``)."""
    names, group_names, optional = index.select(config.tasks)
    tasks: list[Task] = []
    skipped: dict[str, str] = {}
    for name in names:
        data = index.data_offline(name)
        if name in optional and data != "yes":
            skipped[name] = f"data not on this machine: {data}; name the task to fetch it"
            continue
        try:
            task = index.build(name)
            declared = task.config.metadata.get("image_size")
            if name in optional and image_size is not None and isinstance(declared, int) and declared != image_size:
                skipped[name] = (f"its images are {declared} px; model {config.model} suits {image_size} px (name "
                                 "the task to run it anyway)")
                continue
            variant = task.config.metadata.get("variant")
            if name in optional and variant is not None:
                skipped[name] = f"a {variant} variant of a task (name it, or its group, to run it)"
                continue
            task.load()
        except UsageError as exc:
            if name not in optional:
                raise
            skipped[name] = str(exc)
            continue
        tasks.append(task)
    groups = {g: [t for t in index.expand(g) if t not in skipped] for g in group_names}
    return tasks, skipped, groups


class RecordCache(Protocol):
    """Finished samples kept across runs (``sample_cache.SampleCache``): a batch whose every doc is cached is
    not run again."""

    def key(self, task: Task, request: Request, doc_hash: str | None) -> str: ...

    def take(self, keys: list[str], doc_ids: list[int]) -> list[SampleRecord] | None: ...

    def store(self, key: str, record: SampleRecord) -> None: ...

    def summary(self) -> str: ...


class Shards(Protocol):
    """How the batches are shared out among processes (``distributed.ProcessGroup``): this process answers
    ``mine(batch index)`` and the first process gathers every process's records."""

    def mine(self, batch: int) -> bool: ...

    def gather(self, records: list[SampleRecord] | BaseException) -> list[SampleRecord] | None: ...


class Progress(Protocol):
    """What ``evaluate`` reports progress to (a ``tqdm`` bar fits)."""

    def update(self, n: int) -> Any: ...

    def set_postfix_str(self, s: str) -> Any:
        """Say what is being worked on (the task, the ablation condition)."""

    def close(self) -> Any: ...


def evaluate(
    config: RunConfig,
    index: TaskIndex,
    before_model: Callable[[], None] = lambda: None,
    progress: Callable[[int], Progress] | None = None,
    check_model: Callable[[VLM], None] = lambda model: None,
    model: VLM | None = None,
    make_cache: Callable[[VLM], RecordCache | None] = lambda model: None,
    shards: Shards | None = None,
) -> RunResult | None:
    """Run ``config``.

    ``before_model`` runs after all validation, just before the model is built (the output folder
    is checked there); ``check_model`` right after it is built, before any doc is answered
    (e.g. that it can be ablated). ``progress(total_docs)`` makes the progress reporter.
    ``model``: an already-built model to run instead of building the registered ``config.model``
    (which then only names it; ``config.model_args`` and ``config.device`` must be empty).
    ``make_cache(model)``: where finished samples are looked up and kept (None: nowhere). ``shards``: this
    process answers only its share of each task's batches and the first process gathers them; every other
    process gets None.
    """
    generation_settings(config.gen_kwargs, "--gen_kwargs")
    if model is None:
        model_class = MODELS.get(config.model)
        model_class.check_args(config.model_args)
        model_class.check_device(config.device)
    elif config.model_args or config.device is not None:
        raise UsageError(f"model {config.model!r} is already built: model_args and device apply only to a model "
                         "given by its registered name")
    tasks, skipped, groups = prepare_tasks(config, index, (model_class if model is None else model).image_size)
    if not tasks:
        reasons = "; ".join(f"{t}: {r}" for t, r in skipped.items())
        raise UsageError(f"no selected task could be loaded ({reasons})")
    before_model()
    seed_everything(config.seed)
    if model is None:
        model = model_class.from_args(config.model_args, device=config.device)
    check_model(model)
    cache = make_cache(model)
    plan = [(task, resolve_limit(config.limit, len(task))) for task in tasks]
    bar = progress(sum(n for _, n in plan)) if progress is not None else None
    results = {}
    try:
        for task, n in plan:
            if bar is not None:
                bar.set_postfix_str(task.name)
            if shards is None:
                records: list[SampleRecord] | None = run_task(task, model, config, n, bar, cache)
            else:
                records = shards.gather(_run_share(task, model, config, n, bar, cache, shards))
            if records is None:
                continue
            check_failures(task.name, records, config.max_failed_share)
            results[task.name] = aggregate_task(task, len(task), records, config.output_folder)
    finally:
        if bar is not None:
            bar.close()
    if cache is not None:
        log.info(cache.summary())
    if shards is not None and not results:
        return None
    return RunResult(config, model, results, skipped, groups)


def _run_share(task: Task, model: VLM, config: RunConfig, n: int, progress: Progress | None,
               cache: RecordCache | None, shards: Shards) -> list[SampleRecord] | BaseException:
    """This process's share of ``task`` (``run_task`` on its batches), or what it raised (sent to the first
    process, which ends the run with it, instead of leaving it waiting)."""
    try:
        return run_task(task, model, config, n, progress, cache, shards.mine)
    except Exception as error:  # the gather re-raises it on the first process, where the run is reported
        return error


def run_task(
    task: Task, model: VLM, config: RunConfig, n: int, progress: Progress | None,
    cache: RecordCache | None = None, mine: Callable[[int], bool] = lambda batch: True,
) -> list[SampleRecord]:
    """Answer and score the first ``n`` docs of ``task`` in batches of ``config.batch_size`` (those batches that
    are ``mine``); a batch whose every doc is in ``cache`` is taken from it, any other is answered and kept."""
    prompt_kwargs = task.prompt_kwargs(model.prompt_keys)
    records: list[SampleRecord] = []
    for batch, start in enumerate(range(0, n, config.batch_size)):
        if not mine(batch):
            continue
        batch_ids = range(start, min(n, start + config.batch_size))
        requests: list[Request] = []
        pending: list[tuple[SampleRecord, dict[str, Any], Request]] = []
        batch_records: list[SampleRecord] = []
        for doc_id in batch_ids:
            record = SampleRecord(doc_id)
            batch_records.append(record)
            try:
                doc, request = task.render(doc_id, prompt_kwargs, config.gen_kwargs, config.seed)
            except DocError as exc:
                record.error = str(exc)
                continue
            record.doc = task.doc_fields(doc)
            record.target = request.target
            record.doc_hash = doc_hash(record.doc, request.target, request.images)
            requests.append(request)
            pending.append((record, doc, request))
        keys = [cache.key(task, request, record.doc_hash) for record, _, request in pending] if cache else []
        taken = cache.take(keys, [record.doc_id for record, _, _ in pending]) if cache else None
        if taken is not None:
            fresh = {record.doc_id: record for record in taken}
            batch_records = [fresh.get(record.doc_id, record) for record in batch_records]
        else:
            _answer(task, model, pending, requests)
            for key, (record, _, _) in zip(keys, pending):
                cache.store(key, record)  # type: ignore[union-attr]
        records += batch_records
        if progress is not None:
            progress.update(len(batch_ids))
    return records


def _answer(task: Task, model: VLM, pending: Sequence[tuple[SampleRecord, dict[str, Any], Request]],
            requests: list[Request]) -> None:
    """Answer one batch and fill its records (generated answers, or options scored by likelihood)."""
    if task.scored_by_likelihood:
        score_by_likelihood(task, model, pending)
        return
    responses = model.generate(requests) if requests else []
    if len(responses) != len(requests):
        raise RunError(f"model {model.name!r} returned {len(responses)} answers for {len(requests)} requests")
    for (record, doc, request), response in zip(pending, responses):
        score_record(task, record, doc, request, response)


def score_record(
    task: Task, record: SampleRecord, doc: dict[str, Any], request: Request, response: Response,
    signal_names: Collection[str] | None = None,
) -> None:
    """Fill a record from the model's response: prediction, metrics, correctness, signals (all, or only
    ``signal_names``)."""
    if response.error is not None or response.text is None:
        record.error = response.error or "model returned no answer"
        return
    computed = signals_from_traces(task, doc, request, response.traces, signal_names)
    record.signals = computed.values
    record.signal_errors = computed.errors
    record.hidden_states = response.traces.hidden_states()
    record.attention_maps = response.traces.attention_maps()
    record.prediction = response.text
    try:
        scores = task.score(doc, response.text)
    except UsageError:
        raise
    except Exception as exc:
        record.error = f"process_results failed: {type(exc).__name__}: {exc}"
        return
    primary = scores.pop(task.primary_filter)
    record.filtered, record.metrics, record.other_filters = primary["filtered"], primary["metrics"], scores
    record.correct = correctness(task, record.metrics)


def score_by_likelihood(task: Task, model: VLM, pending: Sequence[tuple[SampleRecord, dict[str, Any], Request]]) -> None:
    """Score a batch of a multiple_choice / loglikelihood task: every option of every doc in one
    ``model.loglikelihood`` call; a doc any of whose options failed is a failed sample."""
    spans, requests, options = [], [], []
    for _, doc, request in pending:
        doc_requests, doc_options = task.option_requests(doc, request)
        spans.append((len(options), len(options) + len(doc_options)))
        requests += doc_requests
        options += doc_options
    scores = model.loglikelihood(requests, options) if requests else []
    if len(scores) != len(requests):
        raise RunError(f"model {model.name!r} returned {len(scores)} log-likelihoods for {len(requests)} options")
    for (record, doc, _), (start, end) in zip(pending, spans):
        doc_scores = scores[start:end]
        failed = next((s.error or "no log-likelihood" for s in doc_scores if s.logprob is None), None)
        if failed is not None:
            record.error = failed
            continue
        best = max(range(end - start), key=lambda k: doc_scores[k].logprob)  # type: ignore[arg-type, return-value]
        record.prediction = record.filtered = options[start + best][len(task.config.target_delimiter):]
        try:
            record.metrics = task.score_options(doc, options[start:end], doc_scores)
        except UsageError:
            raise
        except Exception as exc:
            record.error = f"process_results failed: {type(exc).__name__}: {exc}"
            continue
        record.correct = correctness(task, record.metrics)


def correctness(task: Task, metrics: Mapping[str, Any]) -> bool | None:
    """Whether a sample of ``task`` is correct (``correctness_of`` its metric values)."""
    return correctness_of(metrics, [s.metric for s in task.config.metric_list], task.config.score_key)


def correctness_of(metrics: Mapping[str, Any], metric_names: Sequence[str], score_key: str = "score") -> bool | None:
    """Whether a sample is correct: by the first of ``metric_names`` (the task's ``metric_list``) it has
    (``process_results`` may return only some per doc), a number, or a dict's ``score_key`` entry (e.g. POPE's
    per-sample dicts). None when that value says nothing about correctness: the sample is then not scored for
    reliability (never counted as wrong)."""
    name = next((m for m in metric_names if m in metrics), None)
    if name is None:
        return None
    value = metrics[name]
    if isinstance(value, dict):
        value = value.get(score_key)
    if isinstance(value, (bool, int, float)) and value == value:
        return is_correct(float(value))
    return None


def is_correct(primary: float) -> bool:
    """Whether a sample whose primary (first) metric has this value counts as correct."""
    return float(primary) >= CORRECT_THRESHOLD


def signals_from_traces(
    task: Task, doc: dict[str, Any], request: Request, traces: Traces, names: Collection[str] | None = None
) -> SampleSignals:
    """The reliability signals of one sample (and the reasons of those that failed on it) from what the model
    captured (``Response.traces``), with the doc's ground-truth boxes, the request's image size and target, and how
    the task extracts (its primary filter pipeline) and compares (its answer normalisation) sampled answers.
    Nothing captured: no signals."""
    if not traces.captured:
        return SampleSignals({}, {})
    inputs = SignalInputs(
        traces,
        image_size=request.images[0].size if request.images else None,
        boxes=task.boxes(doc),
        target=request.target,
        extract_answer=partial(task.filters[0].extract, doc=doc),
        answer_normalization=task.answer_normalization,
    )
    return compute_signals(inputs, names=names)


FIRST_ERRORS = 3


def check_failures(task: str, records: Sequence[SampleRecord], max_failed_share: float | None) -> None:
    """``RunError`` (exit 1; nothing is written) when too many docs of ``task`` failed: more than
    ``max_failed_share`` of them, or (None) every one. A failure that hits every doc is the run's problem (a
    wrong patch grid, a broken task function), not the samples'; it names the first distinct errors."""
    failed = [r.error for r in records if r.error is not None]
    too_many = len(failed) == len(records) if max_failed_share is None else len(failed) > max_failed_share * len(records)
    if not failed or not too_many:
        return
    distinct = list(dict.fromkeys(failed))[:FIRST_ERRORS]
    limit = "every doc" if max_failed_share is None else f"more than {max_failed_share:.0%} of the docs"
    raise RunError(f"task {task}: {len(failed)} of {len(records)} docs failed ({limit}); first distinct errors: "
                   + " | ".join(distinct))


def aggregate_task(
    task: Task, n_docs: int, records: Sequence[SampleRecord], output_folder: Path | None = None
) -> TaskResult:
    """Aggregate every metric of ``metric_list`` over the scored (error-free) records that have it, per filter
    pipeline (the values as the samples hold them: a custom aggregation gets dicts if process_results gave them)."""
    result = TaskResult(task, n_docs, list(records))
    scored = [r for r in records if r.error is None]
    result.metrics, result.stderrs = aggregate_metrics(task, [r.metrics for r in scored], output_folder)
    for name in [p.name for p in task.filters[1:]]:
        per_sample = [r.other_filters[name]["metrics"] for r in scored]
        result.other_filters[name] = aggregate_metrics(task, per_sample, output_folder)
    return result


def aggregate_metrics(
    task: Task, per_sample: Sequence[Mapping[str, Any]], output_folder: Path | None = None
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """(metric -> value, metric -> standard error) of ``metric_list`` over samples' metric values."""
    metrics: dict[str, float | None] = {}
    stderrs: dict[str, float | None] = {}
    for spec in task.config.metric_list:
        values = [m[spec.metric] for m in per_sample if spec.metric in m]
        metrics[spec.metric], stderrs[spec.metric] = task.aggregate(spec, values, output_folder)
    return metrics, stderrs


class TaskScores(Protocol):
    """A task's aggregated metrics and sample counts: a ``TaskResult``, or one recomputed from a saved run."""

    metrics: dict[str, float | None]
    stderrs: dict[str, float | None]

    @property
    def n_scored(self) -> int: ...

    @property
    def n_errors(self) -> int: ...


def group_scores(
    groups: dict[str, list[str]], results: Mapping[str, TaskScores]
) -> dict[str, dict[str, float | None]]:
    """Per group of ``groups`` (group -> member tasks): each metric shared by all its tasks in ``results``,
    averaged with weights = scored samples (a group's counts are its tasks' counts)."""
    scores: dict[str, dict[str, float | None]] = {}
    for group, members in groups.items():
        member_results = [results[t] for t in members if t in results]
        if not member_results:
            continue
        shared = set.intersection(*(set(r.metrics) for r in member_results))
        entry: dict[str, float | None] = {}
        for metric in sorted(shared):
            weighted = [(r.metrics[metric], r.n_scored) for r in member_results if r.metrics[metric] is not None]
            total = sum(w for _, w in weighted)
            entry[metric] = sum(v * w for v, w in weighted) / total if total else None
        scores[group] = entry
    return scores
