"""Captures on random tiny models of every family (and the trained checkpoints at large image sizes): exact rows,
unchanged answers, removable hooks."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import pytest
import torch
from torch import nn
from transformers import AutoModelForImageTextToText
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from vrp_bench.capture import AttentionCapture, LastPositionCapture, Site
from vrp_bench.capture import attention as attention_module
from vrp_bench.datasets.vrp_shapes import generate_docs
from vrp_bench.models.families import FAMILIES
from vrp_bench.models.instrumented import attention_configs, attention_sites, instrumented_generate
from vrp_bench.models.self_consistency import shared_prefill_samples
from vrp_bench.signals.structural import spatial_entropy
from vrp_bench.zoo import CHECKPOINTS
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
        assert len(trace.truth_margin_layers) == n_layers + 1  # hidden states 0..L, numbered like HF's
        assert trace.hidden_last_prompt.shape == (n_layers + 1, model.config.text_config.hidden_size)
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


REFERENCE = "vrp_test_eager_column_sums"
REFERENCE_SUMS: list[tuple[nn.Module, torch.Tensor]] = []


def eager_column_sums(module, query, key, value, attention_mask, **kwargs):
    """Eager attention that also keeps, per call, its probabilities' column sums over all queries, head-averaged."""
    output, weights = sys.modules[type(module).__module__].eager_attention_forward(
        module, query, key, value, attention_mask, **kwargs)
    REFERENCE_SUMS.append((module, weights.float().mean(dim=1).sum(dim=1)))
    return output, weights


if REFERENCE not in ALL_ATTENTION_FUNCTIONS:
    AttentionInterface.register(REFERENCE, eager_column_sums)
    AttentionMaskInterface.register(REFERENCE, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


@contextmanager
def attention_implementation(config, name: str):
    original = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = original


LARGE_SIDES = (24, 32)  # 576 and 1,024 patches per image, past any 256-query subset


@pytest.mark.parametrize("family", ["paligemma", "qwen2_vl", "qwen2_5_vl"])
def test_vision_column_sums_are_exact_at_large_sizes(family, monkeypatch):
    """No-CLS encoders (the trained tiny checkpoints) at 576 and 1,024 patches: the captured map is eager's column
    sums over ALL queries (head-averaged), call by call (Qwen: one call per image, and per window in Qwen2.5-VL's
    windowed block), and the H_s of each image's map matches. Reference and capture in the same pass (the
    capture wraps the recording eager attention), so both see the same queries and keys; chunks of 100 query rows
    at 1,024 keys. An evenly strided subset of 256 queries fails this for every family (column sums off by up to
    29; H_s up to 2.7% low on Qwen2-VL)."""
    monkeypatch.setattr(attention_module, "CPU_SCORE_ELEMENTS", 100 * 1024)
    path = str(CHECKPOINTS / family)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    adapter = FAMILIES[family]
    patch = model.config.vision_config.patch_size
    images = [generate_docs("count", n=1, seed=1, image_size=side * patch)[0]["image"] for side in LARGE_SIDES]
    if family == "paligemma":  # SigLIP, trained at 64 px: positions interpolated to 24 x 24 and 32 x 32 patches
        processor = adapter.load_processor(path)
        tower = model.model.vision_tower
        runs = [((processor.image_processor(image, size={"height": image.height, "width": image.width},
                                            return_tensors="pt")["pixel_values"],),
                 {"interpolate_pos_encoding": True}, [side * side]) for image, side in zip(images, LARGE_SIDES)]
    else:  # both images in one pass (cu_seqlens)
        processor = adapter.load_processor(path, max_pixels=(max(LARGE_SIDES) * patch) ** 2)
        tower = model.model.visual
        encoded = processor.image_processor(images, return_tensors="pt")
        assert encoded["image_grid_thw"].tolist() == [[1, side, side] for side in LARGE_SIDES]
        runs = [((encoded["pixel_values"],), {"grid_thw": encoded["image_grid_thw"]}, [n * n for n in LARGE_SIDES])]
    sites = {m: s for m, s in attention_sites(model, adapter(model.config)).items() if s.kind == "vision"}
    assert sites and not any(site.cls_row for site in sites.values())
    for args, kwargs, patches in runs:
        REFERENCE_SUMS.clear()
        with torch.inference_mode(), attention_implementation(tower.config, REFERENCE):
            with AttentionCapture(sites, [tower.config]) as capture:
                tower(*args, **kwargs)
        for module, site in sites.items():
            expected = [sums for m, sums in REFERENCE_SUMS if m is module]
            captured = capture.records[site]
            assert len(captured) == len(expected) >= len(patches)
            for got, want in zip(captured, expected):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            maps = [torch.cat(calls, dim=-1)[0].split(patches) for calls in (captured, expected)]
            for got, want in zip(*maps):
                assert spatial_entropy(got.numpy()) == pytest.approx(spatial_entropy(want.numpy()), rel=1e-2)


def test_column_sums_keep_packed_segments_and_masks_across_chunks(monkeypatch):
    """Chunks of 7 query rows x 1 head (boundaries inside segments): a packed call (flash's cu_seq_lens, three
    images in one sequence) gives each image's own column sums, as block-diagonal masks (bool, additive, per head)
    and separate calls do; unmasked, the chunked sums equal softmax column sums of the whole map."""
    monkeypatch.setattr(attention_module, "CPU_SCORE_ELEMENTS", 7 * 60)
    torch.manual_seed(0)
    query, key = torch.randn(1, 4, 60, 16), torch.randn(1, 4, 60, 16)
    bounds = [0, 13, 41, 60]
    module = nn.Identity()
    site = Site("vision", 0)

    def column_sums(q, k, mask=None, **kwargs):
        capture = AttentionCapture({module: site}, [])
        capture.record(module, q, k, mask, kwargs)
        return capture.records[site][0]

    separate = torch.cat([column_sums(query[..., a:b, :], key[..., a:b, :]) for a, b in zip(bounds, bounds[1:])], -1)
    segment = torch.bucketize(torch.arange(60), torch.tensor(bounds[1:]), right=True)
    block_diagonal = (segment[:, None] == segment[None, :])[None, None]
    cu = torch.tensor(bounds, dtype=torch.int32)
    packed = column_sums(query, key, cu_seq_lens_q=cu, cu_seq_lens_k=cu)
    additive = torch.zeros(1, 1, 60, 60).masked_fill(~block_diagonal, float("-inf"))
    for got in (packed, column_sums(query, key, block_diagonal), column_sums(query, key, additive),
                column_sums(query, key, block_diagonal.expand(1, 4, 60, 60))):
        torch.testing.assert_close(got, separate, rtol=1e-6, atol=1e-6)
    reference = torch.softmax(query @ key.transpose(-1, -2) / 4, dim=-1).mean(dim=1).sum(dim=1)
    torch.testing.assert_close(column_sums(query, key), reference, rtol=1e-6, atol=1e-6)
    for a, b in zip(bounds, bounds[1:]):  # every image's patches get its own queries' total mass
        assert float(packed[0, a:b].sum()) == pytest.approx(b - a, rel=1e-5)


def test_captures_are_removed_even_after_an_error(tiny):
    family, model, processor, adapter = tiny
    sites = attention_sites(model, adapter)
    configs = attention_configs(model, sites)
    before = [c._attn_implementation for c in configs]
    modules = [module for module, _ in adapter.hidden_state_sites(model)]

    def hooks() -> list[tuple[dict, dict]]:
        return [(dict(module._forward_hooks), dict(module._forward_pre_hooks)) for module in modules]

    hooks_before = hooks()
    with pytest.raises(RuntimeError, match="boom"):
        with AttentionCapture(sites, configs), LastPositionCapture(adapter.hidden_state_sites(model)):
            assert hooks() != hooks_before
            raise RuntimeError("boom")
    assert [c._attn_implementation for c in configs] == before
    assert hooks() == hooks_before


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
