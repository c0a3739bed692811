"""The family adapter: everything that differs between VLM architectures, in one place.

A ``FamilyAdapter`` is bound to a loaded model's config. The backend (``hf_vlm``) and everything
after it (capture hooks, signals) reach architecture details only through it: how a prompt is
laid out, where the image tokens sit in ``input_ids`` and which patch grid they form, and handles
to the decoder layers, their attention and MLP modules, the final norm, ``lm_head`` and the vision
encoder's blocks. Class-level members name the family and its study checkpoint and load the
checkpoint's processor. Adding a family is one subclass in one file, listed in
``vrp_bench.models.families.FAMILIES``; that is enough to evaluate it. How to build and train a tiny
model of a family is the tiny zoo's business (``vrp_bench.zoo.recipes``), not the adapter's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from transformers import AutoProcessor, PretrainedConfig, ProcessorMixin

from vrp_bench.api.errors import UsageError


@dataclass(frozen=True)
class VisionGrid:
    """Where one image's patches sit in the vision encoder's token sequence.

    ``positions[r * cols + c]`` is the sequence index (within batch row ``sequence`` of the vision
    blocks' hidden states) of the patch at row ``r``, column ``c``; it accounts for a CLS token,
    packing of several images into one sequence, and non-raster (windowed) token orders.
    """

    rows: int
    cols: int
    sequence: int
    positions: torch.Tensor
    has_cls: bool


class FamilyAdapter(ABC):
    """Architecture-specific knowledge about one VLM family, bound to a model config."""

    family: ClassVar[str]
    """Short name, also the registered model name (``llava``, ``qwen2_vl``, ...)."""
    vision_has_cls: ClassVar[bool] = False
    """Whether the vision encoder prepends a CLS token (its attention map is then the CLS row)."""

    def __init__(self, config: PretrainedConfig) -> None:
        self.config = config

    @classmethod
    def load_processor(cls, pretrained: str, max_pixels: int | None = None, **kwargs: Any) -> ProcessorMixin:
        """Load the checkpoint's processor (``kwargs``: revision, trust_remote_code, ...).

        ``max_pixels`` caps the image resolution where the family resizes dynamically.
        """
        if max_pixels is not None:
            raise UsageError(f"max_pixels does not apply to {cls.family}: its images are resized to a fixed size")
        return AutoProcessor.from_pretrained(pretrained, **kwargs)

    # --- prompts -------------------------------------------------------------------------------

    def build_prompt(
        self,
        processor: ProcessorMixin,
        prompt: str,
        n_images: int,
        messages: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """The text given to the processor: the chat template around the images and the prompt.

        ``messages`` (lmms-eval style chat messages) take precedence over ``prompt`` when given.
        """
        if messages is None:
            content = [{"type": "image"}] * n_images + [{"type": "text", "text": prompt}]
            messages = [{"role": "user", "content": content}]
        return processor.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)

    # --- image tokens and grids ----------------------------------------------------------------

    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    def image_token_span(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        """Per sample, the positions of its image tokens in ``input_ids`` (all images, in order)."""
        return [torch.nonzero(row == self.image_token_id).flatten() for row in input_ids]

    @abstractmethod
    def patch_grid(self, inputs: Mapping[str, Any], sample_index: int, image_index: int = 0) -> tuple[int, int]:
        """(rows, cols) of the grid formed, row-major, by one image's tokens in the language model."""

    @abstractmethod
    def vision_grid(self, inputs: Mapping[str, Any], sample_index: int, image_index: int = 0) -> VisionGrid:
        """Where one image's patches sit in the vision blocks' hidden states."""

    # --- module handles (the same layout in all transformers v5 VLMs unless overridden) ----------

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return model.model.language_model.layers

    def attention_module(self, layer: nn.Module) -> nn.Module:
        return layer.self_attn

    def mlp_module(self, layer: nn.Module) -> nn.Module:
        return layer.mlp

    def mlp_down_projection(self, layer: nn.Module) -> nn.Module:
        """The MLP's output projection: its input holds the intermediate neurons."""
        return self.mlp_module(layer).down_proj

    def residual_after_attention(self, layer: nn.Module) -> nn.Module:
        """The module whose input is the residual stream between a decoder layer's attention and MLP blocks
        (h + attention write): the norm in front of the MLP. Llama, Qwen2 and Gemma name it
        ``post_attention_layernorm``; Gemma 2 / 3, whose ``post_attention_layernorm`` norms the attention output
        before the residual add, name it ``pre_feedforward_layernorm``."""
        return getattr(layer, "pre_feedforward_layernorm", None) or layer.post_attention_layernorm

    def final_norm(self, model: nn.Module) -> nn.Module:
        return model.model.language_model.norm

    def hidden_state_sites(self, model: nn.Module) -> list[tuple[nn.Module, Literal["input", "output"]]]:
        """Where Hugging Face's ``output_hidden_states`` index i is read, i = 0..L: the first decoder layer's
        input (the embedding output), then each decoder layer's output, the last one replaced by the final
        norm's (transformers overwrites ``hidden_states[-1]`` with the normed ``last_hidden_state``)."""
        layers = self.decoder_layers(model)
        return [(layers[0], "input"), *((layer, "output") for layer in layers[:-1]), (self.final_norm(model), "output")]

    def lm_head(self, model: nn.Module) -> nn.Module:
        return model.lm_head

    def vision_blocks(self, model: nn.Module) -> nn.ModuleList:
        """The vision encoder's transformer blocks."""
        return model.model.vision_tower.encoder.layers

    def vision_attention_module(self, block: nn.Module) -> nn.Module:
        """The self-attention module of one vision block."""
        return block.self_attn


class FixedGridAdapter(FamilyAdapter):
    """A family whose images are resized to one square size: a config-derived ``n x n`` patch grid.

    The vision tower encodes each image as its own batch row, patches in raster order, after a CLS
    token when ``vision_has_cls``.
    """


    @property
    def _side(self) -> int:
        vision = self.config.vision_config
        return vision.image_size // vision.patch_size

    def patch_grid(self, inputs: Mapping[str, Any], sample_index: int, image_index: int = 0) -> tuple[int, int]:
        return self._side, self._side

    def vision_grid(self, inputs: Mapping[str, Any], sample_index: int, image_index: int = 0) -> VisionGrid:
        per_image = self._side**2
        earlier = int((inputs["input_ids"][:sample_index] == self.image_token_id).sum()) // self._tokens_per_image
        offset = int(self.vision_has_cls)
        return VisionGrid(
            rows=self._side,
            cols=self._side,
            sequence=earlier + image_index,
            positions=torch.arange(per_image) + offset,
            has_cls=self.vision_has_cls,
        )

    @property
    def _tokens_per_image(self) -> int:
        """Image tokens per image in ``input_ids`` (the grid, plus any extra token the family keeps)."""
        return self._side**2
