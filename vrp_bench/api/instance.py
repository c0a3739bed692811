"""What the evaluator hands a model (``Request``) and what it gets back (``Response``).

A request is one doc of one task, fully rendered: images, prompt text (or chat messages),
generation settings and a per-request seed. The model answers each request with a
``Response``: the answer text and, in ``Response.traces`` (a ``Traces``), what it captured: attention maps,
token log-probabilities, hidden states, self-consistency samples, ...
Reliability signals are computed from those traces by the registered signal functions (``signals``),
so a new signal is a registered function, never a value a model sets; hidden states are kept in memory
for probes and only written to disk on request.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from vrp_bench.api.traces import Traces


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings of one request (lmms-eval's ``generation_kwargs`` keys)."""

    until: tuple[str, ...] = ()
    max_new_tokens: int = 16
    temperature: float = 0.0
    do_sample: bool = False
    top_p: float = 1.0
    top_k: int | None = None
    num_beams: int = 1

    @property
    def greedy(self) -> bool:
        """True when decoding is deterministic (no sampling)."""
        return not self.do_sample or self.temperature == 0.0


@dataclass
class Request:
    """One doc of one task, ready for a model.

    ``prompt`` is the text built by the task (``doc_to_text``: pre-prompt, question, post-prompt);
    the model places the images and applies its own chat template around it. When the task
    defines ``doc_to_messages``, ``messages`` holds lmms-eval-style chat messages instead and
    takes precedence. ``target`` is the reference answer (or answers): models must never use it to answer;
    it exists for instrumentation that needs it (e.g. the logit-lens truth margin).
    """

    task: str
    doc_id: int
    images: list[Image.Image]
    prompt: str
    generation: GenerationSettings
    seed: int
    messages: list[dict[str, Any]] | None = None
    target: str | list[str] | None = None


def doc_hash(doc_fields: dict[str, Any], target: Any, images: list[Image.Image]) -> str:
    """"sha256:<hex>" of what a doc is, independent of the model and the run: its JSON-ready fields, its
    reference answer and its images' pixels (mode, size, bytes). Two runs answered the same doc when the hashes
    match (prompts are left out: they differ by model, through ``lmms_eval_specific_kwargs``)."""
    digest = hashlib.sha256(json.dumps({"doc": doc_fields, "target": target}, sort_keys=True, default=str).encode())
    for image in images:
        digest.update(f"|{image.mode}|{image.size}|".encode())
        digest.update(image.tobytes())
    return f"sha256:{digest.hexdigest()}"


@dataclass(frozen=True)
class OptionScore:
    """How likely a model finds one answer option after a request's prompt (``multiple_choice`` tasks, lmms-eval's
    ``loglikelihood`` requests): ``logprob`` = sum over the option's tokens t of log P(t | images, prompt, earlier
    option tokens); ``is_greedy``: greedy decoding would produce exactly these tokens. ``error`` (and ``logprob``
    None) when this option could not be scored; the sample then fails, it is never scored as wrong."""

    logprob: float | None
    is_greedy: bool = False
    n_tokens: int = 0
    error: str | None = None


@dataclass
class Response:
    """A model's answer to one request.

    ``error`` is set (and ``text`` is ``None``) when this sample failed; the evaluator counts it
    and reports the reason instead of scoring it.
    """

    text: str | None
    traces: Traces = field(default_factory=Traces)
    error: str | None = None

    @classmethod
    def failed(cls, reason: str) -> "Response":
        """A response for a sample the model could not answer."""
        return cls(text=None, error=reason)
