"""Self-consistency samples from ONE prefill: the prompt (and image) is encoded once, its KV cache is
cropped by one position and repeated K times, and sampling continues from there.

With the same seed this draws exactly the tokens of ``generate(..., num_return_sequences=K)``
(the sampler consumes the random stream identically), at the cost of one prefill instead of K.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import BatchFeature, Cache


def prompt_cache(model: nn.Module, inputs: BatchFeature) -> Cache:
    """The KV cache of the whole prompt in ``inputs`` (image encoded once). Only the last position's logits are
    computed: the prefill's logits are never read, and over the whole prompt they would cost a
    [prompt length x vocabulary] projection (hundreds of MiB at real vocabularies). Call under inference mode."""
    return model(**inputs, use_cache=True, logits_to_keep=1).cache


def shared_prefill_samples(
    model: nn.Module, inputs: BatchFeature, k: int, generation_kwargs: dict[str, Any], seed: int
) -> torch.Tensor:
    """K sampled continuations of the single prompt in ``inputs``: new token ids, [K, steps].

    ``generation_kwargs`` must set every sampling parameter explicitly (do_sample, temperature,
    top_p, top_k, ...), so that a checkpoint's generation_config cannot override them.
    """
    if inputs["input_ids"].shape[0] != 1:
        raise ValueError("shared_prefill_samples takes one prompt at a time")
    prompt_length = inputs["input_ids"].shape[1]
    with torch.inference_mode():
        torch.manual_seed(seed)
        cache = prompt_cache(model, inputs)
        cache.crop(-1)
        cache.batch_repeat_interleave(k)
        output = model.generate(
            input_ids=inputs["input_ids"].repeat_interleave(k, dim=0),
            attention_mask=inputs["attention_mask"].repeat_interleave(k, dim=0),
            cache=cache,
            **generation_kwargs,
        )
    return output[:, prompt_length:]
