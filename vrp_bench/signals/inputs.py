"""What one sample's signals are computed from: its ``Traces``, what only the doc knows, the settings, and the
derived quantities several signals share, each computed once per sample.

The derived quantities are this module's "statistic calculators" (LM-Polygraph's model): a signal
declares the fields it needs (``SignalSpec.needs``) and reads the shared quantities it uses from its
``SignalInputs`` (``decoder_map``, ``decoder_entropies``, ...), which compute on first use and keep the value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from vrp_bench.api.errors import UsageError
from vrp_bench.api.metrics import AnswerNormalization
from vrp_bench.api.traces import TRACE_FIELDS, Traces
from vrp_bench.signals.detachment import pool_to_grid
from vrp_bench.signals.grounding import box_weights
from vrp_bench.signals.structural import CONNECTIVITY, normalize_map, spatial_entropy

CONTEXT_FIELDS = ("image_size", "boxes", "target")
"""What the doc and the request add to a sample's traces (signals may need these too)."""
INPUT_FIELDS = TRACE_FIELDS + CONTEXT_FIELDS


@dataclass(frozen=True)
class SignalSettings:
    """Parameters of the signal functions (defaults: the study's).

    ``aggregate_layers`` / ``vision_aggregate_layers``: indices of the decoder / vision-encoder
    layers whose mean map the scalar signals use; None = the second half, layers L//2 .. L-1
    (the study averaged LLaVA's layers 16-32).
    ``connectivity``: the neighbourhood (4 or 8, else ValueError) of the connected components of the Peruzzo
    entropy and of C_k (top-mass components); 8 by default, Peruzzo et al.'s (``structural.CONNECTIVITY``).
    A report written before this setting existed was computed with 8 (``report.comparability``).
    """

    dbscan_percentile: float = 90.0
    dbscan_eps: float = 1.5
    dbscan_min_samples: int = 3
    components_top_mass: float = 0.3
    late_fraction: float = 0.25
    aggregate_layers: tuple[int, ...] | None = None
    vision_aggregate_layers: tuple[int, ...] | None = None
    connectivity: int = CONNECTIVITY

    def __post_init__(self) -> None:
        if self.connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {self.connectivity!r}")


@dataclass
class SignalInputs:
    """One sample's signal inputs. ``image_size`` is (width, height) in pixels; ``boxes`` are [x0, y0, x1, y1)
    pixel boxes of the target object(s); ``target`` the reference answer(s) (read only by signals that declare
    ``reference="target"``)."""

    traces: Traces = field(default_factory=Traces)
    image_size: tuple[int, int] | None = None
    boxes: Sequence[Sequence[float]] | None = None
    target: str | Sequence[str] | None = None
    settings: SignalSettings = field(default_factory=SignalSettings)
    extract_answer: Callable[[str], str | None] | None = None
    """The task's final-answer extraction from one sampled response (``FilterPipeline.extract`` of its primary
    filter pipeline: a reasoning path's answer; None when none is found); None: every sample is its own answer."""
    answer_normalization: AnswerNormalization = field(default_factory=AnswerNormalization)
    """How the task compares answers (``Task.answer_normalization``)."""

    @classmethod
    def of(cls, settings: SignalSettings = SignalSettings(), **fields: Any) -> SignalInputs:
        """Inputs from flat keyword fields: ``Traces`` fields and context fields alike (handy in notebooks and
        tests: ``compute_signals(SignalInputs.of(answer_attention_mean=maps, boxes=..., image_size=...))``)."""
        context = {name: fields.pop(name) for name in CONTEXT_FIELDS if name in fields}
        return cls(Traces(**fields), settings=settings, **context)

    def present(self, name: str) -> bool:
        """Whether input ``name`` (a ``Traces`` field or a context field) is given and not empty."""
        if name in CONTEXT_FIELDS:
            value = getattr(self, name)
            return value is not None and len(value) > 0
        return self.traces.present(name)

    # --- derived quantities, computed once per sample ----------------------------------------------

    @cached_property
    def sc_final_answers(self) -> list[str | None]:
        """Each self-consistency sample's final answer (``extract_answer``; None: unparsed)."""
        answers = [str(answer) for answer in self.traces.sc_answers]
        return answers if self.extract_answer is None else [self.extract_answer(answer) for answer in answers]

    @cached_property
    def decoder_map(self) -> np.ndarray:
        """Mean of the normalised answer->image maps of the aggregated decoder layers."""
        return _mean_map(self.traces.answer_attention_mean, self.settings.aggregate_layers)

    @cached_property
    def vision_map(self) -> np.ndarray:
        """Mean of the normalised vision-encoder maps of the aggregated vision layers."""
        return _mean_map(self.traces.vision_attention, self.settings.vision_aggregate_layers)

    @cached_property
    def vision_gaze(self) -> np.ndarray:
        """The vision encoder's gaze: its last block's normalised map, sum-pooled onto the decoder's patch grid
        (``detachment.pool_to_grid``). The last block is the one whose output Qwen2-VL and PaliGemma project into the
        decoder; LLaVA-1.5 checkpoints (``vision_feature_layer = -2``) project the block before it."""
        decoder_grid = self.traces.answer_attention_mean.shape[1:]
        return pool_to_grid(normalize_map(self.traces.vision_attention[-1]), decoder_grid)

    @cached_property
    def decoder_entropies(self) -> list[float]:
        """H_s of the answer->image attention per decoder layer."""
        return [spatial_entropy(layer) for layer in self.traces.answer_attention_mean]

    @cached_property
    def decoder_box_weights(self) -> np.ndarray:
        """Per decoder patch-grid cell, the share of its area inside the target boxes."""
        return box_weights(self.boxes, self.image_size, self.traces.answer_attention_mean.shape[1:])

    @cached_property
    def vision_box_weights(self) -> np.ndarray:
        """Per vision patch-grid cell, the share of its area inside the target boxes."""
        return box_weights(self.boxes, self.image_size, self.traces.vision_attention.shape[1:])


def _mean_map(stack: np.ndarray, layers: tuple[int, ...] | None) -> np.ndarray:
    """Mean of the normalised maps of ``layers`` (None: L//2 .. L-1), each layer weighing equally."""
    n_layers = len(stack)
    chosen = range(n_layers // 2, n_layers) if layers is None else layers
    if not chosen or any(not -n_layers <= layer < n_layers for layer in chosen):
        raise UsageError(f"aggregate layers {tuple(chosen)} do not index the {n_layers} captured layers")
    return np.mean([normalize_map(stack[layer]) for layer in chosen], axis=0)
