"""``Traces``: what a model captured for one sample, the one contract between backends and signals.

A backend fills a ``Traces`` per answered request (``Response.traces``); the signals read it (with what
only the doc knows: boxes, image size, target) and the probes read its hidden states. Every field is
optional (None: not captured). Shapes, checked where a ``Traces`` is built (``TraceError`` names the field):

=========================  ===========================  =================================================
field                      shape                        what it holds
=========================  ===========================  =================================================
``answer_attention_mean``  [decoder layers, rows, cols] decoder attention from the answer tokens (mean of
                                                        their raw rows, mass-weighted: see the field) to the
                                                        image tokens on the patch grid, head mean
``answer_attention_first`` [decoder layers, rows, cols] the same from the first answer token only
``vision_attention``       [vision layers, rows, cols]  the vision encoder's attention over its own patches
``token_logprobs``         [answer tokens]              log p(generated token) per answer token
``token_entropies``        [answer tokens]              entropy (nats) of each next-token distribution
``token_margins``          [answer tokens]              top-1 minus top-2 log-probability per answer token
``truth_margin_layers``    [hidden states]              logit lens at the last prompt position: logit of the
                                                        reference answer's first token - best other logit
``margin_attention``       [decoder layers]             the attention block's contribution to the truth margin's
                                                        change from hidden state l to l + 1 (direct logit
                                                        attribution, ``models.logit_lens``)
``margin_mlp``             [decoder layers]             the same for the MLP block
``margin_unattributed``    [decoder layers]             the rest of that change (the final norm's rescaling, a
                                                        change of target or rival token): the three sum to it
``residual_update_image``  [decoder layers]             ||output - input|| of each decoder layer at the prompt
                                                        pass, mean over the image-token positions
``residual_update_last``   [decoder layers]             the same at the last prompt position
``hidden_last_prompt``     [hidden states, hidden]      residual stream at the last prompt position
``hidden_first_answer``    [hidden states, hidden]      residual stream at the first answer position
``first_token_logprobs``   [vocabulary]                 log-softmax of the first answer step
``sc_answers``             K strings                    self-consistency samples of the answer
=========================  ===========================  =================================================

Layers are numbered like Hugging Face's outputs: "decoder layers" (L of them) like ``output_attentions``;
"hidden states" (L + 1) like ``output_hidden_states``: 0 is the embedding output, i the output of decoder
layer i - 1, and L the last layer's output after the final norm (the study's "layer 21" is hidden state 21).

Values may be NaN or degenerate (a zero-mass map): that is a property of the sample, and the signals that
fail on it are null with their reason; a wrong shape is a bug of the backend and raises here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np

HiddenPosition = Literal["hidden_last_prompt", "hidden_first_answer"]
HIDDEN_POSITIONS: tuple[HiddenPosition, ...] = ("hidden_last_prompt", "hidden_first_answer")
"""The captured hidden-state positions, in the order probes and reports list them."""
LAST_PROMPT: HiddenPosition = "hidden_last_prompt"
"""The position whose probe picks the layer to ablate (the answer is not yet written there)."""
LAYER_NUMBERING = {
    "hidden_states": "Hugging Face's output_hidden_states: 0 = the embedding output, i = the output of decoder layer "
                     "i - 1, L = the last layer's output after the final norm (hidden_last_prompt, hidden_first_answer, "
                     "truth_margin_layers, the probes' layers, ablation layers)",
    "decoder_layers": "Hugging Face's output_attentions: decoder layer l = 0..L-1, which reads hidden state l and "
                      "writes hidden state l + 1 (answer attention maps, h_s_layers, c_k_*_layers, grounding_*_layers, "
                      "gaze_divergence_layers, residual_update_*_layers, margin_*_layers: the change from hidden "
                      "state l to l + 1)",
    "decoder_layer_changes": "entry i = the change from decoder layer i to decoder layer i + 1 (delta_h_s_layers)",
    "vision_blocks": "vision-encoder block j = 0..V-1 (vision_attention, vision_*_layers)",
}
"""How every per-layer output is numbered (written into each report as ``layer_numbering``)."""
SELF_CONSISTENCY_FIELDS = ("sc_answers",)
"""The fields a backend fills only when it draws self-consistency samples."""
ATTENTION_MAPS = ("answer_attention_mean", "vision_attention")
"""The attention maps a run keeps per sample and ``--save_traces`` writes (the run report's heatmaps read them)."""


class TraceError(ValueError):
    """A ``Traces`` field of the wrong shape or kind (a backend bug)."""


@dataclass
class Traces:
    """One sample's captured arrays (see the module docstring for each field's shape)."""

    answer_attention_mean: np.ndarray | None = None
    """Per decoder layer l: A[l] = (1/T) sum_t a_t[l] over the T = max(answer tokens, 1) generation steps, where
    a_t[l] is the head-mean attention row of the query that emits answer token t, restricted to the image
    positions: raw weights, a slice of a softmax over all keys, so its image mass m_t = sum a_t[l] is <= 1.

    Mean of the raw per-step rows (mass-weighted): once the layer map is normalised (``structural.normalize_map``),
    A / sum A = sum_t m_t (a_t / m_t) / sum_t m_t, so a step that puts more of its attention on the image counts
    more, and a step that barely looks at it hardly counts. The per-step-normalised alternative,
    (1/T) sum_t a_t / m_t, weighs every answer step alike however little attention it gives the image (and
    is undefined for a step with m_t = 0). ``models.instrumented`` writes the mass-weighted one; so should
    any other backend, for its signals to mean the same."""
    answer_attention_first: np.ndarray | None = None
    vision_attention: np.ndarray | None = None
    token_logprobs: np.ndarray | None = None
    token_entropies: np.ndarray | None = None
    token_margins: np.ndarray | None = None
    truth_margin_layers: np.ndarray | None = None
    margin_attention: np.ndarray | None = None
    margin_mlp: np.ndarray | None = None
    margin_unattributed: np.ndarray | None = None
    residual_update_image: np.ndarray | None = None
    residual_update_last: np.ndarray | None = None
    hidden_last_prompt: np.ndarray | None = None
    hidden_first_answer: np.ndarray | None = None
    first_token_logprobs: np.ndarray | None = None
    sc_answers: list[str] | None = None

    def __post_init__(self) -> None:
        for name, dims in _ARRAY_DIMS.items():
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _array(name, value, dims, keep_dtype=name in HIDDEN_POSITIONS))
        if self.sc_answers is not None:
            if isinstance(self.sc_answers, str) or not all(isinstance(a, str) for a in self.sc_answers):
                raise TraceError("traces.sc_answers must be a list of strings")
            self.sc_answers = list(self.sc_answers)
        self._check_agreement()

    def _check_agreement(self) -> None:
        """Fields that describe the same axis must agree on its length."""
        tokens = {name: len(getattr(self, name)) for name in _TOKEN_FIELDS if getattr(self, name) is not None}
        if len(set(tokens.values())) > 1:
            raise TraceError(f"traces: the per-answer-token arrays differ in length: {tokens}")
        first, mean = self.answer_attention_first, self.answer_attention_mean
        if first is not None and mean is not None and first.shape != mean.shape:
            raise TraceError(f"traces: answer_attention_first has shape {first.shape}, answer_attention_mean {mean.shape}")
        layers = {name: len(getattr(self, name)) for name in _DECODER_LAYER_FIELDS if getattr(self, name) is not None}
        states = {name: len(getattr(self, name)) for name in _HIDDEN_STATE_FIELDS if getattr(self, name) is not None}
        if len(set(layers.values())) > 1 or len(set(states.values())) > 1:
            raise TraceError(f"traces: fields on one layer axis differ in length: {layers | states}")
        if layers and states and set(states.values()) != {next(iter(layers.values())) + 1}:
            raise TraceError(f"traces: L decoder layers have L + 1 hidden states (embedding output first), got {layers} "
                             f"and {states}")

    @property
    def captured(self) -> bool:
        """Whether anything was captured at all (a backend without instrumentation leaves every field None)."""
        return any(getattr(self, name) is not None for name in TRACE_FIELDS)

    def present(self, name: str) -> bool:
        """Whether field ``name`` was captured and is not empty (e.g. an answer with no tokens)."""
        value = getattr(self, name)
        return value is not None and len(value) > 0

    def hidden_states(self) -> dict[HiddenPosition, np.ndarray]:
        """The captured hidden states by position."""
        return {position: getattr(self, position) for position in HIDDEN_POSITIONS
                if getattr(self, position) is not None}

    def attention_maps(self) -> dict[str, np.ndarray]:
        """The captured ``ATTENTION_MAPS`` by field, as float32."""
        return {name: getattr(self, name).astype(np.float32) for name in ATTENTION_MAPS
                if getattr(self, name) is not None}


_ARRAY_DIMS: dict[str, tuple[str, ...]] = {
    "answer_attention_mean": ("decoder layers", "rows", "cols"),
    "answer_attention_first": ("decoder layers", "rows", "cols"),
    "vision_attention": ("vision layers", "rows", "cols"),
    "token_logprobs": ("answer tokens",),
    "token_entropies": ("answer tokens",),
    "token_margins": ("answer tokens",),
    "truth_margin_layers": ("hidden states",),
    "margin_attention": ("decoder layers",),
    "margin_mlp": ("decoder layers",),
    "margin_unattributed": ("decoder layers",),
    "residual_update_image": ("decoder layers",),
    "residual_update_last": ("decoder layers",),
    "hidden_last_prompt": ("hidden states", "hidden"),
    "hidden_first_answer": ("hidden states", "hidden"),
    "first_token_logprobs": ("vocabulary",),
}
_TOKEN_FIELDS = ("token_logprobs", "token_entropies", "token_margins")
_DECODER_LAYER_FIELDS = ("answer_attention_mean", "answer_attention_first", "margin_attention", "margin_mlp",
                         "margin_unattributed", "residual_update_image", "residual_update_last")
_HIDDEN_STATE_FIELDS = ("truth_margin_layers", "hidden_last_prompt", "hidden_first_answer")
TRACE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Traces))
assert set(_ARRAY_DIMS) | set(SELF_CONSISTENCY_FIELDS) == set(TRACE_FIELDS)


def _array(name: str, value: Any, dims: Sequence[str], keep_dtype: bool) -> np.ndarray:
    """``value`` as a numeric array of ``len(dims)`` dimensions (float64 unless ``keep_dtype``)."""
    try:
        array = np.asarray(value) if keep_dtype else np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TraceError(f"traces.{name} must be numeric, got {type(value).__name__}") from None
    if array.ndim != len(dims) or not np.issubdtype(array.dtype, np.number):
        raise TraceError(f"traces.{name} must be a numeric [{', '.join(dims)}] array, "
                         f"got {array.dtype} of shape {array.shape}")
    return array
