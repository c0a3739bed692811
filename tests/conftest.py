"""Shared test helpers: running the CLI in-process and a request-recording model."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from vrp_bench.api.instance import Request, Response  # noqa: E402
from vrp_bench.api.model import MODELS, VLM  # noqa: E402
from vrp_bench.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class RecordingModel(VLM):
    """Test double: answers with ``answer`` (or the target when ``oracle``) and keeps every request."""

    name = "recording"
    description = "test double"
    seen: list[Request] = []

    def __init__(self, answer: str = "yes", oracle: bool = False, fail_doc: int = -1) -> None:
        self.answer, self.oracle, self.fail_doc = answer, oracle, fail_doc

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        RecordingModel.seen.extend(requests)
        responses = []
        for request in requests:
            if request.doc_id == self.fail_doc:
                responses.append(Response.failed("out of memory"))
            elif self.oracle:
                target = request.target if isinstance(request.target, str) else request.target[0]
                responses.append(Response(text=target))
            else:
                responses.append(Response(text=self.answer))
        return responses


@pytest.fixture
def recording_model():
    """``RecordingModel`` registered as "recording" for one test only (no global registration leaks)."""
    RecordingModel.seen = []
    with MODELS.registered("recording", RecordingModel):
        yield RecordingModel
    RecordingModel.seen = []


@pytest.fixture
def cli(capsys):
    """Run ``vrp-bench ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
