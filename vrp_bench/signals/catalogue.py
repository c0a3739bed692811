"""``SIGNALS``: the catalogue of reliability signals, filled here, where it is defined.

Each entry is a small function of one sample's ``SignalInputs`` that calls the array functions of
``structural``, ``grounding``, ``generation`` and ``consistency``, registered with what it needs and how it
is oriented (``register_signal``). Scalar structural and grounding signals are computed on the mean of the
normalised maps of the aggregated layers (default: the second half; ``SignalInputs.decoder_map``); the
``*_layers`` lists give one value per layer. A new signal is one decorated function (here, or in your own
module that imports ``register_signal``).

Every decoder-attention signal reads ``Traces.answer_attention_mean``: per layer, the mean of the raw per-step
rows over the answer tokens (mass-weighted): a step that puts more of its attention on the image counts more
(normalised, A = sum_t m_t (a_t / m_t) / sum_t m_t, m_t = step t's attention mass on the image); the
per-step-normalised alternative, (1/T) sum_t a_t / m_t, would weigh every step alike. The ``*_first_token``
signals read the first step's row alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from vrp_bench.api.metrics import normalized_exact_match
from vrp_bench.api.registry import Registry
from vrp_bench.signals.consistency import majority_answer, sc_agreement, sc_entropy, unparsed_count
from vrp_bench.signals.detachment import early_late_correlation, gaze_divergence_layers, jensen_shannon
from vrp_bench.signals.generation import (
    first_token_margin,
    geometric_mean_prob,
    mean_entropy,
    mean_logprob,
    min_logprob,
    perplexity,
)
from vrp_bench.signals.grounding import grounding_mass, pointing_hit
from vrp_bench.signals.inputs import SignalInputs
from vrp_bench.signals.spec import ComputeFn, Reference, SignalSpec
from vrp_bench.signals.residual import forcing_layer, late_forcing, mlp_share, peak_layer
from vrp_bench.signals.structural import (
    cluster_count_components,
    cluster_count_dbscan,
    early_lock_layer,
    entropy_deltas,
    late_diffusion,
    spatial_entropy,
    spatial_entropy_peruzzo,
)

SIGNALS: Registry[SignalSpec] = Registry("signal", listing="vrp-bench signals")


def register_signal(
    name: str,
    orientation: int | None,
    needs: tuple[str, ...],
    *,
    per_layer: bool = False,
    probability: bool = False,
    reference: Reference | None = None,
    calibrated_against: str | None = None,
) -> Callable[[ComputeFn], ComputeFn]:
    """Decorator: add ``compute`` to ``SIGNALS`` under ``name``; its docstring becomes the description."""

    def add(compute: ComputeFn) -> ComputeFn:
        description = inspect.getdoc(compute) or ""
        spec = SignalSpec(name, orientation, needs, per_layer, probability, description, compute, reference,
                          calibrated_against)
        SIGNALS.register(name)(spec)
        return compute

    return add


def _per_layer(signal: Callable[..., Any], stack: np.ndarray, *args: Any) -> list[Any]:
    return [signal(layer, *args) for layer in stack]


def _dbscan(m: np.ndarray, i: SignalInputs) -> int:
    s = i.settings
    return cluster_count_dbscan(m, s.dbscan_percentile, s.dbscan_eps, s.dbscan_min_samples)


def _components(m: np.ndarray, i: SignalInputs) -> int:
    return cluster_count_components(m, i.settings.components_top_mass, i.settings.connectivity)


def _peruzzo(m: np.ndarray, i: SignalInputs) -> float:
    return spatial_entropy_peruzzo(m, i.settings.connectivity)


_DECODER = ("answer_attention_mean",)
_VISION = ("vision_attention",)
_BOXES = ("boxes", "image_size")

# Decoder attention structure (orientation under the Attention-Confidence Assumption).


@register_signal("h_s", -1, _DECODER)
def _h_s(i: SignalInputs) -> float:
    """Spatial entropy H_s (nats) of the answer->image attention, mean map of the aggregated layers.

    Answer tokens: the mass-weighted mean of their raw attention rows (module docstring)."""
    return spatial_entropy(i.decoder_map)


@register_signal("h_s_layers", -1, _DECODER, per_layer=True)
def _h_s_layers(i: SignalInputs) -> list[float]:
    """H_s per decoder layer (answer tokens' mean attention, mass-weighted: module docstring)."""
    return list(i.decoder_entropies)


@register_signal("h_s_first_token_layers", -1, ("answer_attention_first",), per_layer=True)
def _h_s_first_token_layers(i: SignalInputs) -> list[float]:
    """H_s per decoder layer of the first answer token's attention."""
    return _per_layer(spatial_entropy, i.traces.answer_attention_first)


@register_signal("h_s_peruzzo", -1, _DECODER)
def _h_s_peruzzo(i: SignalInputs) -> float:
    """Peruzzo et al. 2022 spatial entropy over above-mean components, mean map of the aggregated layers.

    Components are ``settings.connectivity``-connected (8 by default, Peruzzo et al.'s). Answer tokens: the
    mass-weighted mean of their raw attention rows (module docstring)."""
    return _peruzzo(i.decoder_map, i)


@register_signal("h_s_peruzzo_layers", -1, _DECODER, per_layer=True)
def _h_s_peruzzo_layers(i: SignalInputs) -> list[float]:
    """Peruzzo spatial entropy per decoder layer."""
    return _per_layer(_peruzzo, i.traces.answer_attention_mean, i)


@register_signal("c_k_dbscan", -1, _DECODER)
def _c_k_dbscan(i: SignalInputs) -> int:
    """Cluster count C_k (DBSCAN on the k top-percentile cells), mean map of the aggregated layers.

    k = ceil((100 - dbscan_percentile) / 100 * N) of the N cells exactly (58 of 24x24 at the default 90), ties
    by row-major position (``structural.cluster_count_dbscan``). Answer tokens: the mass-weighted mean of their
    raw attention rows (module docstring)."""
    return _dbscan(i.decoder_map, i)


@register_signal("c_k_dbscan_layers", -1, _DECODER, per_layer=True)
def _c_k_dbscan_layers(i: SignalInputs) -> list[int]:
    """C_k (DBSCAN) per decoder layer."""
    return _per_layer(_dbscan, i.traces.answer_attention_mean, i)


@register_signal("c_k_components", -1, _DECODER)
def _c_k_components(i: SignalInputs) -> int:
    """Cluster count C_k (top-mass components - 1), mean map of the aggregated layers.

    Components are ``settings.connectivity``-connected (8 by default). Answer tokens: the mass-weighted mean of
    their raw attention rows (module docstring)."""
    return _components(i.decoder_map, i)


@register_signal("c_k_components_layers", -1, _DECODER, per_layer=True)
def _c_k_components_layers(i: SignalInputs) -> list[int]:
    """C_k (top-mass components - 1) per decoder layer."""
    return _per_layer(_components, i.traces.answer_attention_mean, i)


@register_signal("delta_h_s_layers", None, _DECODER, per_layer=True)
def _delta_h_s_layers(i: SignalInputs) -> list[float]:
    """dH_s[l] = H_s[l] - H_s[l-1], l = 1..L-1 (entry i lands at layer i+1)."""
    return entropy_deltas(i.decoder_entropies)


@register_signal("early_lock_layer", None, _DECODER)
def _early_lock_layer(i: SignalInputs) -> int | None:
    """Decoder layer where the largest H_s drop lands (None with one layer)."""
    return early_lock_layer(i.decoder_entropies)


@register_signal("late_diffusion", -1, _DECODER)
def _late_diffusion(i: SignalInputs) -> float | None:
    """H_s rise across the last late_fraction of decoder layers (None with one layer)."""
    return late_diffusion(i.decoder_entropies, i.settings.late_fraction)


# Residual-stream dynamics of the prompt pass (late-stage forcing).


@register_signal("residual_update_image_layers", None, ("residual_update_image",), per_layer=True)
def _residual_update_image_layers(i: SignalInputs) -> list[float]:
    """||output - input|| of each decoder layer at the prompt pass, mean over the image tokens."""
    return [float(norm) for norm in i.traces.residual_update_image]


@register_signal("residual_update_last_layers", None, ("residual_update_last",), per_layer=True)
def _residual_update_last_layers(i: SignalInputs) -> list[float]:
    """||output - input|| of each decoder layer at the last prompt position."""
    return [float(norm) for norm in i.traces.residual_update_last]


@register_signal("forcing_layer", None, ("residual_update_image",))
def _forcing_layer(i: SignalInputs) -> int | None:
    """Decoder layer where the image tokens' update norm rises most (None with one layer)."""
    return forcing_layer(i.traces.residual_update_image)


@register_signal("late_forcing", -1, ("residual_update_image",))
def _late_forcing(i: SignalInputs) -> float | None:
    """Mean image-token update of the last late_fraction of decoder layers over that of the layers before.
    Oriented by the study's late-bottleneck reading (an answer forced into the image positions only in the last
    layers is the fragile one), like late_diffusion; an AUROC below 0.5 reports the opposite."""
    return late_forcing(i.traces.residual_update_image, i.settings.late_fraction)


# The blocks' shares of the truth margin's growth (logit lens, direct attribution): they read the reference answer.

_ATTRIBUTION = ("margin_attention", "margin_mlp")


@register_signal("margin_attention_layers", None, ("margin_attention",), per_layer=True, reference="target")
def _margin_attention_layers(i: SignalInputs) -> list[float]:
    """Per decoder layer, the attention block's contribution to the truth margin's change (direct attribution)."""
    return [float(value) for value in i.traces.margin_attention]


@register_signal("margin_mlp_layers", None, ("margin_mlp",), per_layer=True, reference="target")
def _margin_mlp_layers(i: SignalInputs) -> list[float]:
    """Per decoder layer, the MLP block's contribution to the truth margin's change (direct attribution)."""
    return [float(value) for value in i.traces.margin_mlp]


@register_signal("margin_unattributed_layers", None, ("margin_unattributed",), per_layer=True, reference="target")
def _margin_unattributed_layers(i: SignalInputs) -> list[float]:
    """Per decoder layer, the truth margin's change left to neither block (the final norm's rescaling, a change of
    target or rival token): what the direct attribution leaves out."""
    return [float(value) for value in i.traces.margin_unattributed]


@register_signal("mlp_share", None, _ATTRIBUTION, reference="target")
def _mlp_share(i: SignalInputs) -> float | None:
    """The MLP blocks' share of how far the blocks move the truth margin, sum |mlp| / sum (|attention| + |mlp|)
    (None when no block moves it)."""
    return mlp_share(i.traces.margin_attention, i.traces.margin_mlp)


@register_signal("margin_peak_layer", None, _ATTRIBUTION, reference="target")
def _margin_peak_layer(i: SignalInputs) -> int | None:
    """Decoder layer whose blocks add the most truth margin (attention + MLP contributions)."""
    return peak_layer(i.traces.margin_attention + i.traces.margin_mlp)


# Decoder attention against the target boxes.


@register_signal("grounding_mass", 1, _DECODER + _BOXES, reference="boxes")
def _grounding_mass(i: SignalInputs) -> float:
    """Answer->image attention mass inside the target boxes, mean map of the aggregated layers.

    Answer tokens: the mass-weighted mean of their raw attention rows (module docstring)."""
    return grounding_mass(i.decoder_map, i.decoder_box_weights)


@register_signal("grounding_mass_layers", 1, _DECODER + _BOXES, per_layer=True, reference="boxes")
def _grounding_mass_layers(i: SignalInputs) -> list[float]:
    """Attention mass inside the target boxes per decoder layer."""
    return _per_layer(grounding_mass, i.traces.answer_attention_mean, i.decoder_box_weights)


@register_signal("pointing_hit", 1, _DECODER + _BOXES, reference="boxes")
def _pointing_hit(i: SignalInputs) -> bool:
    """Pointing game: the attention peak (all tied peaks) lies in a target box, aggregated layers.

    Answer tokens: the mass-weighted mean of their raw attention rows (module docstring)."""
    return pointing_hit(i.decoder_map, i.decoder_box_weights)


@register_signal("pointing_hit_layers", 1, _DECODER + _BOXES, per_layer=True, reference="boxes")
def _pointing_hit_layers(i: SignalInputs) -> list[bool]:
    """Pointing game per decoder layer."""
    return _per_layer(pointing_hit, i.traces.answer_attention_mean, i.decoder_box_weights)


# The vision encoder's own attention.


@register_signal("vision_h_s", -1, _VISION)
def _vision_h_s(i: SignalInputs) -> float:
    """H_s of the vision encoder's attention, mean map of its aggregated layers."""
    return spatial_entropy(i.vision_map)


@register_signal("vision_h_s_layers", -1, _VISION, per_layer=True)
def _vision_h_s_layers(i: SignalInputs) -> list[float]:
    """H_s per vision-encoder layer."""
    return _per_layer(spatial_entropy, i.traces.vision_attention)


@register_signal("vision_c_k_dbscan", -1, _VISION)
def _vision_c_k_dbscan(i: SignalInputs) -> int:
    """C_k (DBSCAN on the k top-percentile cells) of the vision encoder's attention, aggregated layers."""
    return _dbscan(i.vision_map, i)


@register_signal("vision_c_k_components", -1, _VISION)
def _vision_c_k_components(i: SignalInputs) -> int:
    """C_k (top-mass components - 1) of the vision encoder's attention, aggregated layers.

    Components are ``settings.connectivity``-connected (8 by default)."""
    return _components(i.vision_map, i)


@register_signal("vision_grounding_mass", 1, _VISION + _BOXES, reference="boxes")
def _vision_grounding_mass(i: SignalInputs) -> float:
    """Vision-encoder attention mass inside the target boxes, aggregated layers."""
    return grounding_mass(i.vision_map, i.vision_box_weights)


@register_signal("vision_grounding_mass_layers", 1, _VISION + _BOXES, per_layer=True, reference="boxes")
def _vision_grounding_mass_layers(i: SignalInputs) -> list[float]:
    """Vision-encoder attention mass inside the target boxes per layer."""
    return _per_layer(grounding_mass, i.traces.vision_attention, i.vision_box_weights)


@register_signal("vision_pointing_hit", 1, _VISION + _BOXES, reference="boxes")
def _vision_pointing_hit(i: SignalInputs) -> bool:
    """Pointing game on the vision encoder's attention, aggregated layers."""
    return pointing_hit(i.vision_map, i.vision_box_weights)


# Symbolic detachment: the decoder's gaze against the vision encoder's, and its late gaze against its early one.
# Oriented by the study's Symbolic Detachment hypothesis: a decoder whose gaze leaves what the image showed it is less
# reliable (an AUROC below 0.5 reports the opposite).


@register_signal("gaze_divergence", -1, _DECODER + _VISION)
def _gaze_divergence(i: SignalInputs) -> float:
    """Jensen-Shannon divergence (nats, in [0, ln 2]) between the vision encoder's gaze and the answer->image mean
    map of the aggregated decoder layers: JS(V, D), A = (V + D) / 2, JS = (KL(V || A) + KL(D || A)) / 2.

    V: the last vision block's normalised map, sum-pooled onto the decoder grid (Qwen2-VL: 2x2 patches per cell).
    JS of the mean map, like the other scalars; the mean of ``gaze_divergence_layers`` over the same layers is
    >= it (JS is convex). Oriented -1: a decoder whose gaze detaches from where the encoder looked is less reliable."""
    return jensen_shannon(i.vision_gaze, i.decoder_map)


@register_signal("gaze_divergence_layers", -1, _DECODER + _VISION, per_layer=True)
def _gaze_divergence_layers(i: SignalInputs) -> list[float]:
    """JS(V, D[l]) per decoder layer l (nats): the vision encoder's gaze V against decoder layer l's map."""
    return gaze_divergence_layers(i.vision_gaze, i.traces.answer_attention_mean)


@register_signal("early_late_correlation", 1, _DECODER)
def _early_late_correlation(i: SignalInputs) -> float | None:
    """Pearson r over the grid cells between the mean normalised map of decoder layers 0 .. L//2 - 1 and that of
    layers L//2 .. L-1, whatever ``aggregate_layers`` (None with one layer).

    Oriented +1: under Symbolic Detachment the late layers abandon the evidence the early layers found, so a gaze
    that stays where it first looked (r near 1) marks a reliable answer. The opposite reading, an early lock onto the
    wrong region that the late layers never revisit, would show as an AUROC below 0.5."""
    return early_late_correlation(i.traces.answer_attention_mean)


# Generation dynamics and the logit lens.


@register_signal("p_tok", 1, ("token_logprobs",))
def _p_tok(i: SignalInputs) -> float | None:
    """P_tok: mean log-probability of the answer tokens."""
    return mean_logprob(i.traces.token_logprobs)


@register_signal("p_tok_prob", 1, ("token_logprobs",), probability=True)
def _p_tok_prob(i: SignalInputs) -> float | None:
    """exp(P_tok): geometric-mean token probability."""
    return geometric_mean_prob(i.traces.token_logprobs)


@register_signal("min_logprob", 1, ("token_logprobs",))
def _min_logprob(i: SignalInputs) -> float | None:
    """Lowest answer-token log-probability."""
    return min_logprob(i.traces.token_logprobs)


@register_signal("perplexity", -1, ("token_logprobs",))
def _perplexity(i: SignalInputs) -> float | None:
    """exp(-P_tok)."""
    return perplexity(i.traces.token_logprobs)


@register_signal("mean_entropy", -1, ("token_entropies",))
def _mean_entropy(i: SignalInputs) -> float | None:
    """Mean next-token entropy (nats) over the answer."""
    return mean_entropy(i.traces.token_entropies)


@register_signal("first_token_margin", 1, ("token_margins",))
def _first_token_margin(i: SignalInputs) -> float | None:
    """Top-1 minus top-2 log-probability at the first answer token."""
    return first_token_margin(i.traces.token_margins)


@register_signal("truth_margin_layers", 1, ("truth_margin_layers",), per_layer=True, reference="target")
def _truth_margin_layers(i: SignalInputs) -> list[float]:
    """Logit-lens truth margin per hidden state 0..L (HF numbering): logit(correct token) - max other logit.

    It reads the reference answer, so it is a mechanistic measurement (where the answer forms): a
    diagnostic, shown by correct vs incorrect, never a reliability signal."""
    return [float(margin) for margin in i.traces.truth_margin_layers]


@register_signal("truth_margin", 1, ("truth_margin_layers",), reference="target")
def _truth_margin(i: SignalInputs) -> float:
    """Truth margin of hidden state L, the model's own logits (reads the reference answer: a diagnostic)."""
    return float(i.traces.truth_margin_layers[-1])


# Self-consistency over sampled answers.


@register_signal("sc_answers", None, ("sc_answers",))
def _sc_answers(i: SignalInputs) -> list[str]:
    """The K sampled answers (or reasoning paths) as generated."""
    return [str(answer) for answer in i.traces.sc_answers]


@register_signal("sc_extracted", None, ("sc_answers",))
def _sc_extracted(i: SignalInputs) -> list[str | None]:
    """Each sample's final answer as the task's filters extract it (null: none found)."""
    return i.sc_final_answers


@register_signal("sc_unparsed", None, ("sc_answers",))
def _sc_unparsed(i: SignalInputs) -> int:
    """How many samples had no extractable answer (left out of every sc_* signal below)."""
    return unparsed_count(i.sc_final_answers)


@register_signal("sc_agreement", 1, ("sc_answers",), probability=True, calibrated_against="sc_majority_correct")
def _sc_agreement(i: SignalInputs) -> float:
    """S_SC: share of the parsed sampled answers equal (normalised) to the majority answer."""
    return sc_agreement(i.sc_final_answers, i.answer_normalization)


@register_signal("sc_entropy", -1, ("sc_answers",))
def _sc_entropy(i: SignalInputs) -> float:
    """Entropy (nats) of the normalised parsed sampled-answer distribution."""
    return sc_entropy(i.sc_final_answers, i.answer_normalization)


@register_signal("sc_majority", None, ("sc_answers",))
def _sc_majority(i: SignalInputs) -> str:
    """The normalised majority answer (the SC prediction; ties: first seen)."""
    return majority_answer(i.sc_final_answers, i.answer_normalization)


@register_signal("sc_majority_correct", None, ("sc_answers", "target"), reference="target")
def _sc_majority_correct(i: SignalInputs) -> bool:
    """Whether the SC majority matches the target by normalised exact match (the task's rules)."""
    rules = i.answer_normalization
    return normalized_exact_match(majority_answer(i.sc_final_answers, rules), i.target, rules) == 1.0
