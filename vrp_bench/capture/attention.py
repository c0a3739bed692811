"""Attention probabilities for only the rows that are needed, without materialising T x T maps.

While an ``AttentionCapture`` is active, the attention implementation of the given configs is
swapped for a wrapper registered in transformers' ``AttentionInterface``. The wrapper returns
exactly what the original implementation (sdpa, eager, flash, ...) returns, so generation is
unchanged, and for each module it was asked about it also records:

- ``Site("decoder", l)``: the head-averaged probabilities of the LAST query row (the position that
  emits the next token) over all keys: one [batch, keys] tensor per call, i.e. per generation step.
- ``Site("vision", l, cls_row=True)``: the CLS query's row over all keys, head-averaged.
- ``Site("vision", l, cls_row=False)``: the column sums over ALL queries, head-averaged (normalised over an
  image's patches: the mean attention its patches receive); exact at any image size. Computed in chunks of
  query rows and heads of at most ``CPU_SCORE_ELEMENTS`` / ``DEVICE_SCORE_ELEMENTS`` logits, so memory stays
  bounded however many patches an image has (plus a float32 copy of the keys if they come in another dtype).

Masks are kept as the model passes them: ``attention_mask`` rows (e.g. a block-diagonal mask over several
images), and for packed variable-length calls (flash attention's ``cu_seq_lens_q`` / ``cu_seq_lens_k``, e.g.
Qwen2-VL's images or Qwen2.5-VL's windows in one sequence) each query sees only the keys of its own segment.

Decoder rows cost layers x keys per step, never keys^2 per layer and head. Vision column sums take keys^2 logits
per block and head in time (about what the encoder's own attention takes again), never in memory.
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
CPU_SCORE_ELEMENTS = 1 << 20
"""Most logits (batch x heads x query rows x keys) one chunk of a vision column sum holds on a CPU: 4 MiB in
float32 (16 MiB chunks were no faster), so the chunks add a few MiB to the resident set at any image size. A chunk
has at least one query row and one head."""
DEVICE_SCORE_ELEMENTS = 1 << 24
"""The same on an accelerator: 64 MiB in float32, small next to its memory, in fewer and larger kernels."""


def score_elements(device: torch.device) -> int:
    """Logits per query chunk of a vision column sum on ``device``."""
    return CPU_SCORE_ELEMENTS if device.type == "cpu" else DEVICE_SCORE_ELEMENTS


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


def _float_keys(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """``key`` in float32 with its heads expanded to ``query``'s (GQA)."""
    key = key.float()
    if key.shape[1] != query.shape[1]:
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    return key


def _rows_mask(mask: torch.Tensor | None, rows: slice, n_keys: int, kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The mask of query rows ``rows`` (absolute, non-negative slice): ``mask``'s rows (a mask with one row is
    broadcast), restricted for packed variable-length calls to the keys of each row's own segment."""
    if mask is not None and mask.shape[-2] > 1:
        mask = mask[..., rows, :]
    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if cu_q is None or cu_k is None:
        return mask
    query_segment = torch.bucketize(torch.arange(rows.start, rows.stop, device=cu_q.device), cu_q[1:], right=True)
    key_segment = torch.bucketize(torch.arange(n_keys, device=cu_k.device), cu_k[1:], right=True)
    same = query_segment[:, None] == key_segment.to(query_segment.device)[None, :]
    if mask is None:
        return same
    same = same.to(mask.device)
    return mask & same if mask.dtype == torch.bool else mask.masked_fill(~same, float("-inf"))


def _scores(module: nn.Module, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
            kwargs: dict[str, Any], key_transposed: bool = False) -> torch.Tensor:
    """Masked attention logits of ``query`` rows against ``key`` (float32, GQA keys expanded). ``key_transposed``:
    ``key`` is already ``_float_keys(query, key).transpose(-1, -2)`` ([batch, heads, dim, keys])."""
    key_t = key if key_transposed else _float_keys(query, key).transpose(-1, -2)
    scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
    scores = torch.matmul(query.float() * scaling, key_t)  # scaling rows x dim, not rows x keys
    softcap = kwargs.get("softcap")
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill_(~mask, float("-inf"))
        else:
            scores = scores.add_(mask.float())
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
                n_queries = query.shape[-2]
                row = n_queries - 1 if site.kind == "decoder" else 0
                rows_mask = _rows_mask(mask, slice(row, row + 1), key.shape[-2], kwargs)
                probabilities = torch.softmax(_scores(module, query[..., row:row + 1, :], key, rows_mask, kwargs), -1)
                kept = probabilities.mean(dim=1)[:, 0]
            else:
                kept = self._column_sums(module, query, key, mask, kwargs)
        self.records.setdefault(site, []).append(kept.nan_to_num(0.0))

    @staticmethod
    def _column_sums(module: nn.Module, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                     kwargs: dict[str, Any]) -> torch.Tensor:
        """Head-averaged attention probabilities summed over all query rows: [batch, keys], exact. Computed in
        chunks of query rows x heads of at most ``score_elements`` logits: as many rows as fit for one head, then as
        many heads as fit (every chunk's matrix product reads its heads' keys once, so chunks of few rows would be
        bound by reading keys)."""
        batch, heads, n_queries, _ = query.shape
        n_keys = key.shape[-2]
        key_t = _float_keys(query, key).transpose(-1, -2)  # once, not per chunk
        budget = score_elements(query.device)
        n_rows = min(n_queries, max(1, budget // (batch * n_keys)))
        n_heads = min(heads, max(1, budget // (batch * n_rows * n_keys)))
        total = torch.zeros(batch, n_keys, dtype=torch.float32, device=query.device)
        for first_head in range(0, heads, n_heads):
            head_slice = slice(first_head, min(first_head + n_heads, heads))
            for start in range(0, n_queries, n_rows):
                rows = slice(start, min(start + n_rows, n_queries))
                rows_mask = _rows_mask(mask, rows, n_keys, kwargs)
                if rows_mask is not None and rows_mask.dim() == 4 and rows_mask.shape[1] > 1:
                    rows_mask = rows_mask[:, head_slice]
                scores = _scores(module, query[:, head_slice, rows], key_t[:, head_slice], rows_mask, kwargs,
                                 key_transposed=True)
                total += torch.softmax(scores, dim=-1).nansum(dim=(1, 2))  # a fully masked query row adds nothing
        return total / heads

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
