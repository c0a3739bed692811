"""PaliGemma (google/paligemma-*): a SigLIP vision tower, a linear projector and a Gemma decoder.

PaliGemma has no chat template: its prompt is the image tokens followed by the text prefix; the
processor inserts ``<bos>`` after the image tokens and ends the prefix with a newline. Each image
becomes (image_size / patch)^2 tokens in raster order (SigLIP has no CLS token).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import (
    GemmaConfig,
    PaliGemmaConfig,
    PaliGemmaProcessor,
    ProcessorMixin,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    TokenizersBackend,
)

from vrp_bench.models.families.base import TINY_VISION, FixedGridAdapter, SpecialTokens, tiny_text


class PaliGemmaAdapter(FixedGridAdapter):
    family = "paligemma"
    default_pretrained = "google/paligemma-3b-pt-224"
    special_tokens = SpecialTokens(bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", image="<image>")
    vision_has_cls = False

    def build_prompt(
        self,
        processor: ProcessorMixin,
        prompt: str,
        n_images: int,
        messages: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        if messages is not None:
            prompt = " ".join(_texts(messages))
        return processor.image_token * n_images + prompt

    def training_text(self, processor: ProcessorMixin, prompts: list[str], answers: list[str]) -> dict[str, Any]:
        # the answer goes in as the processor's suffix, so it is not part of the bidirectional prefix
        return {"text": prompts, "suffix": answers}

    @classmethod
    def tiny_config(cls, tokenizer: TokenizersBackend, image_size: int, patch_size: int) -> PaliGemmaConfig:
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

    @classmethod
    def tiny_processor(cls, tokenizer: TokenizersBackend, image_size: int, patch_size: int) -> PaliGemmaProcessor:
        image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
        image_processor.image_seq_length = (image_size // patch_size) ** 2
        return PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _texts(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """The text parts of lmms-eval style chat messages, in order."""
    texts = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(part["text"] for part in content if part.get("type") == "text")
    return texts
