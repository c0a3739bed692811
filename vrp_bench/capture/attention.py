"""Attention probabilities for only the rows that are needed, without materialising T x T maps.

While an ``AttentionCapture`` is active, the attention implementation of the given configs is
swapped for a wrapper registered in transformers' ``AttentionInterface``. The wrapper returns
exactly what the original implementation (sdpa, eager, flash, ...) returns, so generation is
unchanged, and for each module it was asked about it also records:

- ``Site("decoder", l)``: the head-averaged probabilities of the LAST query row (the position that
  emits the next token) over all keys: one [batch, keys] tensor per call, i.e. per generation step.
- ``Site("vision", l, cls_row=True)``: the CLS query's row over all keys, head-averaged.
- ``Site("vision", l, cls_row=False)``: the column sums over the queries, head-averaged (normalised over
  an image's patches: the mean attention its patches receive). Exact up to ``VISION_QUERY_BUDGET``
  queries per call; beyond that, an evenly strided subset of that many queries estimates it (scaled to
  the full count), so the cost stays a small fraction of the encoder's own attention. Computed in query
  chunks, so memory stays at heads x chunk x keys.

Cost grows with layers x keys per step, never with keys^2 per layer and head.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

PREFIX = "vrp_capture_"
QUERY_CHUNK = 64
VISION_QUERY_BUDGET = 256

_active: ContextVar["AttentionCapture | None"] = ContextVar("vrp_attention_capture", default=None)


@dataclass(frozen=True)
class Site:
    """Where a capture attaches: the attention module of decoder layer ``layer`` or vision block ``layer``."""

    kind: str  # "decoder" or "vision"
    layer: int
    cls_row: bool = False


def _delegate(base: str, module: nn.Module) -> Any:
    """The attention function the model would have used: a registered one, or its own eager function."""
    if base != "eager" and base in ALL_ATTENTION_FUNCTIONS:
        return ALL_ATTENTION_FUNCTIONS[base]
    return sys.modules[type(module).__module__].eager_attention_forward


def _capture_name(base: str) -> str:
    """Register (once) and return the capturing twin of attention implementation ``base``."""
    name = PREFIX + base

    def capturing_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, **kwargs: Any) -> Any:
        capture = _active.get()
        if capture is not None:
            capture.record(module, query, key, attention_mask, kwargs)
        return _delegate(base, module)(module, query, key, value, attention_mask, **kwargs)

    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, capturing_attention)
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    return name


def _scores(module: nn.Module, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
            kwargs: dict[str, Any]) -> torch.Tensor:
    """Masked attention logits of ``query`` rows against ``key`` (float32, GQA keys expanded)."""
    query = query.float()
    key = key.float()
    if key.shape[1] != query.shape[1]:
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    softcap = kwargs.get("softcap")
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    return scores


class AttentionCapture:
    """Records attention rows at ``sites`` (module -> Site) while active (``with capture: ...``)."""

    def __init__(self, sites: dict[nn.Module, Site], configs: Iterable[PretrainedConfig]) -> None:
        self.sites = {id(module): site for module, site in sites.items()}
        self.configs = list({id(c): c for c in configs}.values())
        self.records: dict[Site, list[torch.Tensor]] = {}

    def record(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
               kwargs: dict[str, Any]) -> None:
        """Called by the wrapper for every attention call; keeps what ``module``'s site asks for."""
        site = self.sites.get(id(module))
        if site is None:
            return
        with torch.no_grad():
            if site.kind == "decoder" or site.cls_row:
                row = slice(-1, None) if site.kind == "decoder" else slice(0, 1)
                rows_mask = mask[..., row, :] if mask is not None and mask.shape[-2] > 1 else mask
                probabilities = torch.softmax(_scores(module, query[..., row, :], key, rows_mask, kwargs), dim=-1)
                kept = probabilities.mean(dim=1)[:, 0]
            else:
                kept = self._column_sums(module, query, key, mask, kwargs)
        self.records.setdefault(site, []).append(kept.nan_to_num(0.0))

    @staticmethod
    def _column_sums(module: nn.Module, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                     kwargs: dict[str, Any]) -> torch.Tensor:
        n_queries = query.shape[-2]
        rows = torch.arange(n_queries, device=query.device)
        if n_queries > VISION_QUERY_BUDGET:
            rows = torch.linspace(0, n_queries - 1, VISION_QUERY_BUDGET, device=query.device).round().long()
        total = torch.zeros(query.shape[0], key.shape[-2], dtype=torch.float32, device=query.device)
        for chunk in rows.split(QUERY_CHUNK):
            chunk_mask = mask[..., chunk, :] if mask is not None and mask.shape[-2] > 1 else mask
            probabilities = torch.softmax(_scores(module, query[..., chunk, :], key, chunk_mask, kwargs), dim=-1)
            total += probabilities.mean(dim=1).sum(dim=1)
        return total * (n_queries / len(rows))

    @contextmanager
    def _swapped_implementations(self) -> Iterator[None]:
        originals = [config._attn_implementation for config in self.configs]
        try:
            for config, base in zip(self.configs, originals):
                if not base.startswith(PREFIX):
                    config._attn_implementation = _capture_name(base)
            yield
        finally:
            for config, base in zip(self.configs, originals):
                config._attn_implementation = base

    def __enter__(self) -> "AttentionCapture":
        self.records = {}
        self._stack = self._swapped_implementations()
        self._stack.__enter__()
        self._token = _active.set(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        _active.reset(self._token)
        self._stack.__exit__(*exc_info)
