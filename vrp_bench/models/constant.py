"""``constant``: the chance-level floor. It answers every request with the same text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vrp_bench.api.instance import Request, Response
from vrp_bench.api.model import VLM, register_model


@register_model("constant")
class ConstantModel(VLM):
    """Always gives ``answer`` (default "yes"): the accuracy of a model that ignores its input."""

    description = "baseline: always answers `answer` (default yes), ignoring image and question"

    def __init__(self, answer: str = "yes") -> None:
        self.answer = str(answer)

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        return [Response(text=self.answer) for _ in requests]

    def describe(self) -> dict[str, Any]:
        return {"family": "baseline", "answer": self.answer}
