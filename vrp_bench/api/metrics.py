"""Per-sample answer metrics and their aggregations, as named in a task's ``metric_list``.

A metric maps (prediction, target) to a score in [0, 1]; an aggregation maps the per-sample
scores of a task to one number. Both live in registries so a task YAML can name them.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Sequence

from vrp_bench.api.registry import Registry

MetricFn = Callable[[str, str | Sequence[str]], float]
AggregationFn = Callable[[Sequence[float]], float]

METRICS: Registry[MetricFn] = Registry("metric")
AGGREGATIONS: Registry[AggregationFn] = Registry("aggregation")

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """The study's answer normalisation: lowercase, punctuation removed, whitespace collapsed."""
    text = _PUNCTUATION.sub(" ", text.lower())
    return " ".join(text.split())


def _targets(target: str | Sequence[str]) -> list[str]:
    return [target] if isinstance(target, str) else [str(t) for t in target]


@METRICS.register("exact_match")
def exact_match(prediction: str, target: str | Sequence[str]) -> float:
    """1.0 if normalize_answer(prediction) equals normalize_answer(t) for some target t, else 0.0."""
    answer = normalize_answer(prediction)
    return float(any(answer == normalize_answer(t) for t in _targets(target)))


@AGGREGATIONS.register("mean")
def mean(values: Sequence[float]) -> float:
    """Arithmetic mean: sum(v) / n."""
    return math.fsum(values) / len(values)


def mean_stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean: sample std (ddof=1) / sqrt(n); None when n < 2."""
    n = len(values)
    if n < 2:
        return None
    mu = mean(values)
    variance = math.fsum((v - mu) ** 2 for v in values) / (n - 1)
    return math.sqrt(variance / n)


def aggregate(values: Sequence[float], aggregation: str | AggregationFn) -> tuple[float | None, float | None]:
    """A metric over a task's scored samples and its standard error: ``aggregation`` is a registered name or a
    function; the standard error is the mean's, given for "mean" only. (None, None) when no sample is scored."""
    if not values:
        return None, None
    function = AGGREGATIONS.get(aggregation) if isinstance(aggregation, str) else aggregation
    return float(function(values)), mean_stderr(values) if aggregation == "mean" else None
