"""LLaVA (llava-hf/llava-1.5-*): a CLIP vision tower, an MLP projector and a Llama decoder.

The prompt is the checkpoint's chat template ("USER: <image>\\n{prompt} ASSISTANT:"). Each image
becomes (image_size / patch)^2 tokens in raster order: CLIP's CLS token is dropped by the
"default" feature strategy; with "full" it is kept as the first token of each image's block and
left out of the grid.
"""

from __future__ import annotations

import torch
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaProcessor,
    TokenizersBackend,
)

from vrp_bench.models.families.base import TINY_VISION, FixedGridAdapter, SpecialTokens, tiny_text

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


class LlavaAdapter(FixedGridAdapter):
    family = "llava"
    default_pretrained = "llava-hf/llava-1.5-7b-hf"
    special_tokens = SpecialTokens(bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", image="<image>", prepend_bos=True)
    chat_template = CHAT_TEMPLATE
    vision_has_cls = True

    @property
    def _keeps_cls(self) -> bool:
        return self.config.vision_feature_select_strategy == "full"

    @property
    def _tokens_per_image(self) -> int:
        return self._side**2 + int(self._keeps_cls)

    def image_token_span(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        spans = super().image_token_span(input_ids)
        if not self._keeps_cls:
            return spans
        return [span.view(-1, self._tokens_per_image)[:, 1:].flatten() for span in spans]

    @classmethod
    def tiny_config(cls, tokenizer: TokenizersBackend, image_size: int, patch_size: int) -> LlavaConfig:
        vision = CLIPVisionConfig(**TINY_VISION, image_size=image_size, patch_size=patch_size, projection_dim=128)
        text = LlamaConfig(**tiny_text(tokenizer), num_key_value_heads=4)
        return LlavaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=tokenizer.image_token_id,
            image_seq_length=(image_size // patch_size) ** 2,
            vision_feature_layer=-1,
        )

    @classmethod
    def tiny_processor(cls, tokenizer: TokenizersBackend, image_size: int, patch_size: int) -> LlavaProcessor:
        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
        return LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=patch_size,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=cls.chat_template,
        )
