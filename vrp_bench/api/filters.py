"""Answer filters: lmms-eval's ``filter_list``, the post-processing between a model's raw answer and its metrics.

A task YAML names pipelines of filters::

    filter_list:
      - name: flexible-extract
        filter:
          - function: regex
            regex_pattern: "(\\d+)"
          - function: take_first

Each pipeline turns a doc's responses (a list of strings) into the value its metrics are computed on, and each
metric is reported per pipeline (``exact_match,flexible-extract``); without ``filter_list`` the single pipeline is
``none`` = ``take_first``. A step is a registered filter (``FILTERS``) or a ``!function`` naming a filter class
written for lmms-eval (built with the step's keys, then ``.apply(resps, docs)``). Steps work on the lmms-eval
shape: ``resps`` is a list (one entry per doc) of lists of responses.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vrp_bench.api.errors import UsageError
from vrp_bench.api.registry import Registry
from vrp_bench.api.yaml_dialect import FunctionRef

FilterStep = Callable[[list[Any], list[dict[str, Any]]], list[Any]]
"""A built filter: (responses per doc, docs) -> filtered responses per doc."""

FILTERS: Registry[Callable[..., FilterStep]] = Registry("filter")
"""Filter factories by name: called with the step's YAML keys (other than ``function``), they return the step."""

DEFAULT_FILTER = "none"
"""The pipeline of a task without ``filter_list``: take the first response."""

FALLBACK = "[invalid]"
"""What an extracting filter writes by default for a response it found no answer in (lmms-eval's)."""
_UNICODE_PUNCTUATION = dict.fromkeys(i for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P"))


def _each(transform: Callable[[str], Any]) -> FilterStep:
    """A step applying ``transform`` to every response of every doc."""
    return lambda resps, docs: [[transform(r) for r in responses] for responses in resps]


def _first_match(pattern: re.Pattern[str], text: str, group_select: int) -> str | None:
    """The ``group_select``-th match of ``pattern`` in ``text`` (a tuple of groups: its first non-empty one),
    stripped; None when nothing matches."""
    matches = pattern.findall(text)
    if not matches:
        return None
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((m for m in match if m), "")
    return match.strip()


@FILTERS.register("take_first")
def take_first() -> FilterStep:
    """Each doc's first response ("" when it has none)."""
    return lambda resps, docs: [responses[0] if responses else "" for responses in resps]


@FILTERS.register("take_first_k")
def take_first_k(k: int) -> FilterStep:
    """Each doc's first ``k`` responses."""
    return lambda resps, docs: [list(responses)[:k] for responses in resps]


@FILTERS.register("majority_vote")
def majority_vote() -> FilterStep:
    """Each doc's most frequent response (the first seen among ties), as a one-element list."""
    return lambda resps, docs: [[Counter(responses).most_common(1)[0][0]] for responses in resps]


@FILTERS.register("regex")
def regex(regex_pattern: str = r"#### (\-?[0-9\.\,]+)", group_select: int = 0, fallback: str = FALLBACK) -> FilterStep:
    """Each response replaced by the ``group_select``-th match of ``regex_pattern`` (stripped), or ``fallback``."""
    pattern = re.compile(regex_pattern)

    def extract(text: str) -> str:
        found = _first_match(pattern, text, group_select)
        return fallback if found is None else found

    return _each(extract)


@FILTERS.register("remove_whitespace")
def remove_whitespace() -> FilterStep:
    """Each response without one leading space."""
    return _each(lambda text: text[1:] if text.startswith(" ") else text)


@FILTERS.register("lowercase")
def lowercase() -> FilterStep:
    return _each(str.lower)


@FILTERS.register("uppercase")
def uppercase() -> FilterStep:
    return _each(str.upper)


@FILTERS.register("map")
def map_values(mapping_dict: dict[str, Any] | None = None, default_value: Any = None) -> FilterStep:
    """Each response looked up in ``mapping_dict`` (``default_value`` when absent)."""
    mapping = dict(mapping_dict or {})
    return _each(lambda text: mapping.get(text, default_value))


DEFAULT_THINKING_TAGS = (("<think>", "</think>"), ("<thinking>", "</thinking>"))


def strip_reasoning(text: str, tag_pairs: Sequence[Sequence[str]]) -> str:
    """``text`` without reasoning blocks, per (opening, closing) tag pair: every opening...closing block removed
    (first opening to the next closing, repeatedly); then, if only a closing tag is left (the chat template put
    the opening one in the prompt), only what follows its last occurrence kept. Stripped of outer whitespace."""
    for opening, closing in tag_pairs:
        while opening in text and closing in text:
            start = text.find(opening)
            end = text.find(closing, start)
            if end == -1:
                break
            text = text[:start] + text[end + len(closing):]
        if closing in text and opening not in text:
            text = text.rsplit(closing, 1)[-1]
    return text.strip()


@FILTERS.register("strip_thinking")
def strip_thinking(tag_pairs: Sequence[Sequence[str]] | None = None) -> FilterStep:
    """Each response without its reasoning blocks (``strip_reasoning``; default tags <think>, <thinking>)."""
    pairs = [(str(opening), str(closing)) for opening, closing in (tag_pairs or DEFAULT_THINKING_TAGS)]
    return _each(lambda text: strip_reasoning(text, pairs) if isinstance(text, str) else text)


@FILTERS.register("multi_choice_regex")
def multi_choice_regex(
    regex_pattern: str = r"#### (\-?[0-9\.\,]+)", group_select: int = 0, fallback: str = FALLBACK,
    ignore_case: bool = False, ignore_punctuation: bool = False, regexes_to_ignore: Sequence[str] | None = None,
) -> FilterStep:
    """A letter answer "(A)", "(B)", ... for docs with a ``choices`` field: ``regex_pattern`` first; else the text
    of a choice found in the response (after the ignore options) maps to its letter; else ": X" for a choice
    letter X; else ``fallback``."""
    pattern = re.compile(regex_pattern)

    def normalise(text: str) -> str:
        for ignored in regexes_to_ignore or ():
            text = re.sub(ignored, "", text)
        if ignore_case:
            text = text.lower()
        return text.translate(_UNICODE_PUNCTUATION) if ignore_punctuation else text

    def letter_of(doc: dict[str, Any]) -> Callable[[str], str]:
        letters = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
        by_text = {normalise(choice.strip()): f"({letter})" for choice, letter in zip(doc["choices"], letters)}
        by_text_pattern = re.compile("|".join(re.escape(text) for text in by_text))
        by_letter_pattern = re.compile(r":[\s]*(" + "|".join(letters) + ")")

        def extract(text: str) -> str:
            found = _first_match(pattern, text, group_select)
            if not found:
                found = _first_match(by_text_pattern, normalise(text), group_select)
                found = by_text.get(found, found) if found else found
                if not found:
                    found = _first_match(by_letter_pattern, text, group_select)
                    found = f"({found})" if found else found
            return found or fallback

        return extract

    return lambda resps, docs: [[letter_of(doc)(r) for r in responses] for responses, doc in zip(resps, docs)]


EXTRACTING_FILTERS = ("regex", "multi_choice_regex")
"""Filters that extract an answer from a response and write their ``fallback`` (``FALLBACK``) when none is found."""


@dataclass
class FilterPipeline:
    """One ``filter_list`` entry: a name (the metric keys' suffix) and its steps, applied in order; ``fallbacks``:
    what its extracting steps write for a response they found no answer in."""

    name: str
    steps: list[FilterStep] = field(default_factory=list)
    fallbacks: frozenset[str] = frozenset()

    def apply(self, responses: list[str], doc: dict[str, Any]) -> Any:
        """The filtered value of one doc's responses."""
        resps: list[Any] = [list(responses)]
        for step in self.steps:
            resps = list(step(resps, [doc]))
        return resps[0]

    def extract(self, response: str, doc: dict[str, Any]) -> str | None:
        """The answer this pipeline finds in one response (e.g. one sampled reasoning path); None when it finds
        none: an extracting step's fallback, an empty string, or a value that is not a string."""
        value = self.apply([response], doc)
        if not isinstance(value, str) or not value.strip() or value in self.fallbacks:
            return None
        return value


def default_pipeline() -> FilterPipeline:
    return FilterPipeline(DEFAULT_FILTER, [take_first()])


def build_pipelines(raw: Any, where: str) -> list[FilterPipeline]:
    """The pipelines of a ``filter_list`` (None: the default ``none`` pipeline); every problem a one-line error."""
    if raw is None:
        return [default_pipeline()]
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{where}: filter_list must be a non-empty list of {{name, filter: [steps]}}")
    pipelines = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("filter"), list):
            raise UsageError(f"{where}: every filter_list entry needs a 'name' and a 'filter' list of steps, got {entry!r}")
        if any(p.name == entry["name"] for p in pipelines):
            raise UsageError(f"{where}: filter_list names {entry['name']!r} twice")
        fallbacks = frozenset(str(step.get("fallback", FALLBACK)) for step in entry["filter"]
                              if isinstance(step, dict) and step.get("function") in EXTRACTING_FILTERS)
        pipelines.append(FilterPipeline(entry["name"], [_build_step(step, where) for step in entry["filter"]], fallbacks))
    return pipelines


def _build_step(step: Any, where: str) -> FilterStep:
    if not isinstance(step, dict) or "function" not in step:
        raise UsageError(f"{where}: every filter step needs a 'function' key, got {step!r}")
    kwargs = {k: v for k, v in step.items() if k != "function"}
    function = step["function"]
    try:
        if isinstance(function, FunctionRef):  # a filter class written for lmms-eval
            instance = function.resolve()(**kwargs)
            return lambda resps, docs: list(instance.apply(resps, docs))
        return FILTERS.get(str(function))(**kwargs)
    except TypeError as exc:
        raise UsageError(f"{where}: filter {function!r}: bad arguments {sorted(kwargs)}: {exc}") from None
