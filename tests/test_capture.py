"""Captures on random tiny models of every family: exact rows, unchanged answers, removable hooks."""

from __future__ import annotations

import pytest
import torch

from vrp_bench.capture import AttentionCapture, LastPositionCapture
from vrp_bench.datasets.vrp_shapes import generate_docs
from vrp_bench.models.families import FAMILIES
from vrp_bench.models.instrumented import attention_configs, attention_sites, instrumented_generate
from vrp_bench.models.self_consistency import shared_prefill_samples
from vrp_bench.zoo.build import build_tiny

GREEDY = {"max_new_tokens": 3, "do_sample": False}


@pytest.fixture(scope="module", params=list(FAMILIES))
def tiny(request):
    family = request.param
    model, processor = build_tiny(family, seed=2)
    model.eval()
    processor.tokenizer.padding_side = "left"
    return family, model, processor, FAMILIES[family](model.config)


def batch(model, processor, adapter, n: int = 4):
    docs = (generate_docs("color", n=n, seed=5) + generate_docs("spatial", n=n, seed=5))[:n]
    prompts = [adapter.build_prompt(processor, d["question"], 1) for d in docs]
    inputs = processor(images=[[d["image"]] for d in docs], text=prompts, padding=True, return_tensors="pt")
    inputs.pop("labels", None)
    return docs, inputs


def test_answers_identical_with_capture_on_and_off(tiny):
    family, model, processor, adapter = tiny
    docs, inputs = batch(model, processor, adapter, n=6)
    kwargs = {**GREEDY, "pad_token_id": processor.tokenizer.pad_token_id}
    with torch.inference_mode():
        plain = model.generate(**inputs, **kwargs)[:, inputs["input_ids"].shape[1]:]
    captured, traces = instrumented_generate(model, adapter, processor, inputs, kwargs, [d["answer"] for d in docs])
    assert torch.equal(plain, captured)
    n_layers = len(adapter.decoder_layers(model))
    for b, trace in enumerate(traces):
        rows, cols = adapter.patch_grid(inputs, b)
        assert trace.answer_attention_mean.shape == trace.answer_attention_first.shape == (n_layers, rows, cols)
        assert trace.vision_attention.shape[0] == len(adapter.vision_blocks(model))
        assert len(trace.truth_margin_layers) == n_layers
        assert trace.hidden_last_prompt.shape == (n_layers, model.config.text_config.hidden_size)
        assert len(trace.token_logprobs) == len(trace.token_entropies) == len(trace.token_margins) > 0


def test_decoder_rows_equal_eager_attention_probabilities(tiny):
    family, model, processor, adapter = tiny
    docs, inputs = batch(model, processor, adapter)
    sites = attention_sites(model, adapter)
    eager_configs = attention_configs(model, sites)
    originals = [c._attn_implementation for c in eager_configs]
    try:
        for config in eager_configs:
            config._attn_implementation = "eager"
        with torch.inference_mode():
            reference = model(**inputs, output_attentions=True).attentions
    finally:
        for config, name in zip(eager_configs, originals):
            config._attn_implementation = name
    capture = AttentionCapture(sites, eager_configs)
    with torch.inference_mode(), capture:
        model(**inputs)
    for module, site in sites.items():
        if site.kind == "decoder":
            expected = reference[site.layer][:, :, -1].float().mean(dim=1)
            torch.testing.assert_close(capture.records[site][0], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["llava", "paligemma"])
def test_vision_maps_equal_eager_attention(family):
    """LLaVA's CLIP: the CLS query's row; PaliGemma's SigLIP (no CLS): column sums over all queries."""
    model, processor = build_tiny(family, seed=3)
    model.eval()
    adapter = FAMILIES[family](model.config)
    image = generate_docs("count", n=2, seed=1)[0]["image"]
    pixel_values = processor.image_processor(image, return_tensors="pt")["pixel_values"]
    tower = model.model.vision_tower
    sites = {m: s for m, s in attention_sites(model, adapter).items() if s.kind == "vision"}
    tower.config._attn_implementation = "eager"
    with torch.inference_mode():
        reference = tower(pixel_values, output_attentions=True).attentions
    tower.config._attn_implementation = "sdpa"
    capture = AttentionCapture(sites, [tower.config])
    with torch.inference_mode(), capture:
        tower(pixel_values)
    for site, calls in capture.records.items():
        probabilities = reference[site.layer].float().mean(dim=1)  # [batch, queries, keys], head-averaged
        expected = probabilities[:, 0] if adapter.vision_has_cls else probabilities.sum(dim=1)
        torch.testing.assert_close(calls[0], expected, rtol=1e-4, atol=1e-5)


def test_captures_are_removed_even_after_an_error(tiny):
    family, model, processor, adapter = tiny
    sites = attention_sites(model, adapter)
    configs = attention_configs(model, sites)
    before = [c._attn_implementation for c in configs]
    layers = adapter.decoder_layers(model)
    hooks_before = [dict(layer._forward_hooks) for layer in layers]
    with pytest.raises(RuntimeError, match="boom"):
        with AttentionCapture(sites, configs), LastPositionCapture(layers):
            raise RuntimeError("boom")
    assert [c._attn_implementation for c in configs] == before
    assert [dict(layer._forward_hooks) for layer in layers] == hooks_before


def test_shared_prefill_draws_the_samples_of_num_return_sequences(tiny):
    family, model, processor, adapter = tiny
    docs, inputs = batch(model, processor, adapter, n=1)
    kwargs = {"max_new_tokens": 3, "do_sample": True, "temperature": 1.3, "top_p": 0.95, "top_k": 0,
              "pad_token_id": processor.tokenizer.pad_token_id}
    with torch.inference_mode():
        torch.manual_seed(11)
        reference = model.generate(**inputs, **kwargs, num_return_sequences=5)[:, inputs["input_ids"].shape[1]:]
    shared = shared_prefill_samples(model, inputs, 5, kwargs, seed=11)
    assert torch.equal(shared, reference)
    assert len({tuple(row) for row in shared.tolist()}) > 1  # really sampled
