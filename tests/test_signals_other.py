"""Grounding, generation and self-consistency signals, the registry and compute_signals."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

import vrp_bench.signals
from vrp_bench.api.errors import UsageError
from vrp_bench.api.traces import TraceError, Traces
from vrp_bench.signals.catalogue import SIGNALS
from vrp_bench.signals.compute import compute_signals
from vrp_bench.signals.inputs import INPUT_FIELDS, SignalInputs, SignalSettings
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

# --- grounding --------------------------------------------------------------------------------


def test_box_covering_a_cell_aligned_quarter_holds_a_quarter_of_a_uniform_map():
    weights = box_weights([[0, 0, 4, 4]], image_size=(8, 8), grid=(4, 4))
    expected = np.zeros((4, 4))
    expected[:2, :2] = 1.0
    assert np.array_equal(weights, expected)
    assert grounding_mass(np.ones((4, 4)), weights) == pytest.approx(0.25)


def test_box_weights_fractional_cells_union_and_axes():
    # image 8 wide x 4 high, 2 rows x 4 cols: cells are 2 px wide, 2 px high
    assert box_weights([[0, 0, 1, 2]], (8, 4), (2, 4))[0].tolist() == [0.5, 0, 0, 0]  # half a cell
    union = box_weights([[0, 0, 2, 2], [1, 0, 3, 2]], (8, 4), (2, 4))  # overlap counted once
    assert union[0].tolist() == [1.0, 0.5, 0, 0] and union[1].tolist() == [0, 0, 0, 0]
    tall = box_weights([[6, 0, 8, 4]], (8, 4), (2, 4))  # x selects columns, y selects rows
    assert tall[:, 3].tolist() == [1.0, 1.0] and tall[:, :3].sum() == 0
    # cells that do not align with pixels: 10 px over 3 columns, box [0, 5) covers 1.5 columns
    assert box_weights([[0, 0, 5, 10]], (10, 10), (1, 3))[0] == pytest.approx([1.0, 0.5, 0.0])
    # clipped to the image; a box outside it covers nothing
    assert box_weights([[-4, -4, 2, 2]], (8, 8), (4, 4))[0, 0] == 1.0
    assert box_weights([[9, 9, 12, 12]], (8, 8), (4, 4)).sum() == 0.0


def test_box_weights_rejects_no_boxes_and_empty_boxes():
    for boxes in ([], [[2, 2, 2, 5]]):
        with pytest.raises(ValueError):
            box_weights(boxes, (8, 8), (4, 4))


def test_grounding_mass_normalises_the_map():
    weights = np.array([[1.0, 0.5], [0.0, 0.0]])
    assert grounding_mass(np.array([[2.0, 2.0], [4.0, 0.0]]), weights) == pytest.approx(0.25 + 0.125)
    with pytest.raises(ValueError):
        grounding_mass(np.ones((2, 2)), np.ones((3, 3)))


def test_pointing_hit_and_miss_and_ties():
    weights = np.array([[1.0, 0.0], [0.0, 0.2]])
    assert pointing_hit(np.array([[0.1, 0.2], [0.3, 0.4]]), weights)  # peak at (1, 1), w = 0.2
    assert not pointing_hit(np.array([[0.1, 0.5], [0.3, 0.4]]), weights)
    assert pointing_hit(np.array([[0.5, 0.0], [0.0, 0.5]]), weights)  # both tied peaks in a box
    assert not pointing_hit(np.ones((2, 2)), weights)  # a flat map does not hit by chance


# --- generation --------------------------------------------------------------------------------


def test_generation_statistics_on_hand_arrays():
    logprobs = [-0.1, -0.5, -1.2]
    assert mean_logprob(logprobs) == pytest.approx(-0.6)
    assert min_logprob(logprobs) == pytest.approx(-1.2)
    assert perplexity(logprobs) == pytest.approx(math.exp(0.6))
    assert geometric_mean_prob(logprobs) == pytest.approx(math.exp(-0.6))
    assert mean_entropy(np.array([0.2, 0.4])) == pytest.approx(0.3)
    assert first_token_margin([1.5, 0.2]) == 1.5


def test_generation_statistics_of_an_empty_answer_are_none():
    for signal in (mean_logprob, min_logprob, perplexity, geometric_mean_prob, mean_entropy, first_token_margin):
        assert signal([]) is None


# --- self-consistency ----------------------------------------------------------------------------


def test_self_consistency_on_yes_yes_no():
    answers = ["Yes", "yes.", "no"]
    assert majority_answer(answers) == "yes"
    assert sc_agreement(answers) == pytest.approx(2 / 3)
    assert sc_entropy(answers) == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert sc_entropy(["A cat", "a  cat!"]) == 0.0 and sc_agreement(["A cat", "a  cat!"]) == 1.0


def test_majority_ties_go_to_the_first_seen_answer():
    assert majority_answer(["two", "Three", "three", "Two"]) == "2"  # number words are read as digits
    assert majority_answer(["red", "Blue", "blue", "Red"]) == "red"
    assert sc_agreement(["two", "three"]) == 0.5
    with pytest.raises(ValueError):
        sc_agreement([])


# --- registry and compute_signals ---------------------------------------------------------------



def full_capture(settings: SignalSettings = SignalSettings(), **changes) -> SignalInputs:
    """Every input of one sample; ``changes`` replace fields (``Traces`` or context)."""
    rng = np.random.default_rng(0)
    fields = dict(
        answer_attention_mean=rng.random((4, 6, 6)),
        answer_attention_first=rng.random((4, 6, 6)),
        vision_attention=rng.random((3, 12, 12)),
        image_size=(60, 60),
        boxes=[[0, 0, 30, 30]],
        token_logprobs=[-0.1, -0.5],
        token_entropies=[0.3, 0.2],
        token_margins=[2.0, 1.0],
        truth_margin_layers=[-1.5, -1.0, 0.5, 2.0, 3.0],  # hidden states 0..4 of 4 decoder layers
        residual_update_image=[1.0, 1.2, 1.1, 4.0],
        residual_update_last=[2.0, 2.5, 3.0, 9.0],
        margin_attention=[0.1, -0.2, 0.3, 0.0],  # with margin_mlp: blocks add 0.4, 0.1, 1.0, 0.5 to the margin
        margin_mlp=[0.3, 0.3, 0.7, 0.5],
        margin_unattributed=[0.1, 1.4, 0.5, 0.5],  # truth_margin_layers' changes: 0.5, 1.5, 1.5, 1.0
        sc_answers=["Yes", "yes.", "no"],
        target="yes",
    )
    return SignalInputs.of(settings, **{**fields, **changes})


def test_every_key_has_a_spec_and_every_spec_reads_real_capture_fields():
    assert {"h_s", "c_k_dbscan", "grounding_mass", "p_tok", "sc_agreement", "truth_margin_layers"} <= set(SIGNALS)
    for name, spec in SIGNALS.items():
        assert spec.name == name and spec.description and set(spec.needs) <= set(INPUT_FIELDS)
        assert spec.per_layer == (name.endswith("_layers")), name
    probabilities = {name for name, spec in SIGNALS.items() if spec.probability}
    assert probabilities == {"sc_agreement", "p_tok_prob"}
    orientation = {name: spec.orientation for name, spec in SIGNALS.items()}
    assert orientation["p_tok"] == 1 and orientation["mean_entropy"] == -1 and orientation["h_s"] == -1
    assert orientation["grounding_mass"] == 1 and orientation["sc_entropy"] == -1
    assert orientation["sc_agreement"] == 1
    reads = {name: spec.reference for name, spec in SIGNALS.items() if spec.reference is not None}
    attribution = {name for name in SIGNALS if any(need.startswith("margin_") for need in SIGNALS.get(name).needs)}
    assert attribution >= {"mlp_share", "margin_peak_layer", "margin_mlp_layers"}
    assert reads == {"truth_margin": "target", "truth_margin_layers": "target", "sc_majority_correct": "target",
                     **{name: "boxes" for name in SIGNALS if "boxes" in SIGNALS.get(name).needs},
                     **dict.fromkeys(attribution, "target")}
    assert SIGNALS.get("sc_agreement").calibrated_against == "sc_majority_correct"


def assert_plain_json(value: object) -> None:
    if isinstance(value, list):
        for item in value:
            assert_plain_json(item)
    else:
        assert value is None or type(value) in (bool, int, float, str), (value, type(value))


def test_full_capture_gives_every_key_as_plain_json():
    signals = compute_signals(full_capture()).values
    assert set(signals) == set(SIGNALS)  # a full capture gives every registered signal
    assert all(value is not None for value in signals.values())
    for value in signals.values():
        assert_plain_json(value)
    json.dumps(signals)
    assert len(signals["h_s_layers"]) == 4 and len(signals["delta_h_s_layers"]) == 3
    assert len(signals["vision_h_s_layers"]) == 3 and signals["truth_margin"] == 3.0
    assert signals["forcing_layer"] == 3 and signals["late_forcing"] == pytest.approx(4.0 / 1.1)
    assert signals["mlp_share"] == pytest.approx(1.8 / 2.4) and signals["margin_peak_layer"] == 2
    assert signals["sc_majority"] == "yes" and signals["sc_majority_correct"] is True
    assert signals["sc_agreement"] == pytest.approx(2 / 3)
    assert signals["p_tok_prob"] == pytest.approx(math.exp(-0.3))


def test_scalars_use_the_mean_map_of_the_second_half_of_the_layers():
    stack = np.zeros((4, 2, 2))
    stack[:2] = [[1.0, 0.0], [0.0, 0.0]]  # first half: one-hot at (0, 0)
    stack[2] = [[0.0, 1.0], [0.0, 0.0]]
    stack[3] = [[0.0, 0.0], [0.0, 5.0]]  # normalised before averaging: equal weight to layer 2
    fields = {"answer_attention_mean": stack, "image_size": (2, 2), "boxes": [[1, 0, 2, 1]]}
    signals = compute_signals(SignalInputs.of(**fields)).values
    assert signals["h_s"] == pytest.approx(math.log(2), abs=1e-6)
    assert signals["grounding_mass"] == pytest.approx(0.5)
    assert signals["grounding_mass_layers"] == [0.0, 0.0, 1.0, 0.0]
    explicit = compute_signals(SignalInputs.of(SignalSettings(aggregate_layers=(0,)), **fields)).values
    assert explicit["h_s"] == pytest.approx(0.0, abs=1e-6) and explicit["grounding_mass"] == 0.0
    with pytest.raises(UsageError, match="aggregate layers"):  # a setting, not the sample: never swallowed
        compute_signals(SignalInputs.of(SignalSettings(aggregate_layers=(4,)), **fields))


def test_inapplicable_signals_are_none_not_zero():
    empty = np.array([])  # an empty answer: no answer token
    capture = full_capture(boxes=[], vision_attention=None, sc_answers=None, token_logprobs=empty,
                           token_entropies=empty, token_margins=empty)
    signals = compute_signals(capture).values
    for name in ("grounding_mass", "pointing_hit", "grounding_mass_layers", "pointing_hit_layers",
                 "vision_h_s", "vision_grounding_mass", "vision_c_k_dbscan", "vision_h_s_layers",
                 "sc_agreement", "sc_entropy", "sc_majority", "sc_majority_correct", "sc_answers",
                 "p_tok", "p_tok_prob", "min_logprob", "perplexity", "mean_entropy", "first_token_margin"):  # fmt: skip
        assert signals[name] is None, name
    assert signals["h_s"] is not None and signals["truth_margin"] is not None
    assert set(compute_signals(SignalInputs()).values.values()) == {None}
    single_layer = compute_signals(SignalInputs.of(answer_attention_mean=np.ones((1, 3, 3)))).values
    assert single_layer["early_lock_layer"] is None and single_layer["late_diffusion"] is None
    assert single_layer["h_s"] == pytest.approx(math.log(9), abs=1e-6)


def test_a_signal_that_fails_on_a_sample_is_null_with_its_reason_and_the_rest_are_computed():
    computed = compute_signals(full_capture(
        answer_attention_mean=np.zeros((4, 6, 6)),  # a degenerate, zero-mass map
        token_logprobs=np.array([np.nan, -0.5]),  # NaN logits
    ))
    assert computed.values["h_s"] is None and "zero total mass" in computed.errors["h_s"]
    assert computed.values["grounding_mass"] is None and "grounding_mass" in computed.errors
    assert computed.values["p_tok"] is None and "finite" in computed.errors["p_tok"]
    assert computed.values["vision_h_s"] is not None and computed.values["sc_agreement"] is not None
    assert not {"vision_h_s", "sc_agreement", "mean_entropy"} & set(computed.errors)
    assert compute_signals(full_capture()).errors == {}


def test_traces_check_shapes_where_they_are_built_and_name_the_field():
    with pytest.raises(TraceError, match=r"answer_attention_mean must be a numeric \[decoder layers, rows, cols\]"):
        Traces(answer_attention_mean=np.ones((6, 6)))
    with pytest.raises(TraceError, match="token_logprobs"):
        Traces(token_logprobs=np.ones((2, 2)))
    with pytest.raises(TraceError, match="differ in length"):
        Traces(token_logprobs=np.ones(2), token_entropies=np.ones(3))
    with pytest.raises(TraceError, match="L \\+ 1 hidden states"):  # 4 decoder layers have 5 hidden states
        Traces(answer_attention_mean=np.ones((4, 2, 2)), hidden_last_prompt=np.ones((4, 8), dtype=np.float16))
    with pytest.raises(TraceError, match="differ in length"):
        Traces(truth_margin_layers=np.ones(5), hidden_last_prompt=np.ones((4, 8), dtype=np.float16))
    Traces(answer_attention_mean=np.ones((4, 2, 2)), hidden_last_prompt=np.ones((5, 8), dtype=np.float16))
    with pytest.raises(TraceError, match="sc_answers"):
        Traces(sc_answers="yes")
    with pytest.raises(TypeError):  # a misspelt field is an error, never a silently missing signal
        Traces(answer_atention_mean=np.ones((4, 2, 2)))
    kept = Traces(hidden_last_prompt=np.ones((3, 8), dtype=np.float16))
    assert kept.hidden_last_prompt.dtype == np.float16 and not Traces().captured and kept.captured


def test_signals_package_never_imports_torch():
    for path in Path(vrp_bench.signals.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            assert not any(m.split(".")[0] == "torch" for m in modules), path.name


def test_shared_quantities_are_computed_once_per_sample(monkeypatch):
    import vrp_bench.signals.inputs as inputs_module

    calls = {"mean_map": 0, "entropy": 0}
    mean_map, entropy = inputs_module._mean_map, inputs_module.spatial_entropy

    def counted_mean_map(*args):
        calls["mean_map"] += 1
        return mean_map(*args)

    def counted_entropy(*args):
        calls["entropy"] += 1
        return entropy(*args)

    monkeypatch.setattr(inputs_module, "_mean_map", counted_mean_map)
    monkeypatch.setattr(inputs_module, "spatial_entropy", counted_entropy)
    signals = compute_signals(full_capture()).values
    assert signals["h_s"] is not None and signals["early_lock_layer"] is not None
    assert calls == {"mean_map": 2, "entropy": 4}  # decoder + vision map once; H_s of the 4 decoder layers once
