"""A task: one lmms-eval-style YAML config turned into docs, requests and scores.

``TaskConfig.from_yaml_dict`` validates the dialect's keys; ``Task`` loads the dataset, renders
each doc into a ``Request`` (images, prompt with its few-shot examples, generation settings) and scores
the model's answer: through each ``filter_list`` pipeline, then ``process_results`` or the metrics named
in ``metric_list``. ``multiple_choice`` and ``loglikelihood`` tasks are scored from the log-likelihood the
model gives each option (``VLM.loglikelihood``) instead of a generated answer.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import logging
import os
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.sandbox
from PIL import Image, ImageFile

from vrp_bench.api.errors import UsageError, one_line
from vrp_bench.api.filters import FilterPipeline, build_pipelines, strip_thinking
from vrp_bench.api.instance import GenerationSettings, OptionScore, Request
from vrp_bench.api.metrics import AGGREGATIONS, CHOICE_METRICS, METRICS, AnswerNormalization, aggregate
from vrp_bench.api.registry import suggest
from vrp_bench.api.yaml_dialect import FunctionRef

log = logging.getLogger("vrp_bench")

SUPPORTED_OUTPUT_TYPES = ("generate_until", "multiple_choice", "loglikelihood")
SCORED_BY_LIKELIHOOD = ("multiple_choice", "loglikelihood")
LOCAL_BUILDERS = frozenset({"csv", "json", "parquet", "text", "pandas", "arrow", "imagefolder"})
INERT_KEYS = frozenset(
    {"should_decontaminate", "doc_to_decontamination_query", "model_specific_target_kwargs",
     "model_specific_generation_kwargs", "group_alias", "task_alias", "dataset_trust_remote_code", "use_prompt",
     "cluster_key", "group"}
)
"""Keys lmms-eval understands that change nothing VRP-Bench computes (``group`` inside a task is an old
spelling of ``tag``, read as such)."""
LMMS_EVAL_DATASET_KEYS = frozenset(
    {"video", "cache_dir", "From_YouTube", "builder_script", "force_download", "force_unzip", "local_files_only",
     "create_link", "max_retries", "num_proc", "load_from_disk"}
)
"""``dataset_kwargs`` keys lmms-eval itself acts on (downloads, video archives): never passed to ``load_dataset``."""
_NAME_LIKE = re.compile(r"[A-Za-z_][\w.\-]*")
"""A doc_to_text / doc_to_target literal that looks like a column or function name, most likely a typo of one."""
GENERATION_KEYS = frozenset(f.name for f in fields(GenerationSettings))

_jinja = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined)


@functools.lru_cache(maxsize=256)
def _template(source: str) -> jinja2.Template:
    """A compiled Jinja template (doc_to_text / doc_to_target), compiled once per source text."""
    return _jinja.from_string(source)


@dataclass(frozen=True)
class MetricSpec:
    """One ``metric_list`` entry."""

    metric: str
    aggregation: str | FunctionRef = "mean"
    """A registered aggregation's name, or a ``!function`` (checked to resolve when the YAML is read)."""
    higher_is_better: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict)
    """The entry's other keys, passed to a registered metric (e.g. exact_match's ``ignore_case``)."""

    def as_entry(self) -> dict[str, Any]:
        """The ``metric_list`` entry as a YAML writes it (the metric's own keys beside the three standard ones)."""
        return {"metric": self.metric, "aggregation": self.aggregation, "higher_is_better": self.higher_is_better,
                **self.kwargs}


@dataclass
class TaskConfig:
    """The validated keys of one task YAML (after ``include`` merging)."""

    task: str
    yaml_path: Path
    tag: list[str] = field(default_factory=list)
    dataset_path: str | None = None
    dataset_name: str | None = None
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    test_split: str | None = None
    validation_split: str | None = None
    process_docs: Any = None
    doc_to_visual: Any = None
    doc_to_text: Any = None
    doc_to_target: Any = None
    doc_to_messages: Any = None
    doc_to_choice: Any = None
    output_type: str = "generate_until"
    generation_kwargs: dict[str, Any] = field(default_factory=dict)
    process_results: Any = None
    process_results_use_image: bool = False
    full_docs: bool = False
    metric_list: list[MetricSpec] = field(default_factory=lambda: [MetricSpec("exact_match")])
    filter_list: list[dict[str, Any]] | None = None
    score_key: str = "score"
    """In a dict-valued per-sample metric (e.g. POPE's), the key holding the 0/1 score that says correct."""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    description: str = ""
    num_fewshot: int = 0
    fewshot_split: str | None = None
    training_split: str | None = None
    fewshot_config: dict[str, Any] = field(default_factory=dict)
    repeats: int = 1
    reasoning_tags: list[list[str]] | str | None = None
    auto_strip_thinking: bool = False
    lmms_eval_specific_kwargs: dict[str, dict[str, Any]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    ignored_keys: list[str] = field(default_factory=list)
    ignored_generation_keys: list[str] = field(default_factory=list)

    @property
    def version(self) -> Any:
        return self.metadata.get("version", 0)

    @property
    def split(self) -> str:
        split = self.test_split or self.validation_split
        if not split:
            raise UsageError(f"{self.yaml_path}: task {self.task!r} names neither test_split nor validation_split")
        return split

    @classmethod
    def from_yaml_dict(cls, raw: dict[str, Any], yaml_path: Path) -> "TaskConfig":
        """Check a merged task YAML and build its config; every problem is a one-line UsageError whose ``cause``
        names its kind. Keys lmms-eval knows but VRP-Bench does not use are ignored; other keys are warned about
        (key and file), as are lmms-eval generation keys that VRP-Bench's models do not take."""
        where = f"{yaml_path}: task {raw.get('task')!r}"
        raw = dict(raw)
        if "model_specific_prompt_kwargs" in raw:  # lmms-eval's older name for the same key
            raw.setdefault("lmms_eval_specific_kwargs", raw.pop("model_specific_prompt_kwargs"))
        known = {f.name for f in fields(cls)} - {"yaml_path", "ignored_keys", "ignored_generation_keys"}
        unknown = sorted(k for k in raw if k not in known and k not in INERT_KEYS)
        for key in unknown:
            log.warning("%s: unknown key %r is ignored%s", where, key, suggest(key, sorted(known)))
        output_type = raw.get("output_type", "generate_until")
        if output_type not in SUPPORTED_OUTPUT_TYPES:
            raise UsageError(f"{where}: output_type {output_type!r} is not supported (supported: "
                             f"{', '.join(SUPPORTED_OUTPUT_TYPES)})", cause=f"output_type {output_type}")
        if int(raw.get("repeats") or 1) > 1:
            raise UsageError(f"{where}: repeats > 1 (several answers per doc) is not supported", cause="repeats > 1")
        if raw.get("doc_to_text") is None and raw.get("doc_to_messages") is None:
            raise UsageError(f"{where}: no doc_to_text (nor doc_to_messages): the task must say how to build the prompt",
                             cause="no prompt")
        if raw.get("doc_to_target") is None:
            raise UsageError(f"{where}: no doc_to_target: the task must say what the reference answer is",
                             cause="no doc_to_target")
        if raw.get("num_fewshot") and raw.get("doc_to_text") is None:
            raise UsageError(f"{where}: num_fewshot needs doc_to_text (the few-shot examples are written as text)",
                             cause="few-shot without doc_to_text")
        if output_type == "multiple_choice" and raw.get("doc_to_choice") is None:
            raise UsageError(f"{where}: a multiple_choice task needs doc_to_choice (its answer options)",
                             cause="multiple_choice without doc_to_choice")
        if not isinstance(raw.get("dataset_path"), str):
            raise UsageError(f"{where}: dataset_path must be a hub id, a local folder or a builder such as parquet",
                             cause="no dataset_path")
        tags = raw.get("tag") or raw.get("group") or []
        generation_kwargs = dict(raw.get("generation_kwargs") or {})
        ignored_generation = sorted(k for k in generation_kwargs if k not in GENERATION_KEYS)
        for key in ignored_generation:
            log.info("%s: generation_kwargs key %r is not one VRP-Bench's models take; ignored", where, key)
        num_fewshot = raw.get("num_fewshot") or 0
        if not isinstance(num_fewshot, int) or num_fewshot < 0:
            raise UsageError(f"{where}: num_fewshot must be a non-negative integer, got {num_fewshot!r}", cause="bad num_fewshot")
        config = cls(
            task=raw["task"],
            yaml_path=yaml_path,
            tag=[tags] if isinstance(tags, str) else list(tags),
            dataset_path=raw["dataset_path"],
            dataset_name=raw.get("dataset_name"),
            dataset_kwargs=dict(raw.get("dataset_kwargs") or {}),
            test_split=raw.get("test_split"),
            validation_split=raw.get("validation_split"),
            process_docs=raw.get("process_docs"),
            doc_to_visual=raw.get("doc_to_visual"),
            doc_to_text=raw.get("doc_to_text"),
            doc_to_target=raw.get("doc_to_target"),
            doc_to_messages=raw.get("doc_to_messages"),
            doc_to_choice=raw.get("doc_to_choice"),
            output_type=output_type,
            generation_kwargs={k: v for k, v in generation_kwargs.items() if k in GENERATION_KEYS},
            process_results=raw.get("process_results"),
            process_results_use_image=bool(raw.get("process_results_use_image", False)),
            full_docs=bool(raw.get("full_docs", False)),
            metric_list=_metric_specs(raw.get("metric_list"), where, output_type, raw.get("process_results") is not None),
            filter_list=raw.get("filter_list"),
            score_key=str(raw.get("score_key") or "score"),
            target_delimiter=str(raw.get("target_delimiter", " ")),
            fewshot_delimiter=str(raw.get("fewshot_delimiter", "\n\n")),
            description=str(raw.get("description") or ""),
            num_fewshot=num_fewshot,
            fewshot_split=raw.get("fewshot_split"),
            training_split=raw.get("training_split"),
            fewshot_config=dict(raw.get("fewshot_config") or {}),
            reasoning_tags=raw.get("reasoning_tags"),
            auto_strip_thinking=bool(raw.get("auto_strip_thinking", False)),
            lmms_eval_specific_kwargs=raw.get("lmms_eval_specific_kwargs"),
            metadata=_metadata(raw.get("metadata"), where),
            ignored_keys=unknown,
            ignored_generation_keys=ignored_generation,
        )
        config.generation_settings({})  # validate generation_kwargs now, not on the first doc
        config.split  # noqa: B018 - validates that a split is named
        config.filter_pipelines()  # validates filter_list now
        return config

    def answer_normalization(self) -> AnswerNormalization:
        """How this task's answers are compared where VRP-Bench normalises them (self-consistency):
        ``metadata.answer_normalization`` (``api.metrics.AnswerNormalization``), the defaults when absent."""
        return AnswerNormalization.from_metadata(self.metadata.get("answer_normalization"),
                                                 f"{self.yaml_path}: task {self.task!r}")

    def filter_pipelines(self) -> list[FilterPipeline]:
        """The answer-filter pipelines (``api.filters``), the primary one (whose metrics say correct) first;
        ``reasoning_tags`` / ``auto_strip_thinking`` put a strip-thinking step in front of each, as lmms-eval."""
        where = f"{self.yaml_path}: task {self.task!r}"
        pipelines = build_pipelines(self.filter_list, where)
        tags = self.reasoning_tags
        if isinstance(tags, str):
            try:
                tags = None if tags == "none" else json.loads(tags)
            except json.JSONDecodeError:
                raise UsageError(f"{where}: reasoning_tags must be none or a list of [opening, closing] tag pairs",
                                 cause="malformed reasoning_tags") from None
        if tags or self.auto_strip_thinking:
            step = strip_thinking(tags or None)
            for pipeline in pipelines:
                pipeline.steps.insert(0, step)
        return pipelines

    def generation_settings(self, overrides: dict[str, Any]) -> GenerationSettings:
        """This task's ``generation_kwargs`` with ``--gen_kwargs`` overrides applied on top."""
        generation_settings(overrides, "--gen_kwargs")  # a bad override is the command line's, not the YAML's
        return generation_settings({**self.generation_kwargs, **overrides}, f"{self.yaml_path}: task {self.task!r}")


def generation_settings(kwargs: dict[str, Any], where: str) -> GenerationSettings:
    """``GenerationSettings`` from lmms-eval ``generation_kwargs``; an unknown key or a bad value is a one-line
    ``UsageError`` that starts with ``where`` (the YAML file and task, or "--gen_kwargs")."""
    bad = [k for k in kwargs if k not in GENERATION_KEYS]
    if bad:
        known = sorted(GENERATION_KEYS)
        raise UsageError(f"{where}: unknown generation_kwargs key {bad[0]!r}{suggest(bad[0], known)}; "
                         f"known: {', '.join(known)}")
    merged = dict(kwargs)
    until = merged.get("until") or ()
    merged["until"] = (until,) if isinstance(until, str) else tuple(until)
    try:
        settings = GenerationSettings(**merged)
        for name, kind, smallest in (("max_new_tokens", int, 1), ("num_beams", int, 1), ("temperature", float, 0),
                                     ("top_p", float, 0)):
            value = getattr(settings, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < smallest:
                raise ValueError(f"{name} must be {'a positive' if smallest else 'a non-negative'} {kind.__name__}, "
                                 f"got {value!r}")
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where}: bad generation_kwargs: {exc}") from None
    return settings


METRIC_ENTRY_KEYS = ("metric", "aggregation", "higher_is_better")


def _metric_specs(raw: Any, where: str, output_type: str, has_process_results: bool) -> list[MetricSpec]:
    if raw is None:
        default = {"generate_until": "exact_match", "multiple_choice": "acc", "loglikelihood": "perplexity"}
        return [MetricSpec(default[output_type], "perplexity" if output_type == "loglikelihood" else "mean",
                           output_type != "loglikelihood")]
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{where}: metric_list must be a non-empty list of {{metric, aggregation, higher_is_better}}",
                         cause="malformed metric_list")
    specs = []
    for entry in raw:
        if not isinstance(entry, dict) or "metric" not in entry:
            raise UsageError(f"{where}: every metric_list entry needs a 'metric' key, got {entry!r}",
                             cause="malformed metric_list")
        if entry.get("hf_evaluate"):
            raise UsageError(f"{where}: metric {entry['metric']!r} is a Hugging Face evaluate metric (downloaded from "
                             "the hub); VRP-Bench does not fetch metrics", cause="hf_evaluate metric")
        metric = entry["metric"]
        if isinstance(metric, FunctionRef):
            raise UsageError(f"{where}: metric {metric.dotted_name!r} is a function; compute it in process_results",
                             cause="metric given as a function")
        aggregation = entry.get("aggregation", "mean")
        try:
            if isinstance(aggregation, FunctionRef):
                aggregation.resolve()  # fails now, not after the run
            elif aggregation not in AGGREGATIONS:
                AGGREGATIONS.get(aggregation)  # raises with suggestions
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}", cause=exc.cause or f"unknown aggregation {aggregation}") from None
        if not has_process_results:
            known = CHOICE_METRICS | {"perplexity"} if output_type in SCORED_BY_LIKELIHOOD else {name for name, _ in METRICS.items()}
            if str(metric) not in known:
                raise UsageError(f"{where}: unknown metric {metric!r}{suggest(str(metric), sorted(known))}; known "
                                 f"{output_type} metrics: {', '.join(sorted(known))} (others: compute them in "
                                 "process_results)", cause=f"unknown metric {metric}")
        kwargs = {k: v for k, v in entry.items() if k not in METRIC_ENTRY_KEYS and k != "hf_evaluate"}
        specs.append(MetricSpec(str(metric), aggregation, bool(entry.get("higher_is_better", True)), kwargs))
    return specs


def _accepts_two_args(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional)


def _resolve(value: Any) -> Any:
    return value.resolve() if isinstance(value, FunctionRef) else value


def stable_seed(*parts: object) -> int:
    """A 31-bit seed derived from ``parts`` that is the same in every process (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class DocError(Exception):
    """A single doc that cannot be turned into a request (e.g. an image that does not decode)."""


class Task:
    """A loaded task: its docs and how to turn them into requests and scores."""

    def __init__(self, config: TaskConfig) -> None:
        self.config = config
        self.name = config.task
        self._process_docs = _resolve(config.process_docs)
        self._doc_to_visual = _resolve(config.doc_to_visual)
        self._doc_to_text = _resolve(config.doc_to_text)
        self._doc_to_target = _resolve(config.doc_to_target)
        self._doc_to_messages = _resolve(config.doc_to_messages)
        self._doc_to_choice = _resolve(config.doc_to_choice)
        self._process_results = _resolve(config.process_results)
        self._doc_to_boxes = _resolve(config.metadata.get("grounding_boxes"))
        self.filters = config.filter_pipelines()
        self.answer_normalization = config.answer_normalization()
        self._dataset: Any = None
        self._fewshot_pool: Any = None
        self._fewshot_same_split = False
        self._full_docs: list[dict[str, Any]] | None = None
        self._image_columns: list[str] = []

    @property
    def scored_by_likelihood(self) -> bool:
        """Whether answers are options scored by the model's log-likelihood (multiple_choice, loglikelihood)."""
        return self.config.output_type in SCORED_BY_LIKELIHOOD

    @property
    def primary_filter(self) -> str:
        """The filter pipeline whose first metric says whether a sample is correct."""
        return self.filters[0].name

    # -- data ---------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the split (and the few-shot split) with ``process_docs`` applied."""
        config = self.config
        dataset = self._load_split(config.split)
        if config.num_fewshot:
            split = config.fewshot_split or config.training_split or config.validation_split or config.split
            self._fewshot_same_split = split == config.split
            pool = dataset if self._fewshot_same_split else self._load_split(split)
            self._fewshot_pool = pool.remove_columns([c for c in pool.column_names if _is_image_feature(pool.features[c])])
        self._image_columns = [name for name, feature in dataset.features.items() if _is_image_feature(feature)]
        for name in self._image_columns:  # decode per doc, so one corrupt image fails one sample, not the task
            dataset = dataset.cast_column(name, _undecoded(dataset.features[name]))
        self._dataset = dataset
        self._check_fields()

    def _load_split(self, split: str) -> Any:
        """One split (local files, ``load_from_disk`` folders or hub ids) with ``process_docs`` applied;
        ``dataset_kwargs`` keys lmms-eval acts on itself are not passed to ``load_dataset``."""
        import datasets

        config = self.config
        kwargs = {k: v for k, v in config.dataset_kwargs.items() if k not in LMMS_EVAL_DATASET_KEYS}
        base = config.yaml_path.parent
        try:
            if config.dataset_kwargs.get("load_from_disk"):
                path = Path(config.dataset_path)
                dataset = datasets.load_from_disk(str(path if path.is_absolute() else base / path))
                if isinstance(dataset, datasets.DatasetDict):
                    dataset = dataset[split]
            else:
                if "data_files" in kwargs:
                    kwargs["data_files"] = _anchor_paths(kwargs["data_files"], base)
                dataset = datasets.load_dataset(config.dataset_path, name=config.dataset_name, split=split, **kwargs)
        except Exception as exc:  # datasets raises many types; all mean "this data is not available"
            raise UsageError(f"task {self.name!r}: cannot load dataset {config.dataset_path!r}: {one_line(exc)}") from None
        return self._process_docs(dataset) if self._process_docs is not None else dataset

    def _check_fields(self) -> None:
        columns = set(self._dataset.column_names)
        for key in ("doc_to_text", "doc_to_target", "doc_to_visual"):
            value = getattr(self.config, key)
            if not isinstance(value, str) or value in columns:
                continue
            if key == "doc_to_visual":
                raise UsageError(f"task {self.name!r}: doc_to_visual names column {value!r}, but the dataset has {sorted(columns)}")
            variables = jinja2.meta.find_undeclared_variables(_jinja.parse(value))
            if variables - columns:
                raise UsageError(f"task {self.name!r}: {key} uses field {sorted(variables - columns)[0]!r}, but the "
                                 f"dataset has {sorted(columns)}")
            if not variables and _NAME_LIKE.fullmatch(value):
                log.warning("task %r: %s %r names no column%s and is no template, so every doc gets the literal "
                            "text %r (columns: %s); if that is meant, write it as a template: \"{{ '%s' }}\"",
                            self.name, key, value, suggest(value, sorted(columns)), value,
                            ", ".join(sorted(columns)), value)

    def __len__(self) -> int:
        return len(self._dataset)

    def doc(self, doc_id: int) -> dict[str, Any]:
        """Doc ``doc_id`` with its images decoded; a corrupt image raises ``DocError``."""
        import datasets

        row = dict(self._dataset[doc_id])
        for name in self._image_columns:
            try:
                value = row[name]
                decoder = datasets.Image()
                with strict_decoding():
                    row[name] = ([decoder.decode_example(v) for v in value] if isinstance(value, list)
                                 else decoder.decode_example(value))
            except Exception as exc:
                raise DocError(f"image column {name!r} does not decode: {one_line(exc)}") from None
        return row

    # -- rendering ----------------------------------------------------------------------------
    def prompt_kwargs(self, prompt_keys: tuple[str, ...]) -> dict[str, Any] | None:
        """``lmms_eval_specific_kwargs`` for a model, resolved as lmms-eval resolves it: the entry of the first
        of ``prompt_keys`` the table names replaces the table; otherwise the table with ``default``'s keys (else
        ``dataset``'s) merged in at the top level."""
        table = self.config.lmms_eval_specific_kwargs
        if table is None:
            return None
        for key in prompt_keys:
            if key in table:
                return table[key]
        for fallback in ("default", "dataset"):
            if fallback in table:
                return {**table, **(table[fallback] or {})}
        return dict(table)

    def _apply(self, spec: Any, doc: dict[str, Any], prompt_kwargs: dict[str, Any] | None) -> Any:
        """Evaluate a doc_to_* spec: a column name, a Jinja template, a callable or a literal."""
        if callable(spec):
            return spec(doc, prompt_kwargs) if prompt_kwargs is not None and _accepts_two_args(spec) else spec(doc)
        if isinstance(spec, str):
            return doc[spec] if spec in doc else _template(spec).render(**doc)
        return spec

    def render(
        self, doc_id: int, prompt_kwargs: dict[str, Any] | None, overrides: dict[str, Any], run_seed: int
    ) -> tuple[dict[str, Any], Request]:
        """Doc ``doc_id`` and its request; any failure of this one doc raises ``DocError`` with the reason."""
        try:
            doc = self.doc(doc_id)
            with strict_decoding():
                images = _as_images(self._apply(self._doc_to_visual, doc, prompt_kwargs))
            messages = self._doc_to_messages(doc, prompt_kwargs) if self._doc_to_messages is not None else None
            if messages is not None and not images:
                parts = _message_parts(messages)
                images = _as_images([p.get("url") or p.get("image") for p in parts if p.get("type") == "image"])
            if self._doc_to_text is not None:
                prompt = str(self._apply(self._doc_to_text, doc, prompt_kwargs))
            else:
                prompt = "\n".join(p["text"] for p in _message_parts(messages) if p.get("type") == "text")
            context = self._context(doc, doc_id, run_seed, prompt_kwargs)
            prompt = context + prompt
            if messages is not None and context:
                messages = _with_context(messages, context)
            target = self.target(doc)
        except (DocError, UsageError):
            raise
        except Exception as exc:
            raise DocError(f"{type(exc).__name__}: {one_line(exc)}") from None
        request = Request(
            task=self.name,
            doc_id=doc_id,
            images=images,
            prompt=prompt,
            messages=messages,
            generation=self.config.generation_settings(overrides),
            seed=stable_seed(run_seed, self.name, doc_id),
            target=target,
        )
        return doc, request

    def _context(self, doc: dict[str, Any], doc_id: int, run_seed: int, prompt_kwargs: dict[str, Any] | None) -> str:
        """What comes before the doc's own prompt: the ``description`` (a Jinja template over the doc) and, with
        ``num_fewshot``, that many solved examples (text + target_delimiter + target, joined by
        fewshot_delimiter) from the few-shot split, never the doc itself. Examples are drawn per doc with a seed
        from the run's seed (``fewshot_config: {sampler: first_n}``: the split's first ones)."""
        config = self.config
        context = ""
        if config.description:
            context = _template(config.description).render(**doc)
        if not config.num_fewshot:
            return context
        pool = self._fewshot_pool
        candidates = [i for i in range(len(pool)) if not (self._fewshot_same_split and i == doc_id)]
        if len(candidates) < config.num_fewshot:
            raise UsageError(f"task {self.name!r}: num_fewshot {config.num_fewshot} but the few-shot split has "
                             f"{len(candidates)} docs", cause="too few few-shot docs")
        if config.fewshot_config.get("sampler", "default") == "first_n":
            chosen = candidates[: config.num_fewshot]
        else:
            chosen = random.Random(stable_seed(run_seed, self.name, doc_id, "fewshot")).sample(candidates, config.num_fewshot)
        examples = []
        for index in chosen:
            example = dict(pool[index])
            text = self._apply(self._doc_to_text, example, prompt_kwargs)
            target = self._apply(self._doc_to_target, example, None)
            choices = self.choices(example) if self._doc_to_choice is not None else None
            if choices is not None and isinstance(text, int):
                text = choices[text]
            if isinstance(target, (list, tuple)):
                target = target[0]
            elif choices is not None and isinstance(target, int):
                target = choices[target]
            examples.append(f"{text}{config.target_delimiter}{target}")
        return context + config.fewshot_delimiter.join(examples) + config.fewshot_delimiter

    def target(self, doc: dict[str, Any]) -> str | list[str]:
        """The reference answer(s) of a doc (for a task with options and an index target: the option's text)."""
        value = self._apply(self._doc_to_target, doc, None)
        if self._doc_to_choice is not None and isinstance(value, int) and not isinstance(value, bool):
            choices = self.choices(doc)
            return choices[value] if 0 <= value < len(choices) else str(value)
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)

    def choices(self, doc: dict[str, Any]) -> list[str]:
        """The doc's answer options (``doc_to_choice``: a column, a Jinja template giving a list, a list, a mapping
        (its values) or a function)."""
        spec = self._doc_to_choice
        if isinstance(spec, dict):
            return [str(v) for v in spec.values()]
        if isinstance(spec, str) and spec not in doc:
            import ast

            value = ast.literal_eval(_template(spec).render(**doc))
        else:
            value = self._apply(spec, doc, None)
        return [str(v) for v in value]

    def option_requests(self, doc: dict[str, Any], request: Request) -> tuple[list[Request], list[str]]:
        """For a task scored by likelihood: the requests and options to score (each option after
        ``target_delimiter``, as lmms-eval builds them)."""
        if self.config.output_type == "loglikelihood":
            target = self.target(doc)
            options = [target[0] if isinstance(target, list) else target]
        else:
            options = self.choices(doc)
        return [request] * len(options), [f"{self.config.target_delimiter}{option}" for option in options]

    # -- scoring ------------------------------------------------------------------------------
    def results_doc(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The doc as lmms-eval hands it to ``process_results``: without its image columns (unless the task sets
        ``process_results_use_image``)."""
        if self.config.process_results_use_image:
            return doc
        return {k: v for k, v in doc.items() if k not in self._image_columns}

    def _call_process_results(self, doc: dict[str, Any], results: list[Any]) -> dict[str, Any]:
        kwargs = {"full_docs": self.full_docs()} if self.config.full_docs else {}
        values = self._process_results(self.results_doc(doc), results, **kwargs)
        if not isinstance(values, dict):
            raise UsageError(f"task {self.name!r}: process_results returned {type(values).__name__}, not a dict of metrics")
        if not any(s.metric in values for s in self.config.metric_list):
            raise UsageError(f"task {self.name!r}: process_results returned none of the metrics metric_list names "
                             f"({', '.join(s.metric for s in self.config.metric_list)}); it returned {sorted(values)}")
        return {s.metric: values[s.metric] for s in self.config.metric_list if s.metric in values}

    def full_docs(self) -> list[dict[str, Any]]:
        """Every doc of the split without images (``full_docs: true`` tasks get them in ``process_results``)."""
        if self._full_docs is None:
            self._full_docs = [self.results_doc(dict(row)) for row in self._dataset]
        return self._full_docs

    def score(self, doc: dict[str, Any], prediction: str) -> dict[str, dict[str, Any]]:
        """Per filter pipeline, the sample's ``filtered`` answer and metric values (keyed by the metric names of
        ``metric_list``; ``process_results`` may return only some of them for a doc, as lmms-eval allows)."""
        scores = {}
        target = self.target(doc) if self._process_results is None else None
        for pipeline in self.filters:
            filtered = pipeline.apply([prediction], doc)
            results = [filtered] if not isinstance(filtered, list) else filtered
            results = [r.strip() if isinstance(r, str) else r for r in results]
            if self._process_results is not None:
                values = self._call_process_results(doc, results)
            else:
                answer = results[0] if results else ""
                values = {s.metric: METRICS.get(s.metric)(answer, target, **s.kwargs) for s in self.config.metric_list}
            scores[pipeline.name] = {"filtered": filtered, "metrics": values}
        return scores

    def score_options(self, doc: dict[str, Any], options: list[str], option_scores: list[OptionScore]) -> dict[str, Any]:
        """The metrics of a sample scored by likelihood, from each option's log-likelihood, as lmms-eval computes
        them: acc (the most likely option is the gold one), acc_norm (the same after dividing each log-likelihood
        by the option's length in characters), exact_match (greedy decoding gives the gold option), f1 / mcc
        ((gold, predicted) pairs), perplexity (loglikelihood tasks: the log-likelihood); with ``process_results``,
        it gets lmms-eval's (loss, is_greedy) pairs, loss = -log-likelihood."""
        logprobs = [float(s.logprob) for s in option_scores]  # type: ignore[arg-type]
        if self._process_results is not None:
            return self._call_process_results(doc, [(-lp, s.is_greedy) for lp, s in zip(logprobs, option_scores)])
        wanted = {s.metric for s in self.config.metric_list}
        if self.config.output_type == "loglikelihood":
            values = {"perplexity": logprobs[0], "acc": float(option_scores[0].is_greedy)}
            return {k: v for k, v in values.items() if k in wanted}
        choices = [option[len(self.config.target_delimiter):] for option in options]
        gold = self._apply(self._doc_to_target, doc, None)
        golds = list(gold) if isinstance(gold, (list, tuple)) else [gold]
        golds = [choices.index(g) if isinstance(g, str) and g in choices else g for g in golds]
        golds = [g if isinstance(g, int) and 0 <= g < len(choices) else None for g in golds]
        predicted = max(range(len(choices)), key=lambda k: logprobs[k])
        predicted_norm = max(range(len(choices)), key=lambda k: logprobs[k] / max(1, len(choices[k])))
        values = {
            "acc": float(predicted in golds),
            "acc_norm": float(predicted_norm in golds),
            "exact_match": float(any(option_scores[g].is_greedy for g in golds if g is not None)),
            "f1": [golds[0], predicted],
            "mcc": [golds[0], predicted],
        }
        return {k: v for k, v in values.items() if k in wanted}

    def aggregate(
        self, metric: MetricSpec, values: list[Any], output_folder: Path | None = None
    ) -> tuple[float | None, float | None]:
        """One metric over the scored samples and its standard error (``api.metrics.aggregate``; task code that
        writes files, e.g. a submission, writes them into ``output_folder``)."""
        aggregation = metric.aggregation
        function = aggregation.resolve() if isinstance(aggregation, FunctionRef) else aggregation
        return aggregate(values, function, output_folder)

    def boxes(self, doc: dict[str, Any]) -> list[list[float]] | None:
        """The doc's ground-truth boxes ([x0, y0, x1, y1] pixels of its first image), if the task names them.

        Named in the YAML as ``metadata: {grounding_boxes: <column or !function>}``: metadata is the
        dialect's free-form key, so the same YAML still loads in lmms-eval.
        """
        if self._doc_to_boxes is None:
            return None
        return [list(map(float, box)) for box in self._apply(self._doc_to_boxes, doc, None)]

    def doc_fields(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The doc's JSON-ready, non-image fields (for per-sample logs)."""
        return {k: v for k, v in doc.items() if k not in self._image_columns and _json_ready(v)}


def _metadata(value: Any, where: str) -> dict[str, Any]:
    """A task's ``metadata``: a mapping, or (as many lmms-eval tasks write it) a list of mappings merged in order."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        merged: dict[str, Any] = {}
        for item in value:
            merged.update(item)
        return merged
    raise UsageError(f"{where}: metadata must be a mapping or a list of mappings, got {type(value).__name__}")


def _anchor_paths(value: Any, base: Path) -> Any:
    """Make relative ``data_files`` entries relative to the task's YAML folder."""
    if isinstance(value, str):
        if "://" in value or os.path.isabs(value):
            return value
        return str(base / value)
    if isinstance(value, dict):
        return {k: _anchor_paths(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_anchor_paths(v, base) for v in value]
    return value


def _is_image_feature(feature: Any) -> bool:
    """True for an ``Image`` column or a list-of-``Image`` column."""
    import datasets

    inner = getattr(feature, "feature", None)
    return isinstance(feature, datasets.Image) or isinstance(inner, datasets.Image)


def _undecoded(feature: Any) -> Any:
    """The same image feature with decoding switched off."""
    import datasets

    if isinstance(feature, datasets.Image):
        return datasets.Image(decode=False)
    return datasets.List(datasets.Image(decode=False))


@contextlib.contextmanager
def strict_decoding() -> Iterator[None]:
    """Decode images strictly inside: a truncated file is an error, even where imported task code (lmms-eval's
    ``api.task`` does) switched PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` on for the whole process."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _as_images(value: Any) -> list[Image.Image]:
    """A doc_to_visual result as a list of decoded PIL images (forcing the decode now)."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    images = []
    for item in items:
        if not isinstance(item, Image.Image):
            raise DocError(f"doc_to_visual returned {type(item).__name__}, expected PIL images")
        try:
            with strict_decoding():
                item.load()
        except Exception as exc:
            raise DocError(f"image does not decode: {one_line(exc)}") from None
        images.append(item)
    return images


def _with_context(messages: list[dict[str, Any]], context: str) -> list[dict[str, Any]]:
    """Chat messages with ``context`` (description, few-shot examples) as the first text of the first user turn."""
    messages = [dict(m) for m in messages]
    for message in messages:
        if message.get("role") == "user":
            content = message.get("content")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
            message["content"] = [{"type": "text", "text": context}, *parts]
            break
    return messages


def _message_parts(messages: Any) -> Iterator[dict[str, Any]]:
    for message in messages or []:
        content = message.get("content")
        if isinstance(content, str):
            yield {"type": "text", "text": content}
        else:
            yield from content or []


def _json_ready(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_json_ready(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_ready(v) for k, v in value.items())
    return False
