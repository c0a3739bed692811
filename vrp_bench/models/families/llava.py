"""LLaVA (llava-hf/llava-1.5-*): a CLIP vision tower, an MLP projector and a Llama decoder.

The prompt is the checkpoint's chat template ("USER: <image>\\n{prompt} ASSISTANT:"). Each image
becomes (image_size / patch)^2 tokens in raster order: CLIP's CLS token is dropped by the
"default" feature strategy; with "full" it is kept as the first token of each image's block and
left out of the grid.
"""

from __future__ import annotations

import torch

from vrp_bench.models.families.base import FixedGridAdapter


class LlavaAdapter(FixedGridAdapter):
    family = "llava"
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
