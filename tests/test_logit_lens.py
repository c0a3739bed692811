"""The logit lens's component attribution (``models.logit_lens``): per decoder layer, the attention and MLP blocks'
contributions plus the unattributed rest sum back to the change of the truth margin between hidden states (computed
by the independent hidden-state capture), the blocks' contributions equal a hand-written direct logit attribution,
and a block that writes nothing contributes nothing."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from test_capture import batch, tiny  # noqa: F401  (the module-scoped fixture of every family's random tiny model)
from test_residual_stream import capture
from vrp_bench.models.instrumented import instrumented_generate
from vrp_bench.models.logit_lens import margin_attribution, rms_epsilon, target_token_ids

SUM_TOLERANCE = 1e-4
"""attention + mlp + unattributed vs the lens margin's change, absolute (float32 arithmetic on margins of order 1-10)."""


@contextlib.contextmanager
def random_final_gain(model, adapter, seed: int = 0):
    """The final norm's gain drawn at random (a fresh tiny model's is 1, which would hide a missing gain)."""
    weight = adapter.final_norm(model).weight
    kept = weight.detach().clone()
    with torch.no_grad():
        weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed)))
    try:
        yield
    finally:
        with torch.no_grad():
            weight.copy_(kept)


def traced(model, processor, adapter, hooks=()):
    docs, inputs = batch(model, processor, adapter)
    kwargs = {"max_new_tokens": 2, "do_sample": False, "pad_token_id": processor.tokenizer.pad_token_id}
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        _, traces = instrumented_generate(model, adapter, processor, inputs, kwargs, [d["answer"] for d in docs])
    finally:
        for handle in handles:
            handle.remove()
    return docs, inputs, traces


def test_the_decomposition_sums_back_to_the_lens_margin_change(tiny):  # noqa: F811
    family, model, processor, adapter = tiny
    with random_final_gain(model, adapter):
        _, _, traces = traced(model, processor, adapter)
    n_layers = len(adapter.decoder_layers(model))
    for trace in traces:
        total = trace.margin_attention + trace.margin_mlp + trace.margin_unattributed
        assert total.shape == (n_layers,)
        np.testing.assert_allclose(total, np.diff(trace.truth_margin_layers), rtol=0, atol=SUM_TOLERANCE)
        assert np.abs(trace.margin_attention).max() > 1e-3 and np.abs(trace.margin_mlp).max() > 1e-3


def test_block_contributions_equal_a_hand_written_direct_logit_attribution(tiny):  # noqa: F811
    """d . (g * write) / r(h_l+1), with g read off the norm as N(1) sqrt(1 + eps) and the tokens from h_l+1's lens."""
    family, model, processor, adapter = tiny
    norm, head = adapter.final_norm(model), adapter.lm_head(model)
    with random_final_gain(model, adapter, seed=1):
        docs, inputs, traces = traced(model, processor, adapter)
        with torch.inference_mode(), capture(model, adapter) as stream:
            model(**inputs)
        h_in, h_mid, h_out = stream.stacked_last()
        eps = rms_epsilon(norm)
        gain = norm(torch.ones(h_in.shape[-1])) * np.sqrt(1 + eps)
        for b, (doc, trace) in enumerate(zip(docs, traces)):
            targets = target_token_ids(processor.tokenizer, doc["answer"])
            with torch.inference_mode():
                logits = head(norm(h_out[b]))
            others = logits.clone()
            others[:, targets] = float("-inf")
            target = torch.tensor(targets)[logits[:, targets].argmax(-1)]
            direction = head.weight[target] - head.weight[others.argmax(-1)]
            scale = torch.sqrt(h_out[b].pow(2).mean(-1) + eps)
            for write, field in ((h_mid[b] - h_in[b], "margin_attention"), (h_out[b] - h_mid[b], "margin_mlp")):
                expected = (direction * gain * write).sum(-1) / scale
                np.testing.assert_allclose(getattr(trace, field), expected.detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("silenced", ["attention", "mlp"])
def test_a_block_that_writes_nothing_contributes_nothing(tiny, silenced):  # noqa: F811
    family, model, processor, adapter = tiny
    module = adapter.attention_module if silenced == "attention" else adapter.mlp_module

    def zero(module, args, output):
        if isinstance(output, tuple):
            return (torch.zeros_like(output[0]), *output[1:])
        return torch.zeros_like(output)

    hooks = [(module(layer), zero) for layer in adapter.decoder_layers(model)]
    with random_final_gain(model, adapter, seed=2):
        _, _, traces = traced(model, processor, adapter, hooks)
    other = "margin_mlp" if silenced == "attention" else "margin_attention"
    for trace in traces:
        assert np.all(getattr(trace, f"margin_{silenced}") == 0)
        np.testing.assert_allclose(getattr(trace, other) + trace.margin_unattributed, np.diff(trace.truth_margin_layers),
                                   rtol=0, atol=SUM_TOLERANCE)


def test_only_rms_norms_are_attributed():
    assert rms_epsilon(nn.LayerNorm(4)) is None
    assert rms_epsilon(nn.Identity()) is None
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    assert rms_epsilon(LlamaRMSNorm(4, eps=1e-5)) == 1e-5
    assert rms_epsilon(GemmaRMSNorm(4, eps=1e-6)) == 1e-6

    class Adapter:
        def final_norm(self, model):
            return nn.LayerNorm(4)

        def lm_head(self, model):
            return nn.Linear(4, 7, bias=False)

    h = torch.zeros(2, 4)
    assert margin_attribution(h, h, h, Adapter(), None, [1]) is None
