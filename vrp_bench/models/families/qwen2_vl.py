"""Qwen2-VL and Qwen2.5-VL: a native-resolution ViT with a 2x2 patch merger and a Qwen2 decoder.

Images keep (roughly) their aspect ratio: the processor resizes them to multiples of
``patch * merge`` within [min_pixels, max_pixels] and reports each image's patch grid in
``image_grid_thw`` = (t, h, w). The language model sees t * (h/2) * (w/2) image tokens in raster
order. The vision blocks see the h * w patches of all images packed into one sequence, grouped
block-major by 2x2 merge unit; Qwen2.5-VL additionally reorders the merge units window by window
(and restores raster order after its merger), which ``vision_grid`` maps back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import ProcessorMixin, Qwen2_5_VLProcessor, Qwen2VLProcessor
from transformers.vision_utils import get_vision_window_index

from vrp_bench.models.families.base import FamilyAdapter, VisionGrid


def image_only(processor_class: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """``processor_class`` without a video processor, under the same name.

    In transformers 5 a Qwen processor cannot be built or loaded without a video processor, and
    video processors need torchvision. The benchmark only feeds images, so this variant (identical
    on images, saved under the real class name) drops that dependency.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        processor_class.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return type(processor_class.__name__, (processor_class,), {"__init__": __init__, "__doc__": image_only.__doc__})


class Qwen2VLAdapter(FamilyAdapter):
    family = "qwen2_vl"
    processor_class: ClassVar[type[ProcessorMixin]] = image_only(Qwen2VLProcessor)
    """The processor class checkpoints are loaded with (images only)."""

    @classmethod
    def load_processor(cls, pretrained: str, max_pixels: int | None = None, **kwargs: Any) -> ProcessorMixin:
        processor = cls.processor_class.from_pretrained(pretrained, **kwargs)
        if max_pixels is not None:  # a cap below the checkpoint's minimum lowers the minimum too, or it would win
            size = processor.image_processor.size
            size.longest_edge = max_pixels
            size.shortest_edge = min(size.shortest_edge, max_pixels)
        return processor

    @property
    def _merge(self) -> int:
        return self.config.vision_config.spatial_merge_size

    def _image_row(self, inputs: Mapping[str, Any], sample_index: int, image_index: int) -> int:
        """Index into ``image_grid_thw`` (all images of the batch) of one sample's image."""
        tokens_before = int((inputs["input_ids"][:sample_index] == self.image_token_id).sum())
        per_image = (inputs["image_grid_thw"].prod(-1) // self._merge**2).cumsum(0)
        return int((per_image <= tokens_before).sum()) + image_index

    def patch_grid(self, inputs: Mapping[str, Any], sample_index: int, image_index: int = 0) -> tuple[int, int]:
        _, h, w = inputs["image_grid_thw"][self._image_row(inputs, sample_index, image_index)].tolist()
        return h // self._merge, w // self._merge

    def _unit_order(self, grid_thw: torch.Tensor) -> torch.Tensor:
        """For each merge unit (block-major over all images), its index in the vision blocks' sequence."""
        return torch.arange(int(grid_thw.prod(-1).sum()) // self._merge**2)

    def vision_grid(self, inputs: Mapping[str, Any], sample_index: int, image_index: int = 0) -> VisionGrid:
        grid_thw = inputs["image_grid_thw"].cpu()
        row = self._image_row(inputs, sample_index, image_index)
        _, h, w = grid_thw[row].tolist()
        m = self._merge
        r, c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        unit = (r // m) * (w // m) + c // m + int(grid_thw[:row].prod(-1).sum()) // m**2
        within = (r % m) * m + c % m
        positions = self._unit_order(grid_thw)[unit] * m**2 + within
        return VisionGrid(rows=h, cols=w, sequence=0, positions=positions.flatten(), has_cls=False)

    def vision_blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.model.visual.blocks

    def vision_attention_module(self, block: nn.Module) -> nn.Module:
        return block.attn


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL: Qwen2-VL plus windowed attention in the vision encoder (and new field names)."""

    family = "qwen2_5_vl"
    processor_class = image_only(Qwen2_5_VLProcessor)

    def _unit_order(self, grid_thw: torch.Tensor) -> torch.Tensor:
        vision = self.config.vision_config
        window_index, _ = get_vision_window_index(
            grid_thw,
            spatial_merge_size=vision.spatial_merge_size,
            window_size=vision.window_size,
            patch_size=vision.patch_size,
        )
        return torch.argsort(window_index)
