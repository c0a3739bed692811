"""A task: one lmms-eval-style YAML config turned into docs, requests and scores.

``TaskConfig.from_yaml_dict`` validates the dialect's keys; ``Task`` loads the dataset, renders
each doc into a ``Request`` (images, prompt, generation settings) and scores the model's answer
with ``process_results`` or the metrics named in ``metric_list``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.sandbox
from PIL import Image

from vrp_bench.api.errors import UsageError
from vrp_bench.api.instance import GenerationSettings, Request
from vrp_bench.api.metrics import AGGREGATIONS, METRICS, aggregate
from vrp_bench.api.registry import suggest
from vrp_bench.api.yaml_dialect import FunctionRef

SUPPORTED_OUTPUT_TYPES = ("generate_until",)
LOCAL_BUILDERS = frozenset({"csv", "json", "parquet", "text", "pandas", "arrow", "imagefolder"})
# Keys lmms-eval understands that change nothing in a zero-shot generate_until run.
INERT_KEYS = frozenset(
    {"training_split", "fewshot_split", "target_delimiter", "fewshot_delimiter", "should_decontaminate",
     "repeats", "description", "model_specific_target_kwargs", "model_specific_generation_kwargs", "group_alias",
     "task_alias", "fewshot_config", "dataset_trust_remote_code"}
)
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
    output_type: str = "generate_until"
    generation_kwargs: dict[str, Any] = field(default_factory=dict)
    process_results: Any = None
    metric_list: list[MetricSpec] = field(default_factory=lambda: [MetricSpec("exact_match")])
    lmms_eval_specific_kwargs: dict[str, dict[str, Any]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    ignored_keys: list[str] = field(default_factory=list)

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
        """Check a merged task YAML and build its config; every problem is a one-line UsageError."""
        where = f"{yaml_path}: task {raw.get('task')!r}"
        raw = dict(raw)
        if "model_specific_prompt_kwargs" in raw:  # lmms-eval's older name for the same key
            raw.setdefault("lmms_eval_specific_kwargs", raw.pop("model_specific_prompt_kwargs"))
        known = {f.name for f in fields(cls)} - {"yaml_path", "ignored_keys"}
        unknown = [k for k in raw if k not in known and k not in INERT_KEYS]
        if "filter_list" in unknown:
            raise UsageError(f"{where}: filter_list is not supported yet; remove it or score in process_results")
        if raw.get("num_fewshot"):
            raise UsageError(f"{where}: num_fewshot > 0 is not supported yet (zero-shot only)")
        output_type = raw.get("output_type", "generate_until")
        if output_type not in SUPPORTED_OUTPUT_TYPES:
            raise UsageError(f"{where}: output_type {output_type!r} is not supported yet (only generate_until)")
        if raw.get("doc_to_text") is None and raw.get("doc_to_messages") is None:
            raise UsageError(f"{where}: no doc_to_text (nor doc_to_messages): the task must say how to build the prompt")
        if raw.get("doc_to_target") is None:
            raise UsageError(f"{where}: no doc_to_target: the task must say what the reference answer is")
        if not isinstance(raw.get("dataset_path"), str):
            raise UsageError(f"{where}: dataset_path must be a hub id, a local folder or a builder such as parquet")
        tags = raw.get("tag") or []
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
            output_type=output_type,
            generation_kwargs=dict(raw.get("generation_kwargs") or {}),
            process_results=raw.get("process_results"),
            metric_list=_metric_specs(raw.get("metric_list"), where),
            lmms_eval_specific_kwargs=raw.get("lmms_eval_specific_kwargs"),
            metadata=_metadata(raw.get("metadata"), where),
            ignored_keys=sorted(k for k in unknown if k not in ("num_fewshot",)),
        )
        config.generation_settings({})  # validate generation_kwargs now, not on the first doc
        config.split  # noqa: B018 - validates that a split is named
        return config

    def generation_settings(self, overrides: dict[str, Any]) -> GenerationSettings:
        """This task's ``generation_kwargs`` with ``--gen_kwargs`` overrides applied on top."""
        merged = {**self.generation_kwargs, **overrides}
        bad = [k for k in merged if k not in GENERATION_KEYS]
        if bad:
            raise UsageError(
                f"{self.yaml_path}: task {self.task!r}: unknown generation_kwargs key {bad[0]!r}"
                f"{suggest(bad[0], sorted(GENERATION_KEYS))}; known: {', '.join(sorted(GENERATION_KEYS))}"
            )
        until = merged.get("until", ())
        merged["until"] = (until,) if isinstance(until, str) else tuple(until)
        try:
            settings = GenerationSettings(**merged)
            for name, kind in (("max_new_tokens", int), ("temperature", float), ("top_p", float), ("num_beams", int)):
                value = getattr(settings, name)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"{name} must be a non-negative {kind.__name__}, got {value!r}")
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{self.yaml_path}: task {self.task!r}: bad generation_kwargs: {exc}") from None
        return settings


def _metric_specs(raw: Any, where: str) -> list[MetricSpec]:
    if raw is None:
        return [MetricSpec("exact_match")]
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{where}: metric_list must be a non-empty list of {{metric, aggregation, higher_is_better}}")
    specs = []
    for entry in raw:
        if not isinstance(entry, dict) or "metric" not in entry:
            raise UsageError(f"{where}: every metric_list entry needs a 'metric' key, got {entry!r}")
        aggregation = entry.get("aggregation", "mean")
        if isinstance(aggregation, FunctionRef):
            aggregation.resolve()  # fails now, not after the run
        elif aggregation not in AGGREGATIONS:
            AGGREGATIONS.get(aggregation)  # raises with suggestions
        specs.append(MetricSpec(str(entry["metric"]), aggregation, bool(entry.get("higher_is_better", True))))
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
        self._process_results = _resolve(config.process_results)
        self._doc_to_boxes = _resolve(config.metadata.get("grounding_boxes"))
        if self._process_results is None:
            for spec in config.metric_list:
                if spec.metric not in METRICS:
                    METRICS.get(spec.metric)  # raises with suggestions
        self._dataset: Any = None
        self._image_columns: list[str] = []

    # -- data ---------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the split (local files, ``load_from_disk`` folders or hub ids) and apply ``process_docs``."""
        import datasets

        config = self.config
        kwargs = dict(config.dataset_kwargs)
        from_disk = bool(kwargs.pop("load_from_disk", False))
        base = config.yaml_path.parent
        try:
            if from_disk:
                path = Path(config.dataset_path)
                dataset = datasets.load_from_disk(str(path if path.is_absolute() else base / path))
                if isinstance(dataset, datasets.DatasetDict):
                    dataset = dataset[config.split]
            else:
                if "data_files" in kwargs:
                    kwargs["data_files"] = _anchor_paths(kwargs["data_files"], base)
                dataset = datasets.load_dataset(
                    config.dataset_path, name=config.dataset_name, split=config.split, **kwargs
                )
        except Exception as exc:  # datasets raises many types; all mean "this data is not available"
            raise UsageError(f"task {self.name!r}: cannot load dataset {config.dataset_path!r}: {_one_line(exc)}") from None
        if self._process_docs is not None:
            dataset = self._process_docs(dataset)
        self._image_columns = [name for name, feature in dataset.features.items() if _is_image_feature(feature)]
        for name in self._image_columns:  # decode per doc, so one corrupt image fails one sample, not the task
            dataset = dataset.cast_column(name, _undecoded(dataset.features[name]))
        self._dataset = dataset
        self._check_fields()

    def _check_fields(self) -> None:
        columns = set(self._dataset.column_names)
        for key in ("doc_to_text", "doc_to_target", "doc_to_visual"):
            value = getattr(self.config, key)
            if not isinstance(value, str) or value in columns:
                continue
            if key == "doc_to_visual":
                raise UsageError(f"task {self.name!r}: doc_to_visual names column {value!r}, but the dataset has {sorted(columns)}")
            missing = jinja2.meta.find_undeclared_variables(_jinja.parse(value)) - columns
            if missing:
                raise UsageError(
                    f"task {self.name!r}: {key} uses field {sorted(missing)[0]!r}, but the dataset has {sorted(columns)}"
                )

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
                row[name] = (
                    [decoder.decode_example(v) for v in value] if isinstance(value, list) else decoder.decode_example(value)
                )
            except Exception as exc:
                raise DocError(f"image column {name!r} does not decode: {_one_line(exc)}") from None
        return row

    # -- rendering ----------------------------------------------------------------------------
    def prompt_kwargs(self, prompt_keys: tuple[str, ...]) -> dict[str, Any] | None:
        """``lmms_eval_specific_kwargs`` for a model: ``default`` updated by the first matching model key."""
        table = self.config.lmms_eval_specific_kwargs
        if table is None:
            return None
        merged = dict(table.get("default") or {})
        for key in prompt_keys:
            if key in table:
                merged.update(table[key] or {})
                break
        return merged

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
            images = _as_images(self._apply(self._doc_to_visual, doc, prompt_kwargs))
            messages = self._doc_to_messages(doc, prompt_kwargs) if self._doc_to_messages is not None else None
            if messages is not None and not images:
                parts = _message_parts(messages)
                images = _as_images([p.get("url") or p.get("image") for p in parts if p.get("type") == "image"])
            if self._doc_to_text is not None:
                prompt = str(self._apply(self._doc_to_text, doc, prompt_kwargs))
            else:
                prompt = "\n".join(p["text"] for p in _message_parts(messages) if p.get("type") == "text")
            target = self.target(doc)
        except (DocError, UsageError):
            raise
        except Exception as exc:
            raise DocError(f"{type(exc).__name__}: {_one_line(exc)}") from None
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

    def target(self, doc: dict[str, Any]) -> str | list[str]:
        """The reference answer(s) of a doc."""
        value = self._apply(self._doc_to_target, doc, None)
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)

    # -- scoring ------------------------------------------------------------------------------
    def score(self, doc: dict[str, Any], prediction: str) -> dict[str, float]:
        """Per-sample metric values, keyed by the metric names of ``metric_list``."""
        prediction = prediction.strip()
        if self._process_results is not None:
            values = self._process_results(doc, [prediction])
            missing = [s.metric for s in self.config.metric_list if s.metric not in values]
            if missing:
                raise UsageError(f"task {self.name!r}: process_results returned no {missing[0]!r}, which metric_list names")
            return {s.metric: values[s.metric] for s in self.config.metric_list}
        target = self.target(doc)
        return {s.metric: METRICS.get(s.metric)(prediction, target) for s in self.config.metric_list}

    def aggregate(self, metric: MetricSpec, values: list[float]) -> tuple[float | None, float | None]:
        """One metric over the scored samples and its standard error (``api.metrics.aggregate``)."""
        aggregation = metric.aggregation
        return aggregate(values, aggregation.resolve() if isinstance(aggregation, FunctionRef) else aggregation)

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
            item.load()
        except Exception as exc:
            raise DocError(f"image does not decode: {_one_line(exc)}") from None
        images.append(item)
    return images


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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
