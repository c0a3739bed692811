"""VRP-Bench's models inside lmms-eval: every registered VRP model as an lmms-eval model named ``vrp_<name>``.

    python -m lmms_eval --model vrp_tiny_qwen2_vl --model_args sc_samples=10 \\
        --tasks vrp_shapes_color --include_path <tasks folder> --output_path out --log_samples

runs under lmms-eval's own evaluator: lmms-eval renders the prompts, calls ``generate_until`` / ``loglikelihood``
and scores the answers with its own metrics. The adapter (``VRPModel``; one generated subclass ``VRP_<name>`` per
VRP model, found by lmms-eval through the ``lmms_eval.models`` entry points of ``lmms_eval_manifests``) turns each
lmms-eval request into a VRP ``Request``, asks the VRP model, and also computes every reliability signal the model
captured (``Response.traces``), which lmms-eval has no place for: they are written beside lmms-eval's files.

Model args: the VRP model's own ``--model_args`` (``vrp-bench models``; e.g. ``pretrained=``, ``capture=``,
``sc_samples=``), plus

- ``seed``: the run seed of VRP's per-request seeds (``stable_seed(seed, task, doc_id)``, as ``vrp-bench`` uses);
  default: the first value of lmms-eval's ``--seed`` when run from lmms-eval's command line, else 0;
- ``vrp_output``: the folder under which VRP's files go (see below).

VRP's files: ``<root>/vrp_bench/<lmms model>/<stamp>_signals.jsonl`` (one JSON line per request: task, doc_id,
prediction, signals, signal_errors, error) and ``<stamp>_report.json`` (model, ``describe()``, settings, counts, per
task the samples with signals and per signal how many non-null values and their mean). ``<root>`` is, first found:
the ``vrp_output=`` model arg; the environment variable ``VRP_BENCH_OUTPUT``; lmms-eval's ``--output_path`` when this
process is lmms-eval's command line (``python -m lmms_eval`` / ``lmms-eval``; read from ``sys.argv``, since
lmms-eval does not pass it to models; a ``--config`` file's output_path is not seen: use ``vrp_output=``). With none,
nothing is written (one warning). Both files are rewritten atomically after every ``generate_until`` /
``loglikelihood`` call (lmms-eval makes one call per request type, all tasks together), so they are complete
whenever lmms-eval's own are.

A sample the VRP model could not answer (``Response.error``; an image that does not decode) is answered "" (lmms-eval
scores it as wrong: it has no notion of a failed sample) and its reason is recorded in VRP's files; nothing raises
for one sample. Errors that are not one sample's (bad model args, a model that cannot score options) propagate.

Differences from ``vrp-bench`` on the same task: prompts are lmms-eval's (``lmms_eval_specific_kwargs`` are looked
up under the lmms-eval model name ``vrp_<name>``, else ``default``, not under VRP's ``prompt_keys``);
``generation_kwargs`` keys VRP does not know (``image_aspect_ratio``, ...) are ignored with one logged note per key,
and keys not given take ``GenerationSettings``' defaults (as in ``vrp-bench``); the reference answer is not passed to
the model (lmms-eval gives models no target), so signals that read it (``SignalSpec.reference``) are null, and
grounding signals (which need the doc's boxes) are null. Single process only (rank 0 of 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from loguru import logger
from PIL import Image
from tqdm import tqdm

import vrp_bench
from vrp_bench.api.errors import UsageError, one_line
from vrp_bench.api.files import write_files_atomically
from vrp_bench.api.instance import GenerationSettings, OptionScore, Request, Response
from vrp_bench.api.model import MODELS, VLM
from vrp_bench.api.task import stable_seed
from vrp_bench.builtins import register_builtins
from vrp_bench.integrations.lmms_eval_manifests import class_name, lmms_name
from vrp_bench.report.writer import json_text, jsonl_text
from vrp_bench.signals.compute import compute_signals
from vrp_bench.signals.inputs import SignalInputs

OUTPUT_ENV = "VRP_BENCH_OUTPUT"
"""Environment variable naming the folder under which VRP's files go (when no ``vrp_output=`` model arg)."""

OUTPUT_FOLDER = "vrp_bench"
"""VRP's files go to ``<root>/OUTPUT_FOLDER/<lmms model name>/``."""

GENERATION_FIELDS = {f.name: f for f in dataclasses.fields(GenerationSettings)}

FAILED_LOSS = math.inf
"""What ``loglikelihood`` returns as the loss of an option the model could not score: never lmms-eval's argmin."""


class VRPModel(lmms):
    """An lmms-eval model answering with the VRP model ``vrp_model`` (set by each generated subclass).

    ``generate_until``: each request becomes a VRP ``Request`` (images: ``doc_to_visual`` of the doc; prompt: the
    context string; ``GenerationSettings`` from its ``generation_kwargs``: until, max_new_tokens, temperature,
    do_sample, top_p, top_k, num_beams; seed: ``stable_seed(seed, task, doc_id)``), answered by the VRP model's
    ``generate``; returns the texts ("" for a failed sample).

    ``loglikelihood``: returns ``(-logprob, is_greedy)`` per request, where ``logprob`` is the VRP model's SUMMED
    log-probability of the continuation's tokens (``VLM.loglikelihood`` -> ``OptionScore``). lmms-eval's own
    transformers models return ``(loss, is_greedy)`` with ``loss`` the MEAN negative log-likelihood, and its
    ``multiple_choice`` scoring takes ``np.argmin`` over them; a negative summed log-likelihood (lower is better)
    makes that argmin pick the option with the highest summed log-likelihood: the answer VRP's own multiple_choice
    scoring picks (``acc_norm`` divides it by the option's length in characters, as lm-eval does; for a task of
    ``output_type: loglikelihood``, lmms-eval's ``perplexity`` metric receives this summed negative log-likelihood).
    An option that could not be scored gets ``(inf, False)``. The continuation is scored as lmms-eval gives it (with
    the task's ``target_delimiter``, a space by default). lmms-eval 0.7.3's evaluator passes every model output
    through ``unwrap_generation_output``, which turns a ``(float, bool)`` tuple into its ``str`` (so multiple_choice
    scoring fails on it); where the installed lmms-eval does that, each pair is handed over as
    ``GenerationResult(text=pair)``, which it unwraps back into the pair (``_loglikelihood_output``).

    ``generate_until_multi_round`` is not supported.
    """

    is_simple = True
    vrp_model: ClassVar[str] = ""

    def __init__(
        self,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        device: str | None = None,
        seed: int | None = None,
        vrp_output: str | None = None,
        **model_args: Any,
    ) -> None:
        super().__init__()
        if not self.vrp_model:
            raise TypeError("VRPModel is the adapter's base class; use a generated VRP_<name> class "
                            "(--model vrp_<name>)")
        register_builtins()
        self._batch_size = _batch_size(batch_size)
        cli = lmms_eval_command_line()
        self.seed = int(seed) if seed is not None else (cli.seed if cli is not None else 0)
        self.model: VLM = MODELS.get(self.vrp_model).from_args(model_args, device=device)
        self.model_args = dict(model_args)
        self.output_root, self.output_source = output_root(vrp_output, cli)
        stamp = _stamp(cli.timezone if cli is not None else "Asia/Singapore")
        self.files = (OutputFiles.create(self.output_root, lmms_name(self.vrp_model), stamp)
                      if self.output_root is not None else None)
        if self.files is None:
            logger.warning(f"{lmms_name(self.vrp_model)}: no folder for VRP's signal files (pass --output_path, "
                           f"--model_args vrp_output=DIR or set {OUTPUT_ENV}); they are not written")
        self.records: list[dict[str, Any]] = []
        self.ignored_keys: set[str] = set()
        self.started = time.time()
        self._repeats: Counter[tuple[str, Any, int, str]] = Counter()

    # --- lmms-eval's model interface ------------------------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self) -> Any:
        return getattr(getattr(self.model, "model", None), "device", None)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        texts: list[str] = []
        with tqdm(total=len(requests), disable=self.rank != 0, desc="Model Responding") as bar:
            for chunk in _chunks(requests, self.batch_size):
                prepared = [self._prepare(instance, generate=True) for instance in chunk]
                ready = [p.request for p in prepared if p.error is None]
                responses = iter(self._checked(self.model.generate(ready) if ready else [], ready, "answers"))
                for instance, sample in zip(chunk, prepared):
                    response = next(responses) if sample.error is None else Response.failed(sample.error)
                    record = self._record_answer(sample, response)
                    texts.append(record["prediction"] or "")
                    self.cache_hook.add_partial("generate_until", instance.args[:2], texts[-1])
                bar.update(len(chunk))
        self.flush()
        _warn_if_every_sample_failed(self.records[-len(requests):] if requests else [])
        return texts

    def loglikelihood(self, requests: list[Instance]) -> list[Any]:
        results: list[Any] = []
        with tqdm(total=len(requests), disable=self.rank != 0, desc="Model Responding") as bar:
            for chunk in _chunks(requests, self.batch_size):
                prepared = [self._prepare(instance, generate=False) for instance in chunk]
                ready = [p for p in prepared if p.error is None]
                asked = ([p.request for p in ready], [p.option for p in ready])
                scores = iter(self._checked(self.model.loglikelihood(*asked) if ready else [], ready, "option scores"))
                for instance, sample in zip(chunk, prepared):
                    score = next(scores) if sample.error is None else OptionScore(None, error=sample.error)
                    if score.logprob is None and score.error is None:
                        score = dataclasses.replace(score, error="the model returned no log-probability")
                    self._record_option(sample, instance.idx, score)
                    pair = (FAILED_LOSS, False) if score.logprob is None else (-score.logprob, score.is_greedy)
                    self.cache_hook.add_partial("loglikelihood", instance.args[:2], pair)
                    results.append(_loglikelihood_output(pair))
                bar.update(len(chunk))
        self.flush()
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(f"{lmms_name(self.vrp_model)}: VRP models answer single-round requests only")

    # --- lmms-eval requests -> VRP requests ----------------------------------------------------------------------

    def _prepare(self, instance: Instance, generate: bool) -> Prepared:
        """The VRP request of one lmms-eval request (for ``loglikelihood``, also the continuation to score), or the
        reason this one sample cannot be asked."""
        args = instance.args
        if len(args) >= 6:  # (context, gen_kwargs or continuation / doc_to_target, doc_to_visual, doc_id, task, split)
            context, second, doc_to_visual, doc_id, task, split = args[:6]
        else:  # an unconditional ("", continuation) request (lmms-eval's acc_mutual_info): no doc, no images
            (context, second), doc_to_visual, split = args[:2], None, None
            doc_id, task = instance.doc_id, instance.task_name
        occurrence = (task, doc_id, instance.idx, instance.request_type)
        repeat = self._repeats[occurrence]  # lmms-eval's --repeats sends the same instance again: another seed
        self._repeats[occurrence] += 1
        seed = stable_seed(self.seed, task, doc_id) if repeat == 0 else stable_seed(self.seed, task, doc_id, repeat)
        settings = self._generation(second) if generate else GenerationSettings()
        sample = Prepared(Request(task=str(task), doc_id=int(doc_id), images=[], prompt=str(context),
                                  generation=settings, seed=seed), repeat)
        try:
            doc = self.task_dict[task][split][doc_id] if split is not None else None
            if not generate:
                sample.option = str(second(doc) if callable(second) else second)
            sample.request.images = _images(doc_to_visual(doc)) if doc_to_visual is not None else []
        except Exception as exc:  # this doc's data (a corrupt image, a doc_to_* function failing on it)
            sample.error = f"{type(exc).__name__}: {one_line(exc)}"
        return sample

    def _checked(self, outputs: list[Any], asked: list[Any], what: str) -> list[Any]:
        if len(outputs) != len(asked):
            raise RuntimeError(f"model {self.vrp_model!r} returned {len(outputs)} {what} for {len(asked)} requests")
        return outputs

    def _generation(self, gen_kwargs: dict[str, Any] | None) -> GenerationSettings:
        """VRP's ``GenerationSettings`` from an lmms-eval request's generation kwargs: known keys converted, None
        values and unknown keys (one note per key) left out, so they take ``GenerationSettings``' defaults."""
        values: dict[str, Any] = {}
        for key, value in (gen_kwargs or {}).items():
            if key not in GENERATION_FIELDS:
                if key not in self.ignored_keys:
                    self.ignored_keys.add(key)
                    logger.info(f"{lmms_name(self.vrp_model)}: generation_kwargs key {key!r} is not a VRP generation "
                                "setting; ignored")
                continue
            if value is not None:
                values[key] = _generation_value(key, value)
        return GenerationSettings(**values)

    # --- VRP's per-sample records --------------------------------------------------------------------------------

    def _record_answer(self, sample: Prepared, response: Response) -> dict[str, Any]:
        """VRP's record of one answer, with the signals of what the model captured."""
        failed = response.error is not None or response.text is None
        signals: dict[str, Any] = {}
        errors: dict[str, str] = {}
        if not failed and response.traces.captured:
            images = sample.request.images
            inputs = SignalInputs(response.traces, image_size=images[0].size if images else None, boxes=None,
                                  target=None)
            computed = compute_signals(inputs)
            signals, errors = computed.values, computed.errors
        record = {**sample.key("generate_until"), "prediction": None if failed else response.text,
                  "signals": signals, "signal_errors": errors,
                  "error": (response.error or "model returned no answer") if failed else None}
        self.records.append(record)
        return record

    def _record_option(self, sample: Prepared, option_index: int, score: OptionScore) -> None:
        """VRP's record of one scored option."""
        self.records.append({**sample.key("loglikelihood"), "option_index": option_index, "continuation": sample.option,
                             "logprob": score.logprob, "is_greedy": score.is_greedy, "n_tokens": score.n_tokens,
                             "error": score.error})

    def flush(self) -> None:
        """Rewrite VRP's files (signals JSONL and report) with every record so far, atomically."""
        if self.files is None:
            return
        write_files_atomically({self.files.signals: jsonl_text(self.records), self.files.report: json_text(self.report())})

    def report(self) -> dict[str, Any]:
        """VRP's summary of this lmms-eval run: model, settings, counts and per task the signals captured."""
        tasks: dict[str, dict[str, Any]] = {}
        by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in self.records:
            by_task[record["task"]].append(record)
        for task, records in by_task.items():
            answers = [r for r in records if r["request_type"] == "generate_until"]
            options = [r for r in records if r["request_type"] == "loglikelihood"]
            values: dict[str, list[float]] = defaultdict(list)
            counts: Counter[str] = Counter()
            for record in answers:
                for name, value in record["signals"].items():
                    if value is not None:
                        counts[name] += 1
                        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                            values[name].append(float(value))
            tasks[task] = {
                "n_samples": len(answers),
                "n_errors": sum(r["error"] is not None for r in answers),
                "n_with_signals": sum(any(v is not None for v in r["signals"].values()) for r in answers),
                "n_options_scored": len(options),
                "n_option_errors": sum(r["error"] is not None for r in options),
                "signals": {name: {"n": counts[name],  # non-null values; the mean of scalar ones
                                   **({"mean": sum(values[name]) / len(values[name])} if values[name] else {})}
                            for name in sorted(counts)},
            }
        return {
            "vrp_bench_version": vrp_bench.__version__,
            "harness": "lmms-eval",
            "lmms_eval_model": lmms_name(self.vrp_model),
            "model": self.vrp_model,
            "model_args": self.model_args,
            "model_description": self.model.describe(),
            "seed": self.seed,
            "output_root": str(self.output_root),
            "output_root_from": self.output_source,
            "command_line": " ".join(sys.argv),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "counts": {
                "requests": len(self.records),
                **{kind: n for kind, n in Counter(r["request_type"] for r in self.records).items()},
                "errors": sum(r["error"] is not None for r in self.records),
            },
            "ignored_generation_kwargs": sorted(self.ignored_keys),
            "tasks": tasks,
            "files": {"signals": self.files.signals.name if self.files else None},
            "note": "answers are scored by lmms-eval (its results and samples files); this folder holds what "
                    "lmms-eval has no place for: the reliability signals of each answer",
        }


@dataclasses.dataclass
class Prepared:
    """One lmms-eval request turned into a VRP request: ``option`` (the continuation, for ``loglikelihood``),
    ``repeat`` (0, or k for the k-th repeat of the same request) and ``error`` (this sample cannot be asked)."""

    request: Request
    repeat: int = 0
    option: str = ""
    error: str | None = None

    def key(self, request_type: str) -> dict[str, Any]:
        return {"request_type": request_type, "task": self.request.task, "doc_id": self.request.doc_id,
                "repeat": self.repeat}


@dataclasses.dataclass(frozen=True)
class OutputFiles:
    """Where one run's VRP files go: ``<root>/vrp_bench/<lmms model>/<stamp>_signals.jsonl`` and ``_report.json``."""

    signals: Path
    report: Path

    @classmethod
    def create(cls, root: Path, model: str, stamp: str) -> OutputFiles:
        folder = root / OUTPUT_FOLDER / model
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create VRP's output folder {folder}: {exc.strerror or exc}") from None
        for suffix in ("", *(f"_{n}" for n in range(1, 1000))):
            files = cls(folder / f"{stamp}{suffix}_signals.jsonl", folder / f"{stamp}{suffix}_report.json")
            if not files.signals.exists() and not files.report.exists():
                return files
        raise UsageError(f"too many runs stamped {stamp} in {folder}")


@dataclasses.dataclass(frozen=True)
class CommandLine:
    """What the adapter reads of lmms-eval's command line (lmms-eval passes neither to models)."""

    output_path: str | None
    seed: int
    timezone: str = "Asia/Singapore"


def lmms_eval_command_line(argv: Sequence[str] | None = None) -> CommandLine | None:
    """``--output_path`` and the first ``--seed`` value of lmms-eval's command line, when this process is it
    (``python -m lmms_eval ...``, ``accelerate launch -m lmms_eval ...`` or the ``lmms-eval`` script); else None."""
    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0]) if argv else Path()
    if not (program.name in ("lmms-eval", "lmms_eval") or program.parts[-2:] == ("lmms_eval", "__main__.py")):
        return None
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--output_path", default=None)
    parser.add_argument("--seed", default="0")
    parser.add_argument("--timezone", default="Asia/Singapore")
    known, _ = parser.parse_known_args(argv[1:])
    first = str(known.seed).split(",")[0].strip()
    return CommandLine(known.output_path or None, int(first) if first.lstrip("-").isdigit() else 0, known.timezone)


def output_root(vrp_output: str | None, cli: CommandLine | None) -> tuple[Path | None, str | None]:
    """The folder under which VRP's files go and where that came from: the ``vrp_output`` model arg, the
    ``VRP_BENCH_OUTPUT`` environment variable, or lmms-eval's ``--output_path``; (None, None) when none is set."""
    for value, source in ((vrp_output, "model_args vrp_output"), (os.environ.get(OUTPUT_ENV), f"${OUTPUT_ENV}"),
                          (cli.output_path if cli is not None else None, "lmms-eval --output_path")):
        if value:
            return Path(str(value)).expanduser(), source
    return None, None


def _warn_if_every_sample_failed(records: list[dict[str, Any]]) -> None:
    """One error line per task of which every answer failed (``vrp-bench`` would end the run there; lmms-eval
    scores those "" answers as wrong)."""
    by_task: dict[str, list[str | None]] = defaultdict(list)
    for record in records:
        by_task[record["task"]].append(record["error"])
    for task, errors in by_task.items():
        if errors and all(errors):
            distinct = " | ".join(list(dict.fromkeys(e for e in errors if e))[:3])
            logger.error(f"task {task}: every one of its {len(errors)} answers failed (scored as wrong by lmms-eval); "
                         f"first distinct errors: {distinct}")


def _pass_through(pair: tuple[float, bool]) -> Any:
    return pair


def _loglikelihood_output_wrapper() -> Any:
    """How to hand lmms-eval a ``(loss, is_greedy)`` pair so that it reaches the task's ``process_results`` intact.
    lmms-eval 0.7.3's evaluator unwraps every model output with ``unwrap_generation_output``, which stringifies a
    tuple whose first item is not a str but returns a ``GenerationResult``'s ``text`` as it is; versions without it
    (or that keep tuples) get the pair itself."""
    try:
        from lmms_eval.api.instance import GenerationResult, unwrap_generation_output
    except ImportError:
        return _pass_through
    if unwrap_generation_output((1.0, True))[0] == (1.0, True):
        return _pass_through
    if unwrap_generation_output(GenerationResult(text=(1.0, True)))[0] == (1.0, True):  # type: ignore[arg-type]
        return lambda pair: GenerationResult(text=pair)
    return _pass_through


_loglikelihood_output = _loglikelihood_output_wrapper()


def _stamp(timezone: str) -> str:
    """The run's file stamp, as lmms-eval stamps its own files (its ``--timezone``; so they sort together)."""
    from lmms_eval.utils import get_datetime_str

    try:
        return get_datetime_str(timezone=timezone)
    except Exception:  # an unknown timezone: lmms-eval itself fails on it; keep VRP's files anyway
        return time.strftime("%Y%m%d_%H%M%S")


def _batch_size(value: int | str | None) -> int:
    text = str(value if value is not None else 1)
    if text.isdigit() and int(text) >= 1:
        return int(text)
    if text.startswith("auto"):
        logger.info("VRP models do not search a batch size (batch_size=auto): using 1")
        return 1
    raise UsageError(f"batch_size must be a positive integer, got {value!r}")


def _generation_value(key: str, value: Any) -> Any:
    """A generation kwarg converted to the type ``GenerationSettings`` holds (lmms-eval YAML may write ``0`` for a
    temperature or a string for ``until``)."""
    try:
        if key == "until":
            return (value,) if isinstance(value, str) else tuple(str(v) for v in value)
        if key == "do_sample":
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if key in ("temperature", "top_p"):
            return float(value)
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"generation_kwargs {key}={value!r} is not a valid value") from None


def _images(visuals: Any) -> list[Image.Image]:
    """``doc_to_visual``'s result as a flat list of decoded PIL images (one level of nesting flattened, as
    lmms-eval's models do); anything else (a video path, audio) is this sample's error."""
    if visuals is None:
        return []
    items: list[Any] = []
    for item in visuals if isinstance(visuals, (list, tuple)) else [visuals]:
        items.extend(item if isinstance(item, (list, tuple)) else [item])
    for item in items:
        if not isinstance(item, Image.Image):
            raise TypeError(f"doc_to_visual gave {type(item).__name__}; VRP models take images only")
        item.load()
    return items


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def lmms_class(vrp_name: str) -> type[VRPModel]:
    """The lmms-eval class of VRP model ``vrp_name`` (generated once, then kept in this module)."""
    name = class_name(vrp_name)
    existing = globals().get(name)
    if existing is not None:
        return existing
    if vrp_name not in MODELS:
        raise AttributeError(f"{vrp_name!r} is not a registered VRP model (vrp-bench models)")
    generated = type(name, (VRPModel,), {
        "vrp_model": vrp_name,
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"lmms-eval model {lmms_name(vrp_name)!r}: the VRP model {vrp_name!r} (see ``VRPModel``).",
    })
    globals()[name] = generated
    return generated


def __getattr__(name: str) -> Any:
    """``VRP_<name>`` for a VRP model registered after this module was imported."""
    if name.startswith("VRP_"):
        try:
            return lmms_class(name[len("VRP_"):])
        except AttributeError:
            pass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_builtins()
for _name in MODELS:
    lmms_class(_name)
