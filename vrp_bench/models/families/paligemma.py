"""PaliGemma (google/paligemma-*): a SigLIP vision tower, a linear projector and a Gemma decoder.

PaliGemma has no chat template: its prompt is the image tokens followed by the text prefix; the
processor inserts ``<bos>`` after the image tokens and ends the prefix with a newline. Each image
becomes (image_size / patch)^2 tokens in raster order (SigLIP has no CLS token).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import ProcessorMixin

from vrp_bench.models.families.base import FixedGridAdapter


class PaliGemmaAdapter(FixedGridAdapter):
    family = "paligemma"
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
