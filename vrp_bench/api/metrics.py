"""Per-sample answer metrics and their aggregations, as named in a task's ``metric_list``.

A metric maps (prediction, target) to a score in [0, 1]; an aggregation maps the per-sample
scores of a task to one number. Both live in registries so a task YAML can name them.
"""

from __future__ import annotations

import inspect
import math
import re
import statistics
import string
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from vrp_bench.api.errors import UsageError
from vrp_bench.api.registry import Registry

MetricFn = Callable[..., Any]
"""(prediction, target, **the metric_list entry's other keys) -> the sample's value (usually a float in [0, 1])."""
AggregationFn = Callable[[Sequence[Any]], float]

METRICS: Registry[MetricFn] = Registry("metric")
AGGREGATIONS: Registry[AggregationFn] = Registry("aggregation")

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


NUMBER_WORDS = dict(zip(
    ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
     "seventeen eighteen nineteen twenty").split(), map(str, range(21))))
"""Number words read as digits ("three" = "3"), as VQAv2's evaluation does."""
ARTICLES = frozenset({"a", "an", "the"})
YES_WORDS = frozenset({"yes", "yeah", "yep", "yup"})
NO_WORDS = frozenset({"no", "nope", "nah"})
"""An answer whose first word is one of these is that yes / no ("yes, there is" = "yes")."""


@dataclass(frozen=True)
class AnswerNormalization:
    """How two answers are compared (``normalize_answer``): always lowercase, punctuation removed, whitespace
    collapsed (the study's rule); then, each on by default, ``numbers``: number words 0-20 as digits; ``articles``:
    "a", "an", "the" dropped; ``yes_no``: an answer starting with a yes / no word reduced to "yes" / "no". A task
    turns rules off in its YAML: ``metadata: {answer_normalization: {yes_no: false}}`` (``from_metadata``)."""

    numbers: bool = True
    articles: bool = True
    yes_no: bool = True

    @classmethod
    def from_metadata(cls, value: Any, where: str) -> AnswerNormalization:
        """The rules a task's ``metadata.answer_normalization`` names (None: the defaults); UsageError for an unknown
        rule or a value that is not true / false."""
        if value is None:
            return cls()
        names = [f.name for f in fields(cls)]
        if not isinstance(value, dict) or any(k not in names or not isinstance(v, bool) for k, v in value.items()):
            raise UsageError(f"{where}: metadata.answer_normalization must map some of {names} to true / false, "
                             f"got {value!r}")
        return cls(**value)


STUDY_NORMALIZATION = AnswerNormalization(numbers=False, articles=False, yes_no=False)
"""The study's rule alone: lowercase, punctuation removed, whitespace collapsed."""


def normalize_answer(text: str, rules: AnswerNormalization = AnswerNormalization()) -> str:
    """``text`` lowercased, punctuation replaced by spaces, whitespace collapsed, then ``rules`` applied word by
    word (``AnswerNormalization``)."""
    words = _PUNCTUATION.sub(" ", text.lower()).split()
    if rules.yes_no and words and (words[0] in YES_WORDS or words[0] in NO_WORDS):
        return "yes" if words[0] in YES_WORDS else "no"
    if rules.articles:
        words = [word for word in words if word not in ARTICLES]
    if rules.numbers:
        words = [NUMBER_WORDS.get(word, word) for word in words]
    return " ".join(words)


def _targets(target: str | Sequence[str]) -> list[str]:
    return [target] if isinstance(target, str) else [str(t) for t in target]


def normalized_exact_match(prediction: str, target: str | Sequence[str],
                           rules: AnswerNormalization = AnswerNormalization()) -> float:
    """VRP-Bench's answer match: 1.0 if normalize_answer(prediction, rules) equals normalize_answer(t, rules) for
    some target t, else 0.0 (``STUDY_NORMALIZATION``: the study's rule alone). The ``exact_match`` metric a YAML
    names is lmms-eval's, which does not normalise."""
    answer = normalize_answer(prediction, rules)
    return float(any(answer == normalize_answer(t, rules) for t in _targets(target)))


@METRICS.register("exact_match")
def exact_match(
    prediction: str, target: str | Sequence[str], regexes_to_ignore: Sequence[str] | None = None,
    ignore_case: bool = False, ignore_punctuation: bool = False, ignore_numbers: bool = False,
) -> float:
    """lmms-eval's (Hugging Face evaluate's) exact match: 1.0 if prediction == t for some target t after, on both
    sides and in this order, removing every ``regexes_to_ignore`` match, lowercasing, deleting ASCII punctuation,
    deleting digits (each when asked), else 0.0."""

    def prepare(text: str) -> str:
        for pattern in regexes_to_ignore or ():
            text = re.sub(pattern, "", text)
        if ignore_case:
            text = text.lower()
        if ignore_punctuation:
            text = text.translate(str.maketrans("", "", string.punctuation))
        if ignore_numbers:
            text = text.translate(str.maketrans("", "", string.digits))
        return text

    answer = prepare(prediction)
    return float(any(answer == prepare(t) for t in _targets(target)))


def levenshtein_distance(a: str, b: str) -> int:
    """The minimum number of single-character insertions, deletions and substitutions turning ``a`` into ``b``."""
    if len(a) > len(b):
        a, b = b, a
    previous = list(range(len(a) + 1))
    for j, char_b in enumerate(b, start=1):
        current = [j]
        for i, char_a in enumerate(a, start=1):
            current.append(min(previous[i] + 1, current[i - 1] + 1, previous[i - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


@METRICS.register("anls")
def anls(prediction: str, target: str | Sequence[str], thresh_hold: float = 0.5) -> float:
    """Average normalised Levenshtein similarity (DocVQA's ANLS) of one answer: s = 1 - min over targets t of
    lev(p', t') / max(len(p), len(t)), with p', t' lowercased and whitespace-collapsed; 0 when s < ``thresh_hold``."""
    answer = " ".join(prediction.strip().lower().split())
    distances = []
    for reference in _targets(target):
        length = max(len(reference), len(prediction))
        clean = " ".join(reference.strip().lower().split())
        distances.append(0.0 if length == 0 else levenshtein_distance(clean, answer) / length)
    similarity = 1.0 - min(distances)
    return similarity if similarity >= thresh_hold else 0.0


@METRICS.register("bypass")
def bypass(prediction: str, target: str | Sequence[str]) -> list[Any]:
    """No score: the pair [target, prediction] is kept as is (aggregated by ``bypass`` to lmms-eval's 999)."""
    return [target, prediction]


CHOICE_METRICS = frozenset({"acc", "acc_norm", "exact_match", "f1", "mcc", "brier_score"})
"""What a ``multiple_choice`` task can report (computed from the options' log-likelihoods by ``api.task``)."""


@AGGREGATIONS.register("mean")
def mean(values: Sequence[float]) -> float:
    """Arithmetic mean: sum(v) / n."""
    return math.fsum(values) / len(values)


@AGGREGATIONS.register("median")
def median(values: Sequence[float]) -> float:
    """The middle value (the mean of the two middle values for even n)."""
    return float(statistics.median(values))


@AGGREGATIONS.register("bypass")
def bypass_aggregation(values: Sequence[Any]) -> float:
    """lmms-eval's placeholder for tasks scored elsewhere (e.g. by an external server): always 999."""
    return 999.0


@AGGREGATIONS.register("perplexity")
def perplexity(values: Sequence[float]) -> float:
    """exp(-mean(log-likelihoods))."""
    return math.exp(-mean(values))


@AGGREGATIONS.register("weighted_perplexity")
def weighted_perplexity(values: Sequence[tuple[float, float]]) -> float:
    """exp(-sum(log-likelihoods) / sum(weights)) over (log-likelihood, weight) pairs."""
    return math.exp(-math.fsum(v for v, _ in values) / math.fsum(w for _, w in values))


@AGGREGATIONS.register("bits_per_byte")
def bits_per_byte(values: Sequence[tuple[float, float]]) -> float:
    """-sum(log-likelihoods) / (sum(bytes) * ln 2) over (log-likelihood, bytes) pairs."""
    return -math.fsum(v for v, _ in values) / (math.fsum(w for _, w in values) * math.log(2))


@AGGREGATIONS.register("f1")
def f1(values: Sequence[tuple[Any, Any]]) -> float:
    """sklearn's binary F1 of (gold, predicted) pairs."""
    from sklearn.metrics import f1_score

    golds, predictions = zip(*values)
    return float(f1_score(golds, predictions))


@AGGREGATIONS.register("matthews_corrcoef")
def matthews_corrcoef(values: Sequence[tuple[Any, Any]]) -> float:
    """sklearn's Matthews correlation of (gold, predicted) pairs."""
    from sklearn.metrics import matthews_corrcoef as mcc

    golds, predictions = zip(*values)
    return float(mcc(golds, predictions))


@AGGREGATIONS.register("brier_score")
def brier_score(values: Sequence[tuple[int, Sequence[float]]]) -> float:
    """mean over samples of sum_k (p_k - [k == gold])^2, from (gold index, option probabilities) pairs."""
    total = 0.0
    for gold, probabilities in values:
        total += math.fsum((p - (k == gold)) ** 2 for k, p in enumerate(probabilities))
    return total / len(values)


def _sacrebleu(name: str) -> AggregationFn:
    def corpus_score(values: Sequence[tuple[Any, str]]) -> float:
        """sacrebleu's corpus score of (references, prediction) pairs (needs the sacrebleu package)."""
        try:
            import sacrebleu
        except ImportError:
            raise UsageError(f"the {name} aggregation needs the sacrebleu package (pip install sacrebleu)") from None
        references = [[r] if isinstance(r, str) else list(r) for r, _ in values]
        predictions = [p for _, p in values]
        columns = [list(column) for column in zip(*references)]
        return float(getattr(sacrebleu, f"corpus_{name}")(predictions, columns).score)

    corpus_score.__name__ = name
    return corpus_score


for _name in ("bleu", "chrf", "ter"):
    AGGREGATIONS.register(_name)(_sacrebleu(_name))


def mean_stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean: sample std (ddof=1) / sqrt(n); None when n < 2."""
    n = len(values)
    if n < 2:
        return None
    mu = mean(values)
    variance = math.fsum((v - mu) ** 2 for v in values) / (n - 1)
    return math.sqrt(variance / n)


def aggregate(
    values: Sequence[Any], aggregation: str | AggregationFn, output_folder: Path | None = None
) -> tuple[float | None, float | None]:
    """A metric over a task's scored samples and its standard error: ``aggregation`` is a registered name or a
    function; the standard error is the mean's, given for "mean" only. (None, None) when no sample is scored or
    the aggregation gives no number (e.g. a task that only writes a submission file).

    A task function with an ``args`` parameter gets, as in lmms-eval, an object whose ``output_path`` is where it
    may write files (``output_folder``; a new temporary folder when the run writes none)."""
    if not values:
        return None, None
    function = AGGREGATIONS.get(aggregation) if isinstance(aggregation, str) else aggregation
    if aggregation == "mean":
        values = [float(v) for v in values]
        return float(function(values)), mean_stderr(values)
    kwargs = {}
    if _has_parameter(function, "args"):
        folder = output_folder if output_folder is not None else Path(tempfile.mkdtemp(prefix="vrp-bench-task-files-"))
        kwargs["args"] = SimpleNamespace(output_path=str(folder))
    value = function(values, **kwargs)
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        name = getattr(function, "__name__", str(function))
        raise UsageError(f"aggregation {name!r} returned {type(value).__name__}, not a number")
    return float(value), None


def _has_parameter(function: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
