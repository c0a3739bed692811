"""The model shapes the benchmarks run: random models of the real architectures (the tiny zoo's recipes), at
the zoo's tiny widths or at a real checkpoint's widths with fewer layers, answering one prompt of a real
sequence length.

A ``Shape`` names a family, the image size (hence the number of image tokens) and optionally ``widths``:
config fields that replace the tiny recipe's, per sub-config (``text_config``, ``vision_config``) or at the top
level. ``REAL_WIDTHS`` holds Qwen2-VL-2B's and LLaVA-1.5-7B's widths with a few layers: every matrix has the
real model's size, so per-layer compute and memory traffic are the real ones; only the depth is cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    BatchFeature,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
)

from vrp_bench.models.families import FAMILIES, FamilyAdapter
from vrp_bench.zoo.build import build_tiny

QUESTION = "what color is the square ?"

QWEN2_VL_2B_DECODER_LAYERS = 2
QWEN2_VL_2B_VISION_BLOCKS = 2
LLAVA_7B_DECODER_LAYERS = 1
LLAVA_7B_VISION_BLOCKS = 2

REAL_WIDTHS: dict[str, dict[str, Any]] = {
    # Qwen/Qwen2-VL-2B-Instruct (28 decoder layers, 32 vision blocks): real widths, real vocabulary (tied head)
    "qwen2_vl_2b": {
        "text_config": {
            "hidden_size": 1536, "intermediate_size": 8960, "num_attention_heads": 12, "num_key_value_heads": 2,
            "num_hidden_layers": QWEN2_VL_2B_DECODER_LAYERS,
            "layer_types": ["full_attention"] * QWEN2_VL_2B_DECODER_LAYERS,
            "vocab_size": 151936, "tie_word_embeddings": True, "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        },
        "vision_config": {"depth": QWEN2_VL_2B_VISION_BLOCKS, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4,
                          "hidden_size": 1536},
        "tie_word_embeddings": True,
    },
    # llava-hf/llava-1.5-7b-hf (32 decoder layers, CLIP ViT-L/14-336 with 24 blocks): real widths, real vocabulary
    "llava_7b": {
        "text_config": {
            "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32, "num_key_value_heads": 32,
            "head_dim": 128, "num_hidden_layers": LLAVA_7B_DECODER_LAYERS, "vocab_size": 32064,
            "max_position_embeddings": 4096,
        },
        "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                          "num_hidden_layers": LLAVA_7B_VISION_BLOCKS, "projection_dim": 768},
    },
}


@dataclass(frozen=True)
class Shape:
    """One model shape: a family's architecture at some widths, answering one ``image_size`` image."""

    key: str
    family: str
    label: str
    """How tables name it."""
    image_size: int
    patch_size: int = 14
    widths: str | None = None
    """A key of ``REAL_WIDTHS``, or None for the tiny zoo's widths (hidden 128)."""

    @property
    def realistic(self) -> bool:
        return self.widths is not None


TINY_SHAPES = (
    Shape("llava_tiny", "llava", "LLaVA-1.5 sequence (576 image tokens), tiny widths", 336),
    Shape("qwen2_vl_tiny", "qwen2_vl", "Qwen2-VL at 896 px (1,024 image tokens), tiny widths", 896),
)
REAL_SHAPES = (
    Shape("qwen2_vl_2b", "qwen2_vl",
          f"Qwen2-VL-2B widths, {QWEN2_VL_2B_DECODER_LAYERS} decoder layers / {QWEN2_VL_2B_VISION_BLOCKS} vision "
          "blocks, 448 px (256 image tokens)", 448, widths="qwen2_vl_2b"),
    Shape("llava_7b", "llava",
          f"LLaVA-1.5-7B widths, {LLAVA_7B_DECODER_LAYERS} decoder layer / {LLAVA_7B_VISION_BLOCKS} vision blocks, "
          "336 px (576 image tokens)", 336, widths="llava_7b"),
)
SHAPES = {shape.key: shape for shape in (*TINY_SHAPES, *REAL_SHAPES)}


@dataclass
class Built:
    """A shape's model (eval mode, on its device) with what it takes to run it on one prompt."""

    model: PreTrainedModel
    processor: ProcessorMixin
    adapter: FamilyAdapter
    inputs: BatchFeature

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def prompt_tokens(self) -> int:
        return int(self.inputs["input_ids"].shape[1])


def with_widths(config: PretrainedConfig, widths: Mapping[str, Any]) -> PretrainedConfig:
    """``config`` rebuilt with ``widths``' fields: a mapping value replaces fields of that sub-config, any other
    value the top-level field."""
    fields = config.to_dict()
    for name, value in widths.items():
        fields[name] = {**fields[name], **value} if isinstance(value, Mapping) else value
    return type(config).from_dict(fields)


def build(shape: Shape, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Built:
    """A randomly initialised (seeded) model of ``shape`` on ``device`` in ``dtype``, and its one prompt (a noise
    image, the family's chat template around ``QUESTION``) encoded by the family's real processor."""
    tiny, processor = build_tiny(shape.family, seed=seed, image_size=shape.image_size, patch_size=shape.patch_size)
    if shape.widths is None:
        model = tiny.to(device, dtype)
    else:
        config = with_widths(tiny.config, REAL_WIDTHS[shape.widths])
        del tiny
        torch.manual_seed(seed)
        with torch.device(device):
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.eval()
    adapter = FAMILIES[shape.family](model.config)
    image = Image.effect_noise((shape.image_size, shape.image_size), 64).convert("RGB")
    prompt = adapter.build_prompt(processor, QUESTION, 1)
    inputs = processor(images=[[image]], text=[prompt], return_tensors="pt")
    inputs.pop("labels", None)
    return Built(model, processor, adapter, inputs.to(device, dtype=dtype))
