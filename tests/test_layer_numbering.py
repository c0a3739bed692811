"""Per-layer outputs are numbered like Hugging Face's: hidden states like ``output_hidden_states`` (0 = the
embedding output, L = after the final norm), attention like ``output_attentions``; ablation layer i is hidden
state i."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_capture import batch, tiny  # noqa: F401  (the module-scoped fixture of every family's random tiny model)
from vrp_bench.capture import UnitAblation
from vrp_bench.interventions.conditions import resolve_layers
from vrp_bench.models.instrumented import instrumented_generate

GREEDY = {"max_new_tokens": 2, "do_sample": False}


def test_hidden_states_are_numbered_like_output_hidden_states(tiny):  # noqa: F811
    family, model, processor, adapter = tiny
    docs, inputs = batch(model, processor, adapter)
    with torch.inference_mode():
        reference = model(**inputs, output_hidden_states=True).hidden_states
    kwargs = {**GREEDY, "pad_token_id": processor.tokenizer.pad_token_id}
    _, traces = instrumented_generate(model, adapter, processor, inputs, kwargs, [d["answer"] for d in docs])
    n_layers = len(adapter.decoder_layers(model))
    assert len(reference) == n_layers + 1
    for b, trace in enumerate(traces):
        expected = torch.stack([state[b, -1] for state in reference]).float().numpy()
        assert trace.hidden_last_prompt.shape == expected.shape
        np.testing.assert_allclose(trace.hidden_last_prompt.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
        assert len(trace.truth_margin_layers) == n_layers + 1
        assert trace.answer_attention_mean.shape[0] == n_layers  # attention: one map per decoder layer, as HF's


def test_the_last_truth_margin_is_the_models_own_logits(tiny):  # noqa: F811
    """The logit lens of hidden state L (already normed) is the model's output: the margin of the first answer
    step's logits (a second final norm would change it)."""
    family, model, processor, adapter = tiny
    docs, inputs = batch(model, processor, adapter)
    kwargs = {**GREEDY, "pad_token_id": processor.tokenizer.pad_token_id}
    _, traces = instrumented_generate(model, adapter, processor, inputs, kwargs, [d["answer"] for d in docs])
    with torch.inference_mode():
        logits = model(**inputs).logits[:, -1].float()
    for b, (doc, trace) in enumerate(zip(docs, traces)):
        target = processor.tokenizer(doc["answer"], add_special_tokens=False)["input_ids"][0]
        others = logits[b].clone()
        others[target] = float("-inf")
        assert trace.truth_margin_layers[-1] == pytest.approx(float(logits[b, target] - others.max()), abs=1e-3)


def test_ablating_layer_i_changes_hidden_state_i_and_nothing_before_it(tiny):  # noqa: F811
    family, model, processor, adapter = tiny
    from vrp_bench.models.hf_vlm import HFVLM

    class Wrapped(HFVLM):  # the backend's unit_site, on the random tiny model
        adapter_class = type(adapter)

        def __init__(self) -> None:
            self.model, self.adapter = model, adapter

    backend = Wrapped()
    docs, inputs = batch(model, processor, adapter)
    n_layers = len(adapter.decoder_layers(model))
    kwargs = {**GREEDY, "pad_token_id": processor.tokenizer.pad_token_id}

    def hidden_states() -> np.ndarray:  # [batch, L + 1, hidden] at the last prompt position, by our capture
        _, traces = instrumented_generate(model, adapter, processor, inputs, kwargs, [None] * len(docs))
        return np.stack([trace.hidden_last_prompt for trace in traces])

    clean = hidden_states()
    for layer in resolve_layers("all", n_layers, None, "residual"):
        site = backend.unit_site(layer, "residual")
        with UnitAblation(site.module, [0, 1, 2], "zero", site.where):
            ablated = hidden_states()
        np.testing.assert_array_equal(ablated[:, :layer], clean[:, :layer])
        assert np.all(ablated[:, layer, :3] == 0) and not np.all(clean[:, layer, :3] == 0)
        np.testing.assert_array_equal(ablated[:, layer, 3:], clean[:, layer, 3:])
    assert resolve_layers("all", n_layers, None, "mlp") == list(range(1, n_layers + 1))
    with pytest.raises(ValueError, match="no MLP"):
        backend.unit_site(0, "mlp")


def test_a_report_with_the_old_numbering_is_refused_with_the_reason(cli, tmp_path):
    old = tmp_path / "old_results.json"
    old.write_text('{"schema": "vrp-report/2", "results": {}}')
    for command in ("validate", "show"):
        code, out, err = cli(command, old)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "earlier vrp-bench" in err and "embedding output" in err and "vrp-report/3" in err
