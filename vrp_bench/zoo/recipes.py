"""The tiny zoo's recipes: how to build and train a small model of each family's real architecture.

A ``TinyRecipe`` holds what only the tiny zoo needs about a family: the special tokens its tokenizer
and processor expect (for the word-level tokenizer ``build`` makes), the chat template given to its
processor, a small config (hidden 128, 2-3 layers), the family's real processor class around the
tiny tokenizer, and how a prompt and its answer go into the processor for training. ``RECIPES`` maps
a family name (a key of ``vrp_bench.models.families.FAMILIES``) to its recipe. A recipe is optional:
the family adapter alone is enough to evaluate a family; a recipe is needed only for a tiny model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    GemmaConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaProcessor,
    PaliGemmaConfig,
    PaliGemmaProcessor,
    PretrainedConfig,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
    Qwen2VLImageProcessorPil,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    TokenizersBackend,
)

from vrp_bench.models.families.qwen2_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter

TINY_HIDDEN = 128
"""Hidden size of every tiny model's decoder."""
TINY_VISION = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4}
"""Vision-encoder sizes shared by the tiny configs of the fixed-grid families (CLIP, SigLIP field names)."""


def tiny_text(tokenizer: TokenizersBackend) -> dict[str, Any]:
    """Decoder sizes shared by every tiny config (hidden 128, 3 layers, 4 heads), for ``tokenizer``'s vocabulary."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": TINY_HIDDEN,
        "intermediate_size": 352,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "max_position_embeddings": 512,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


@dataclass(frozen=True)
class SpecialTokens:
    """The special tokens a family's tokenizer and processor expect (used to build tiny tokenizers)."""

    bos: str | None
    eos: str
    pad: str
    unk: str
    image: str
    extra: tuple[str, ...] = ()
    prepend_bos: bool = False
    """Whether the tokenizer itself starts every text with ``bos`` (as Llama's does)."""


class TinyRecipe(ABC):
    """How the tiny zoo builds and trains a small model of one family."""

    family: ClassVar[str]
    """The family's name, a key of ``FAMILIES``."""
    special_tokens: ClassVar[SpecialTokens]
    chat_template: ClassVar[str | None] = None
    """Chat template given to tiny checkpoints' processors (``None``: the family has none)."""
    image_scale: ClassVar[int] = 1
    """The tiny zoo's processor image side over its data's (64 px): every family sees an 8 x 8 image-token grid."""
    steps: ClassVar[int]
    """Optimiser steps of the shipped checkpoint (about 5 minutes on 2 CPU cores), the default of ``zoo train``, so
    that the documented command reproduces it."""

    @abstractmethod
    def config(self, tokenizer: TokenizersBackend, image_size: int, patch_size: int) -> PretrainedConfig:
        """A small config of this architecture (hidden 128, 2-3 layers) for ``tokenizer``'s vocabulary."""

    @abstractmethod
    def processor(self, tokenizer: TokenizersBackend, image_size: int, patch_size: int) -> ProcessorMixin:
        """The family's real processor class around ``tokenizer``, resizing images to ``image_size`` px."""

    def training_text(self, processor: ProcessorMixin, prompts: list[str], answers: list[str]) -> dict[str, Any]:
        """Text arguments of the processor for prompts followed by their answers and end-of-sequence."""
        eos = processor.tokenizer.eos_token
        return {"text": [f"{prompt} {answer}{eos}" for prompt, answer in zip(prompts, answers)]}


# --- LLaVA -------------------------------------------------------------------------------------

LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
"""llava-1.5's chat template: "USER: <image>\\n{prompt} ASSISTANT:"."""


class LlavaRecipe(TinyRecipe):
    family = "llava"
    steps = 1700
    special_tokens = SpecialTokens(bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", image="<image>", prepend_bos=True)
    chat_template = LLAVA_CHAT_TEMPLATE

    def config(self, tokenizer: TokenizersBackend, image_size: int, patch_size: int) -> LlavaConfig:
        vision = CLIPVisionConfig(**TINY_VISION, image_size=image_size, patch_size=patch_size, projection_dim=128)
        text = LlamaConfig(**tiny_text(tokenizer), num_key_value_heads=4)
        return LlavaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=tokenizer.image_token_id,
            image_seq_length=(image_size // patch_size) ** 2,
            vision_feature_layer=-1,
        )

    def processor(self, tokenizer: TokenizersBackend, image_size: int, patch_size: int) -> LlavaProcessor:
        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
        return LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=patch_size,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=self.chat_template,
        )


# --- PaliGemma ---------------------------------------------------------------------------------


class PaliGemmaRecipe(TinyRecipe):
    family = "paligemma"
    steps = 1550
    special_tokens = SpecialTokens(bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", image="<image>")

    def config(self, tokenizer: TokenizersBackend, image_size: int, patch_size: int) -> PaliGemmaConfig:
        vision = SiglipVisionConfig(**TINY_VISION, image_size=image_size, patch_size=patch_size, vision_use_head=False)
        text = GemmaConfig(**tiny_text(tokenizer), num_key_value_heads=1, head_dim=32)
        return PaliGemmaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=tokenizer.image_token_id,
            vocab_size=len(tokenizer),
            projection_dim=128,
            hidden_size=128,
        )

    def processor(self, tokenizer: TokenizersBackend, image_size: int, patch_size: int) -> PaliGemmaProcessor:
        image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
        image_processor.image_seq_length = (image_size // patch_size) ** 2
        return PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)

    def training_text(self, processor: ProcessorMixin, prompts: list[str], answers: list[str]) -> dict[str, Any]:
        # the answer goes in as the processor's suffix, so it is not part of the bidirectional prefix
        return {"text": prompts, "suffix": answers}


# --- Qwen2-VL and Qwen2.5-VL -------------------------------------------------------------------

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""The Qwen2-VL / Qwen2.5-VL chat template (a system turn, then ChatML with vision markers)."""

MERGE_SIZE = 2
"""Qwen's 2x2 patch merge (``spatial_merge_size``), as in every real checkpoint."""

TINY_QWEN_TEXT = {
    "num_key_value_heads": 2,
    # mrope_section sums to head_dim / 2 = 16 (temporal, height, width)
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
}


class Qwen2VLRecipe(TinyRecipe):
    family = "qwen2_vl"
    steps = 700
    special_tokens = SpecialTokens(
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        unk="<|unk|>",
        image="<|image_pad|>",
        extra=("<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"),
    )
    chat_template = QWEN_CHAT_TEMPLATE
    image_scale = MERGE_SIZE
    """64 px images are resized to 128 px: 16 x 16 patches of 8 px, 8 x 8 image tokens after the 2 x 2 merge."""
    config_class: ClassVar[type[PretrainedConfig]] = Qwen2VLConfig
    processor_class: ClassVar[type[ProcessorMixin]] = Qwen2VLAdapter.processor_class
    """The image-only processor the adapter loads checkpoints with."""

    def vision(self, patch_size: int) -> dict[str, Any]:
        """The tiny vision encoder's config fields."""
        return {
            "depth": 2,
            "embed_dim": 128,
            "hidden_size": TINY_HIDDEN,
            "num_heads": 4,
            "mlp_ratio": 2,
            "patch_size": patch_size,
            "spatial_merge_size": MERGE_SIZE,
        }

    def config(self, tokenizer: TokenizersBackend, image_size: int, patch_size: int) -> PretrainedConfig:
        ids = tokenizer.convert_tokens_to_ids
        text = {**tiny_text(tokenizer), **TINY_QWEN_TEXT}
        return self.config_class(
            text_config=text,
            vision_config=self.vision(patch_size),
            image_token_id=ids("<|image_pad|>"),
            video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"),
            vision_end_token_id=ids("<|vision_end|>"),
        )

    def processor(self, tokenizer: TokenizersBackend, image_size: int, patch_size: int) -> ProcessorMixin:
        # every image resized to about image_size^2 pixels (aspect kept, sides multiples of patch * merge)
        image_processor = Qwen2VLImageProcessorPil(
            patch_size=patch_size, merge_size=MERGE_SIZE, min_pixels=image_size**2, max_pixels=image_size**2
        )
        return self.processor_class(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=self.chat_template
        )


class Qwen2_5_VLRecipe(Qwen2VLRecipe):
    """Qwen2-VL's recipe with Qwen2.5-VL's vision encoder (windowed attention, new field names)."""

    family = "qwen2_5_vl"
    steps = 540
    config_class = Qwen2_5_VLConfig
    processor_class = Qwen2_5_VLAdapter.processor_class

    def vision(self, patch_size: int) -> dict[str, Any]:
        return {
            "depth": 2,
            "hidden_size": 128,
            "intermediate_size": 256,
            "out_hidden_size": TINY_HIDDEN,
            "num_heads": 4,
            "patch_size": patch_size,
            "spatial_merge_size": MERGE_SIZE,
            "window_size": patch_size * MERGE_SIZE * 2,  # 2x2 merge units per window
            "fullatt_block_indexes": [1],
        }


RECIPES: dict[str, TinyRecipe] = {
    recipe.family: recipe for recipe in (LlavaRecipe(), PaliGemmaRecipe(), Qwen2VLRecipe(), Qwen2_5_VLRecipe())
}
"""The tiny zoo's recipe of each family that has one, by family name."""
