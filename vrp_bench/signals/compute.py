"""One sample's captured arrays (``SampleCapture``) -> the flat, JSON-ready signal dict of its record.

Each key is a ``SIGNALS`` entry registered below: a small function of (capture, settings) that
calls the array functions of ``structural``, ``grounding``, ``generation`` and ``consistency``.
A signal whose needed capture fields are missing (None or empty) is None, never 0.
Scalar structural and grounding signals are computed on the mean of the normalised maps of the
aggregated layers (default: the second half); the ``*_layers`` lists give one value per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vrp_bench.api.errors import UsageError
from vrp_bench.api.metrics import exact_match
from vrp_bench.signals.consistency import majority_answer, sc_agreement, sc_entropy
from vrp_bench.signals.generation import (
    first_token_margin,
    geometric_mean_prob,
    mean_entropy,
    mean_logprob,
    min_logprob,
    perplexity,
)
from vrp_bench.signals.grounding import box_weights, grounding_mass, pointing_hit
from vrp_bench.signals.registry import SIGNALS, register_signal
from vrp_bench.signals.structural import (
    cluster_count_components,
    cluster_count_dbscan,
    early_lock_layer,
    entropy_deltas,
    late_diffusion,
    normalize_map,
    spatial_entropy,
    spatial_entropy_peruzzo,
)

_ATTENTION_FIELDS = ("answer_attention_mean", "answer_attention_first", "vision_attention")
_TOKEN_FIELDS = ("token_logprobs", "token_entropies", "token_margins")


@dataclass
class SampleCapture:
    """What model code captured for one sample; every field is optional.

    Attention stacks are [n_layers, rows, cols] over the image-patch grid:
    ``answer_attention_mean`` / ``answer_attention_first``: decoder attention from the answer tokens
    (mean over them / the first one) to the image tokens, head-averaged, per decoder layer;
    ``vision_attention``: the vision encoder's own attention over its patches, per encoder layer.
    ``image_size`` is (width, height) in pixels; ``boxes`` are [x0, y0, x1, y1) pixel boxes of the
    target object(s). Token arrays have one entry per generated answer token. ``truth_margin_layers``
    (logit-lens margin per decoder layer) is passed through. ``sc_answers`` are the K sampled
    answers; ``target`` the reference answer(s), used only for ``sc_majority_correct``.
    """

    answer_attention_mean: np.ndarray | None = None
    answer_attention_first: np.ndarray | None = None
    vision_attention: np.ndarray | None = None
    image_size: tuple[int, int] | None = None
    boxes: Sequence[Sequence[float]] | None = None
    token_logprobs: np.ndarray | None = None
    token_entropies: np.ndarray | None = None
    token_margins: np.ndarray | None = None
    truth_margin_layers: Sequence[float] | None = None
    sc_answers: Sequence[str] | None = None
    target: str | Sequence[str] | None = None

    def __post_init__(self) -> None:
        for name, ndim in [(f, 3) for f in _ATTENTION_FIELDS] + [(f, 1) for f in _TOKEN_FIELDS]:
            value = getattr(self, name)
            if value is not None:
                array = np.asarray(value, dtype=np.float64)
                if array.ndim != ndim:
                    raise ValueError(f"{name} must have {ndim} dimension(s), got shape {array.shape}")
                setattr(self, name, array)

    def has(self, names: Sequence[str]) -> bool:
        """True when every named field is present: not None and not empty."""
        return all(getattr(self, name) is not None and len(getattr(self, name)) > 0 for name in names)


@dataclass(frozen=True)
class SignalSettings:
    """Parameters of the signal functions (defaults: the study's).

    ``aggregate_layers`` / ``vision_aggregate_layers``: indices of the decoder / vision-encoder
    layers whose mean map the scalar signals use; None = the second half, layers L//2 .. L-1
    (the study averaged LLaVA's layers 16-32).
    """

    dbscan_percentile: float = 90.0
    dbscan_eps: float = 1.5
    dbscan_min_samples: int = 3
    components_top_mass: float = 0.3
    late_fraction: float = 0.25
    aggregate_layers: tuple[int, ...] | None = None
    vision_aggregate_layers: tuple[int, ...] | None = None


@dataclass
class SampleSignals:
    """One sample's signals: ``values`` {name: JSON-ready value or None} and, for each signal that failed on
    this sample (raised, or gave a NaN / infinite number), ``errors`` {name: reason}; its value is None."""

    values: dict[str, Any]
    errors: dict[str, str]


def compute_signals(
    capture: SampleCapture, settings: SignalSettings = SignalSettings(), names: Collection[str] | None = None
) -> SampleSignals:
    """Every registered signal (or only ``names``) of one sample. A signal whose capture fields are missing is
    None (inapplicable); one that fails on this sample's data (e.g. an attention map with zero mass) is None
    with the reason in ``errors``, and the others are still computed. A bad setting (``UsageError``) is not
    a property of the sample: it propagates."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, spec in SIGNALS.items():
        if names is not None and name not in names:
            continue
        values[name] = None
        if not capture.has(spec.needs):
            continue
        try:
            value = spec.compute(capture, settings)
        except UsageError:
            raise
        except Exception as error:  # this sample's data, not the run: recorded, counted, never fatal
            errors[name] = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
            continue
        if not _finite(value):
            errors[name] = "not a finite number (NaN or infinite)"
            continue
        values[name] = value
    return SampleSignals(values, errors)


def _finite(value: Any) -> bool:
    """False for a float (or a list holding one) that is NaN or infinite."""
    if isinstance(value, list):
        return all(_finite(item) for item in value)
    return not isinstance(value, float) or np.isfinite(value)


def _mean_map(stack: np.ndarray, layers: tuple[int, ...] | None) -> np.ndarray:
    """Mean of the normalised maps of ``layers`` (None: L//2 .. L-1), each layer weighing equally."""
    n_layers = len(stack)
    chosen = range(n_layers // 2, n_layers) if layers is None else layers
    if not chosen or any(not -n_layers <= layer < n_layers for layer in chosen):
        raise UsageError(f"aggregate layers {tuple(chosen)} do not index the {n_layers} captured layers")
    return np.mean([normalize_map(stack[layer]) for layer in chosen], axis=0)


def _decoder_map(c: SampleCapture, s: SignalSettings) -> np.ndarray:
    return _mean_map(c.answer_attention_mean, s.aggregate_layers)


def _vision_map(c: SampleCapture, s: SignalSettings) -> np.ndarray:
    return _mean_map(c.vision_attention, s.vision_aggregate_layers)


def _per_layer(signal: Callable[..., Any], stack: np.ndarray, *args: Any) -> list[Any]:
    return [signal(layer, *args) for layer in stack]


def _weights(c: SampleCapture, stack: np.ndarray) -> np.ndarray:
    return box_weights(c.boxes, c.image_size, stack.shape[1:])


def _dbscan(m: np.ndarray, s: SignalSettings) -> int:
    return cluster_count_dbscan(m, s.dbscan_percentile, s.dbscan_eps, s.dbscan_min_samples)


def _components(m: np.ndarray, s: SignalSettings) -> int:
    return cluster_count_components(m, s.components_top_mass)


_DECODER = ("answer_attention_mean",)
_VISION = ("vision_attention",)
_BOXES = ("boxes", "image_size")

# Decoder attention structure (orientation under the Attention-Confidence Assumption).


@register_signal("h_s", -1, _DECODER)
def _h_s(c: SampleCapture, s: SignalSettings) -> float:
    """Spatial entropy H_s (nats) of the answer->image attention, mean map of the aggregated layers."""
    return spatial_entropy(_decoder_map(c, s))


@register_signal("h_s_layers", -1, _DECODER, per_layer=True)
def _h_s_layers(c: SampleCapture, s: SignalSettings) -> list[float]:
    """H_s per decoder layer (answer tokens' mean attention)."""
    return _per_layer(spatial_entropy, c.answer_attention_mean)


@register_signal("h_s_first_token_layers", -1, ("answer_attention_first",), per_layer=True)
def _h_s_first_token_layers(c: SampleCapture, s: SignalSettings) -> list[float]:
    """H_s per decoder layer of the first answer token's attention."""
    return _per_layer(spatial_entropy, c.answer_attention_first)


@register_signal("h_s_peruzzo", -1, _DECODER)
def _h_s_peruzzo(c: SampleCapture, s: SignalSettings) -> float:
    """Peruzzo et al. 2022 spatial entropy over above-mean components, mean map of the aggregated layers."""
    return spatial_entropy_peruzzo(_decoder_map(c, s))


@register_signal("h_s_peruzzo_layers", -1, _DECODER, per_layer=True)
def _h_s_peruzzo_layers(c: SampleCapture, s: SignalSettings) -> list[float]:
    """Peruzzo spatial entropy per decoder layer."""
    return _per_layer(spatial_entropy_peruzzo, c.answer_attention_mean)


@register_signal("c_k_dbscan", -1, _DECODER)
def _c_k_dbscan(c: SampleCapture, s: SignalSettings) -> int:
    """Cluster count C_k (DBSCAN on top-percentile cells), mean map of the aggregated layers."""
    return _dbscan(_decoder_map(c, s), s)


@register_signal("c_k_dbscan_layers", -1, _DECODER, per_layer=True)
def _c_k_dbscan_layers(c: SampleCapture, s: SignalSettings) -> list[int]:
    """C_k (DBSCAN) per decoder layer."""
    return _per_layer(_dbscan, c.answer_attention_mean, s)


@register_signal("c_k_components", -1, _DECODER)
def _c_k_components(c: SampleCapture, s: SignalSettings) -> int:
    """Cluster count C_k (top-mass components - 1), mean map of the aggregated layers."""
    return _components(_decoder_map(c, s), s)


@register_signal("c_k_components_layers", -1, _DECODER, per_layer=True)
def _c_k_components_layers(c: SampleCapture, s: SignalSettings) -> list[int]:
    """C_k (top-mass components - 1) per decoder layer."""
    return _per_layer(_components, c.answer_attention_mean, s)


@register_signal("delta_h_s_layers", None, _DECODER, per_layer=True)
def _delta_h_s_layers(c: SampleCapture, s: SignalSettings) -> list[float]:
    """dH_s[l] = H_s[l] - H_s[l-1], l = 1..L-1 (entry i lands at layer i+1)."""
    return entropy_deltas(_h_s_layers(c, s))


@register_signal("early_lock_layer", None, _DECODER)
def _early_lock_layer(c: SampleCapture, s: SignalSettings) -> int | None:
    """Decoder layer where the largest H_s drop lands (None with one layer)."""
    return early_lock_layer(_h_s_layers(c, s))


@register_signal("late_diffusion", -1, _DECODER)
def _late_diffusion(c: SampleCapture, s: SignalSettings) -> float | None:
    """H_s rise across the last late_fraction of decoder layers (None with one layer)."""
    return late_diffusion(_h_s_layers(c, s), s.late_fraction)


# Decoder attention against the target boxes.


@register_signal("grounding_mass", 1, _DECODER + _BOXES, reference="boxes")
def _grounding_mass(c: SampleCapture, s: SignalSettings) -> float:
    """Answer->image attention mass inside the target boxes, mean map of the aggregated layers."""
    return grounding_mass(_decoder_map(c, s), _weights(c, c.answer_attention_mean))


@register_signal("grounding_mass_layers", 1, _DECODER + _BOXES, per_layer=True, reference="boxes")
def _grounding_mass_layers(c: SampleCapture, s: SignalSettings) -> list[float]:
    """Attention mass inside the target boxes per decoder layer."""
    return _per_layer(grounding_mass, c.answer_attention_mean, _weights(c, c.answer_attention_mean))


@register_signal("pointing_hit", 1, _DECODER + _BOXES, reference="boxes")
def _pointing_hit(c: SampleCapture, s: SignalSettings) -> bool:
    """Pointing game: the attention peak (all tied peaks) lies in a target box, aggregated layers."""
    return pointing_hit(_decoder_map(c, s), _weights(c, c.answer_attention_mean))


@register_signal("pointing_hit_layers", 1, _DECODER + _BOXES, per_layer=True, reference="boxes")
def _pointing_hit_layers(c: SampleCapture, s: SignalSettings) -> list[bool]:
    """Pointing game per decoder layer."""
    return _per_layer(pointing_hit, c.answer_attention_mean, _weights(c, c.answer_attention_mean))


# The vision encoder's own attention.


@register_signal("vision_h_s", -1, _VISION)
def _vision_h_s(c: SampleCapture, s: SignalSettings) -> float:
    """H_s of the vision encoder's attention, mean map of its aggregated layers."""
    return spatial_entropy(_vision_map(c, s))


@register_signal("vision_h_s_layers", -1, _VISION, per_layer=True)
def _vision_h_s_layers(c: SampleCapture, s: SignalSettings) -> list[float]:
    """H_s per vision-encoder layer."""
    return _per_layer(spatial_entropy, c.vision_attention)


@register_signal("vision_c_k_dbscan", -1, _VISION)
def _vision_c_k_dbscan(c: SampleCapture, s: SignalSettings) -> int:
    """C_k (DBSCAN) of the vision encoder's attention, aggregated layers."""
    return _dbscan(_vision_map(c, s), s)


@register_signal("vision_c_k_components", -1, _VISION)
def _vision_c_k_components(c: SampleCapture, s: SignalSettings) -> int:
    """C_k (top-mass components - 1) of the vision encoder's attention, aggregated layers."""
    return _components(_vision_map(c, s), s)


@register_signal("vision_grounding_mass", 1, _VISION + _BOXES, reference="boxes")
def _vision_grounding_mass(c: SampleCapture, s: SignalSettings) -> float:
    """Vision-encoder attention mass inside the target boxes, aggregated layers."""
    return grounding_mass(_vision_map(c, s), _weights(c, c.vision_attention))


@register_signal("vision_grounding_mass_layers", 1, _VISION + _BOXES, per_layer=True, reference="boxes")
def _vision_grounding_mass_layers(c: SampleCapture, s: SignalSettings) -> list[float]:
    """Vision-encoder attention mass inside the target boxes per layer."""
    return _per_layer(grounding_mass, c.vision_attention, _weights(c, c.vision_attention))


@register_signal("vision_pointing_hit", 1, _VISION + _BOXES, reference="boxes")
def _vision_pointing_hit(c: SampleCapture, s: SignalSettings) -> bool:
    """Pointing game on the vision encoder's attention, aggregated layers."""
    return pointing_hit(_vision_map(c, s), _weights(c, c.vision_attention))


# Generation dynamics and the logit lens.


@register_signal("p_tok", 1, ("token_logprobs",))
def _p_tok(c: SampleCapture, s: SignalSettings) -> float | None:
    """P_tok: mean log-probability of the answer tokens."""
    return mean_logprob(c.token_logprobs)


@register_signal("p_tok_prob", 1, ("token_logprobs",), probability=True)
def _p_tok_prob(c: SampleCapture, s: SignalSettings) -> float | None:
    """exp(P_tok): geometric-mean token probability."""
    return geometric_mean_prob(c.token_logprobs)


@register_signal("min_logprob", 1, ("token_logprobs",))
def _min_logprob(c: SampleCapture, s: SignalSettings) -> float | None:
    """Lowest answer-token log-probability."""
    return min_logprob(c.token_logprobs)


@register_signal("perplexity", -1, ("token_logprobs",))
def _perplexity(c: SampleCapture, s: SignalSettings) -> float | None:
    """exp(-P_tok)."""
    return perplexity(c.token_logprobs)


@register_signal("mean_entropy", -1, ("token_entropies",))
def _mean_entropy(c: SampleCapture, s: SignalSettings) -> float | None:
    """Mean next-token entropy (nats) over the answer."""
    return mean_entropy(c.token_entropies)


@register_signal("first_token_margin", 1, ("token_margins",))
def _first_token_margin(c: SampleCapture, s: SignalSettings) -> float | None:
    """Top-1 minus top-2 log-probability at the first answer token."""
    return first_token_margin(c.token_margins)


@register_signal("truth_margin_layers", 1, ("truth_margin_layers",), per_layer=True, reference="target")
def _truth_margin_layers(c: SampleCapture, s: SignalSettings) -> list[float]:
    """Logit-lens truth margin per decoder layer: logit(correct token) - max other logit (from model code).

    It reads the reference answer, so it is a mechanistic measurement (where the answer forms): a
    diagnostic, shown by correct vs incorrect, never a reliability signal."""
    return [float(margin) for margin in c.truth_margin_layers]


@register_signal("truth_margin", 1, ("truth_margin_layers",), reference="target")
def _truth_margin(c: SampleCapture, s: SignalSettings) -> float:
    """Logit-lens truth margin at the last decoder layer (reads the reference answer: a diagnostic)."""
    return float(c.truth_margin_layers[-1])


# Self-consistency over sampled answers.


@register_signal("sc_answers", None, ("sc_answers",))
def _sc_answers(c: SampleCapture, s: SignalSettings) -> list[str]:
    """The K sampled answers as generated."""
    return [str(answer) for answer in c.sc_answers]


@register_signal("sc_agreement", 1, ("sc_answers",), probability=True, calibrated_against="sc_majority_correct")
def _sc_agreement(c: SampleCapture, s: SignalSettings) -> float:
    """S_SC: share of the sampled answers equal (normalised) to the majority answer."""
    return sc_agreement(c.sc_answers)


@register_signal("sc_entropy", -1, ("sc_answers",))
def _sc_entropy(c: SampleCapture, s: SignalSettings) -> float:
    """Entropy (nats) of the normalised sampled-answer distribution."""
    return sc_entropy(c.sc_answers)


@register_signal("sc_majority", None, ("sc_answers",))
def _sc_majority(c: SampleCapture, s: SignalSettings) -> str:
    """The normalised majority answer (the SC prediction; ties: first seen)."""
    return majority_answer(c.sc_answers)


@register_signal("sc_majority_correct", None, ("sc_answers", "target"), reference="target")
def _sc_majority_correct(c: SampleCapture, s: SignalSettings) -> bool:
    """Whether the SC majority matches the target by normalised exact match."""
    return exact_match(majority_answer(c.sc_answers), c.target) == 1.0
