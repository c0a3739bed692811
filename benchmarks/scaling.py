"""How VRP-Bench's per-doc wall time grows with image tokens and with K (self-consistency samples).

- Image tokens: Qwen2-VL (dynamic resolution) at tiny widths answering one image of each size in
  ``IMAGE_SIZES`` (64 to 1,024 image tokens), plain vs instrumented vs instrumented + SC (K = 10).
- K: one shape answering with the instrumented pass plus K self-consistency samples, for each given K (K = 0:
  the instrumented pass alone), beside plain.

Growth with the number of docs is the harness comparison's fit (``benchmarks.harness``: seconds = fixed +
per-doc x docs). Seconds are medians of interleaved calls (``benchmarks.common.interleaved_seconds``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from benchmarks.capture_overhead import condition_call
from benchmarks.common import interleaved_seconds
from benchmarks.shapes import Shape, build

IMAGE_SIZES = (224, 448, 672, 896)
SCALING_CONDITIONS = ("plain", "instrumented", "instrumented_sc")


def image_token_scaling(samples: int, device: torch.device, dtype: torch.dtype,
                        sizes: Sequence[int] = IMAGE_SIZES) -> list[dict[str, Any]]:
    """Per image size: prompt tokens and median seconds of plain, instrumented and instrumented + SC."""
    rows = []
    for size in sizes:
        built = build(Shape(f"qwen2_vl_{size}", "qwen2_vl", f"Qwen2-VL {size} px", size), device, dtype)
        calls = {c: condition_call(c, built, new_tokens=8, k=10) for c in SCALING_CONDITIONS}
        rows.append({"image_size": size, "prompt_tokens": built.prompt_tokens,
                     "seconds": interleaved_seconds(calls, samples, device)})
    return rows


def k_scaling(shape: Shape, samples: int, device: torch.device, dtype: torch.dtype,
              ks: Sequence[int]) -> dict[str, Any]:
    """Median seconds of plain and of the instrumented pass plus K self-consistency samples, per K in ``ks``."""
    built = build(shape, device, dtype)
    calls = {"plain": condition_call("plain", built, new_tokens=8, k=0)}
    calls.update({f"k={k}": condition_call("instrumented_sc" if k else "instrumented", built, new_tokens=8, k=k)
                  for k in ks})
    seconds = interleaved_seconds(calls, samples, device)
    return {"shape": shape.label, "plain_seconds": seconds.pop("plain"),
            "rows": [{"k": k, "seconds": seconds[f"k={k}"]} for k in ks]}
