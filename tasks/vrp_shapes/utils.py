"""Prompt and scoring functions of the vrp_shapes tasks (``!function utils.*`` in their YAML).

They follow lmms-eval's conventions, so this folder also runs under lmms-eval itself.
"""

from __future__ import annotations

from typing import Any

from vrp_bench.api.metrics import normalized_exact_match


def doc_to_visual(doc: dict[str, Any]) -> list[Any]:
    """The doc's single image, as RGB."""
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """pre_prompt + question + post_prompt."""
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Normalised exact match of the first response against the doc's answer."""
    return {"exact_match": normalized_exact_match(results[0], doc["answer"])}
