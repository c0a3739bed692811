"""Intervention hooks on random tiny models: p = 0 is the identity, they bite, and they always come off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vrp_bench.capture import ImageTokenMask, UnitAblation, UnitStatistics, choose_units
from vrp_bench.datasets.vrp_shapes import generate_docs
from vrp_bench.models.families import FAMILIES
from vrp_bench.zoo.build import build_tiny


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def tiny(request):
    model, processor = build_tiny(request.param, seed=4)
    model.eval()
    adapter = FAMILIES[request.param](model.config)
    docs = generate_docs("color", n=3, seed=2)
    processor.tokenizer.padding_side = "left"
    inputs = processor(images=[[d["image"]] for d in docs], padding=True, return_tensors="pt",
                       text=[adapter.build_prompt(processor, d["question"], 1) for d in docs])
    inputs.pop("labels", None)
    return model, adapter, inputs


def logits(model, inputs) -> torch.Tensor:
    with torch.inference_mode():
        return model(**inputs).logits[:, -1]


def test_choose_units_is_seeded_or_ranked() -> None:
    assert len(choose_units(100, 0.25, seed=1)) == 25
    assert np.array_equal(choose_units(100, 0.25, seed=1), choose_units(100, 0.25, seed=1))
    assert not np.array_equal(choose_units(100, 0.25, seed=1), choose_units(100, 0.25, seed=2))
    assert choose_units(4, 0.5, seed=0, ranking=np.abs([0.1, -3.0, 2.0, 0.0])).tolist() == [1, 2]
    assert len(choose_units(10, 0.0, seed=0)) == 0 and len(choose_units(10, 1.0, seed=0)) == 10
    with pytest.raises(ValueError):
        choose_units(10, 1.5, seed=0)


@pytest.mark.parametrize("method", ["zero", "mean", "noise"])
def test_residual_ablation_bites_and_p0_is_identity(tiny, method) -> None:
    model, adapter, inputs = tiny
    layer = adapter.decoder_layers(model)[1]
    hidden = model.config.text_config.hidden_size
    stats = {"mean": torch.full((hidden,), 3.0), "scale": torch.ones(hidden)}
    baseline = logits(model, inputs)
    with UnitAblation(layer, choose_units(hidden, 0.0, seed=0), method, **stats):
        assert torch.equal(logits(model, inputs), baseline)
    with UnitAblation(layer, choose_units(hidden, 1.0, seed=0), method, **stats):
        assert not torch.allclose(logits(model, inputs), baseline)
    assert torch.equal(logits(model, inputs), baseline)  # removed on exit


def test_mlp_neuron_ablation_and_removal_after_an_error(tiny) -> None:
    model, adapter, inputs = tiny
    down = adapter.mlp_down_projection(adapter.decoder_layers(model)[0])
    baseline = logits(model, inputs)
    with pytest.raises(RuntimeError, match="stop"):
        with UnitAblation(down, choose_units(down.in_features, 1.0, seed=0), "zero", where="input"):
            assert not torch.allclose(logits(model, inputs), baseline)
            raise RuntimeError("stop")
    assert torch.equal(logits(model, inputs), baseline)
    assert not down._forward_pre_hooks


def test_noise_is_seeded(tiny) -> None:
    model, adapter, inputs = tiny
    layer = adapter.decoder_layers(model)[1]
    hidden = model.config.text_config.hidden_size
    units = choose_units(hidden, 0.5, seed=3)
    runs = []
    for seed in (7, 7, 8):
        with UnitAblation(layer, units, "noise", mean=torch.zeros(hidden), scale=torch.ones(hidden), seed=seed):
            runs.append(logits(model, inputs))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_unit_statistics_are_the_mean_and_std_over_every_position(tiny) -> None:
    model, adapter, inputs = tiny
    layer = adapter.decoder_layers(model)[1]
    kept = []
    handle = layer.register_forward_hook(lambda module, args, output: kept.append(output[0] if isinstance(output, tuple) else output))
    with UnitStatistics(layer) as statistics:
        logits(model, inputs)
    handle.remove()
    flat = kept[0].reshape(-1, kept[0].shape[-1]).double()
    assert statistics.count == flat.shape[0]
    assert torch.allclose(statistics.mean, flat.mean(0).float(), atol=1e-5)
    assert torch.allclose(statistics.std, flat.std(0, unbiased=False).float(), atol=1e-4)
    assert not layer._forward_hooks


def test_image_token_mask_blanks_chosen_tokens_and_always_comes_off(tiny) -> None:
    model, adapter, inputs = tiny
    first = adapter.decoder_layers(model)[0]
    spans = adapter.image_token_span(inputs["input_ids"])
    length = inputs["input_ids"].shape[1]
    baseline = logits(model, inputs)
    with ImageTokenMask(first, [[] for _ in spans], length) as mask:
        assert torch.equal(logits(model, inputs), baseline)
    assert mask.applied == 1
    with ImageTokenMask(first, [span[: len(span) // 2].tolist() for span in spans], length):
        masked = logits(model, inputs)
    assert not torch.allclose(masked, baseline)
    assert torch.equal(logits(model, inputs), baseline)
    with pytest.raises(KeyboardInterrupt):
        with ImageTokenMask(first, [span.tolist() for span in spans], length):
            raise KeyboardInterrupt
    assert not first._forward_pre_hooks
    assert torch.equal(logits(model, inputs), baseline)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_image_token_mask_hits_exactly_the_chosen_tokens_of_a_ragged_left_padded_batch(family) -> None:
    model, processor = build_tiny(family, seed=5)
    model.eval()
    adapter = FAMILIES[family](model.config)
    processor.tokenizer.padding_side = "left"
    docs = generate_docs("color", n=1, seed=1) + generate_docs("spatial", n=2, seed=1)  # prompts of two lengths
    inputs = processor(images=[[d["image"]] for d in docs], padding=True, return_tensors="pt",
                       text=[adapter.build_prompt(processor, d["question"], 1) for d in docs])
    inputs.pop("labels", None)
    assert (inputs["attention_mask"] == 0).any()  # really padded
    spans = adapter.image_token_span(inputs["input_ids"])
    chosen = [span[::3].tolist() for span in spans]
    first = adapter.decoder_layers(model)[0]
    seen = []

    def record(module, args, kwargs):
        seen.append((args[0] if args else kwargs["hidden_states"]).clone())

    def layer_input(mask: ImageTokenMask | None) -> torch.Tensor:
        seen.clear()
        with (mask if mask is not None else torch.no_grad()):
            handle = first.register_forward_pre_hook(record, with_kwargs=True)  # runs after the mask's hook
            try:
                with torch.inference_mode():
                    model.generate(**inputs, max_new_tokens=3, do_sample=False)
            finally:
                handle.remove()
        return seen[0]

    plain = layer_input(None)
    mask = ImageTokenMask(first, chosen, inputs["input_ids"].shape[1])
    masked = layer_input(mask)
    assert mask.applied == 1  # the prefill only; later steps read the blanked tokens from the cache
    for row, positions in enumerate(chosen):
        keep = torch.ones(plain.shape[1], dtype=torch.bool)
        keep[positions] = False
        assert torch.all(masked[row, positions] == 0)
        assert torch.equal(masked[row, keep], plain[row, keep])  # padding and every other token untouched
