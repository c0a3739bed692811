"""The transformers backend and the family adapters, on freshly built random tiny models."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image
from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

from vrp_bench.api.errors import UsageError
from vrp_bench.api.instance import GenerationSettings, Request
from vrp_bench.api.model import MODELS
from vrp_bench.datasets.vrp_shapes import QUESTION_SETS, generate_docs
from vrp_bench.models.families import FAMILIES
from vrp_bench.models.hf_vlm import fingerprint
from vrp_bench.zoo.build import build_tiny

QWEN = ("qwen2_vl", "qwen2_5_vl")
GREEDY = GenerationSettings(until=("\n",), max_new_tokens=4)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_dir(request, tmp_path_factory):
    """(family, directory) of a randomly initialised tiny model saved with save_pretrained."""
    family = request.param
    model, processor = build_tiny(family, seed=1)
    directory = tmp_path_factory.mktemp(family)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return family, directory


@pytest.fixture(scope="module")
def vlm(family_dir):
    family, directory = family_dir
    return MODELS.get(family).from_args({"pretrained": str(directory)})


def request_for(image: Image.Image, question: str, doc_id: int = 0, generation: GenerationSettings = GREEDY) -> Request:
    return Request(task="t", doc_id=doc_id, images=[image], prompt=question, generation=generation, seed=doc_id)


def mixed_docs(n: int) -> list[dict]:
    """Docs of every question set, interleaved (prompts of different lengths)."""
    per_set = [generate_docs(name, n=n, seed=3) for name in QUESTION_SETS]
    return [doc for group in zip(*per_set) for doc in group][:n]


def test_image_token_count_equals_patch_grid_cells(vlm):
    sizes = [(64, 64), (128, 128)] + ([(128, 64)] if vlm.adapter.family in QWEN else [])
    requests = [request_for(Image.new("RGB", size, "white"), "is there a red circle ?") for size in sizes]
    inputs = vlm.encode(requests)
    spans = vlm.adapter.image_token_span(inputs["input_ids"])
    grids = [vlm.adapter.patch_grid(inputs, i) for i in range(len(requests))]
    for span, (rows, cols) in zip(spans, grids):
        assert len(span) == rows * cols > 0
        assert torch.equal(span, torch.arange(span[0], span[0] + len(span)))  # one contiguous block
    if vlm.adapter.family in QWEN:
        # resized to about 128^2 pixels, sides multiples of patch 8 * merge 2: (height, width); 128x64 is wide
        assert grids == [(8, 8), (8, 8), (6, 12)]
    else:
        assert grids == [(8, 8), (8, 8)]  # images are resized to 64 px, patch 8


def test_max_pixels_caps_qwen_images_below_the_checkpoints_minimum(family_dir):
    """The tiny Qwen processors resize every image to 128^2 pixels (min = max); max_pixels = 64^2 still caps them."""
    family, directory = family_dir
    if family not in QWEN:
        pytest.skip("max_pixels is Qwen's")
    vlm = MODELS.get(family).from_args({"pretrained": str(directory), "max_pixels": 64 * 64})
    inputs = vlm.encode([request_for(Image.new("RGB", (64, 64), "white"), "is there a red circle ?")])
    assert vlm.adapter.patch_grid(inputs, 0) == (4, 4)  # 8 x 8 patches of 8 px, 2 x 2 merge


def test_vision_grid_maps_raster_cells_to_sequence_positions(vlm):
    sizes = [(64, 64), (128, 64)]
    inputs = vlm.encode([request_for(Image.new("RGB", size, "white"), "what color is the circle ?") for size in sizes])
    config = vlm.model.config.vision_config
    for sample in range(len(sizes)):
        grid = vlm.adapter.vision_grid(inputs, sample)
        assert grid.positions.shape == (grid.rows * grid.cols,)
        if vlm.adapter.family not in QWEN:
            assert grid.sequence == sample and grid.positions[0] == int(grid.has_cls)
            continue
        # transformers' own (row, col) of each vision-sequence position, in the order the blocks see them
        grid_thw = inputs["image_grid_thw"]
        coords = get_vision_position_ids(grid_thw, config.spatial_merge_size)
        if vlm.adapter.family == "qwen2_5_vl":
            window_index, _ = get_vision_window_index(
                grid_thw, config.spatial_merge_size, config.window_size, config.patch_size
            )
            coords = coords.reshape(-1, config.spatial_merge_size**2, 2)[window_index].reshape(-1, 2)
        rows, cols = torch.meshgrid(torch.arange(grid.rows), torch.arange(grid.cols), indexing="ij")
        expected = torch.stack([rows.flatten(), cols.flatten()], dim=-1)
        assert torch.equal(coords[grid.positions], expected)


def test_module_handles_reproduce_the_logits(vlm):
    """final_norm and lm_head applied to the last decoder layer's output give the model's logits."""
    adapter, model = vlm.adapter, vlm.model
    layers = adapter.decoder_layers(model)
    assert len(layers) == model.config.text_config.num_hidden_layers
    assert len(adapter.vision_blocks(model)) > 0
    assert all(isinstance(adapter.vision_attention_module(b), torch.nn.Module) for b in adapter.vision_blocks(model))
    captured = {}

    def record(name):
        def hook(module, args, output):  # returns None: the output is left unchanged
            captured[name] = output

        return hook

    hooks = [
        layers[-1].register_forward_hook(record("last")),
        adapter.attention_module(layers[0]).register_forward_hook(record("attention")),
        adapter.mlp_module(layers[0]).register_forward_hook(record("mlp")),
    ]
    inputs = vlm.encode([request_for(Image.new("RGB", (64, 64), "white"), "how many circles are there ?")])
    with torch.no_grad():
        logits = model(**inputs).logits
    for hook in hooks:
        hook.remove()
    lens = adapter.lm_head(model)(adapter.final_norm(model)(captured["last"]))
    assert {"attention", "mlp"} <= captured.keys()
    torch.testing.assert_close(lens, logits, rtol=1e-4, atol=1e-4)


def test_batch_of_one_and_of_eight_give_identical_greedy_answers(vlm):
    requests = [request_for(doc["image"], doc["question"], i) for i, doc in enumerate(mixed_docs(8))]
    one_by_one = [vlm.generate([r])[0] for r in requests]
    batched = vlm.generate(requests)
    assert all(r.error is None for r in batched)
    assert [r.text for r in one_by_one] == [r.text for r in batched]


def test_only_the_sample_at_fault_fails_and_out_of_memory_is_retried_in_smaller_batches(vlm, monkeypatch):
    requests = [request_for(doc["image"], doc["question"], i) for i, doc in enumerate(mixed_docs(4))]
    expected = [r.text for r in vlm.generate(requests)]
    encode = vlm.encode

    def refuse_doc_2(batch):
        if any(r.doc_id == 2 for r in batch):
            raise ValueError("image has an unsupported mode")
        return encode(batch)

    monkeypatch.setattr(vlm, "encode", refuse_doc_2)
    answers = vlm.generate(requests)
    assert [r.text for i, r in enumerate(answers) if i != 2] == [t for i, t in enumerate(expected) if i != 2]
    assert answers[2].text is None and "processor refused" in answers[2].error
    monkeypatch.setattr(vlm, "encode", encode)
    answer = type(vlm)._answer
    sizes = []

    def memory_for_one(self, batch, inputs, settings):
        sizes.append(len(batch))
        if len(batch) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return answer(self, batch, inputs, settings)

    monkeypatch.setattr(type(vlm), "_answer", memory_for_one)
    assert [r.text for r in vlm.generate(requests)] == expected and sizes == [4, 2, 1, 1, 2, 1, 1]

    def broken(self, batch, inputs, settings):
        raise RuntimeError("shape '[1, 4, 4]' is invalid for input of size 20")  # a bug: not one sample's

    monkeypatch.setattr(type(vlm), "_answer", broken)
    with pytest.raises(RuntimeError, match="shape"):
        vlm.generate(requests)


def test_sampled_answers_do_not_depend_on_the_batch(vlm):
    sampling = GenerationSettings(max_new_tokens=4, do_sample=True, temperature=1.0, top_p=0.9)
    docs = mixed_docs(3)
    requests = [request_for(doc["image"], doc["question"], i, sampling) for i, doc in enumerate(docs)]
    alone = vlm.generate([requests[1]])[0].text
    assert vlm.generate(requests)[1].text == alone


def test_describe_records_fingerprint_dtype_and_prompt_keys(vlm, family_dir, tmp_path):
    family, directory = family_dir
    facts = vlm.describe()
    assert facts["family"] == family and facts["pretrained"] == str(directory)
    assert facts["dtype"] == "float32" and facts["n_layers"] == 3 and len(facts["fingerprint"]) == 64
    assert vlm.prompt_keys == (family,)
    copy = MODELS.get(family).from_args({"pretrained": str(shutil.copytree(directory, tmp_path / "copy"))})
    assert copy.describe()["fingerprint"] == facts["fingerprint"]  # where it lies does not matter
    with torch.no_grad():
        copy.adapter.lm_head(copy.model).weight[0, 0] += 1.0
    assert fingerprint(copy.model) != facts["fingerprint"]


def test_missing_checkpoint_offline_is_a_one_line_usage_error():
    for missing, hint in (("no-such-org/no-such-model", "pretrained=/path/to/folder"),  # neither hub nor cache
                          ("/no/such/local/dir", "no such folder")):
        with pytest.raises(UsageError) as error:
            MODELS.get("llava").from_args({"pretrained": missing})
        message = str(error.value)
        assert "\n" not in message and missing in message and hint in message


def test_checkpoint_of_another_family_is_a_usage_error(family_dir):
    family, directory = family_dir
    other = next(name for name in FAMILIES if name != family)
    with pytest.raises(UsageError, match=f"is a '{family}' checkpoint"):
        MODELS.get(other).from_args({"pretrained": str(directory)})


def test_bad_model_args_are_usage_errors(family_dir):
    family, directory = family_dir
    with pytest.raises(UsageError, match="dtype"):
        MODELS.get(family).from_args({"pretrained": str(directory), "dtype": "float8"})
    if family not in QWEN:
        with pytest.raises(UsageError, match="max_pixels"):
            MODELS.get(family).from_args({"pretrained": str(directory), "max_pixels": 4096})
