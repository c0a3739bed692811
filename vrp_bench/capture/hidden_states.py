"""The residual stream at the last position of every call, numbered like Hugging Face's ``output_hidden_states``.

Index 0 is the embedding output (the first decoder layer's input), index i in 1..L-1 the output of decoder
layer i - 1, and index L the last layer's output after the final norm: the family adapter lists these sites
(``FamilyAdapter.hidden_state_sites``), so a probe's "layer 21" is HF's ``hidden_states[21]``, the study's
numbering. During generation with a KV cache, call 0 of a site is the prompt (its last position is the last
prompt token) and call 1 processes the first answer token; ``keep_calls`` bounds what is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from vrp_bench.capture.hooks import register_all, remove_all

Where = Literal["input", "output"]
"""A site's tensor: the module's first input (a forward pre-hook) or its output (a forward hook)."""


def _first_tensor(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple) else value


class LastPositionCapture:
    """Hooks on ``sites`` ((module, where) pairs) keeping ``tensor[:, -1]`` (float32) for the first
    ``keep_calls`` calls of each."""

    def __init__(self, sites: Sequence[tuple[nn.Module, Where]], keep_calls: int = 2) -> None:
        self.sites = list(sites)
        self.keep_calls = keep_calls
        self.records: list[list[torch.Tensor]] = []
        self._handles: list[Any] = []

    def _keep(self, index: int, value: Any) -> None:
        if len(self.records[index]) < self.keep_calls:
            self.records[index].append(_first_tensor(value)[:, -1].detach().float().clone())

    def _hook(self, index: int, where: Where) -> Any:
        if where == "input":
            def keep_input(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
                self._keep(index, args[0] if args else kwargs["hidden_states"])

            return keep_input

        def keep_output(module: nn.Module, args: Any, output: Any) -> None:
            self._keep(index, output)

        return keep_output

    def __enter__(self) -> "LastPositionCapture":
        self.records = [[] for _ in self.sites]
        self._handles = register_all(
            partial(module.register_forward_pre_hook, self._hook(index, where), with_kwargs=True) if where == "input"
            else partial(module.register_forward_hook, self._hook(index, where))
            for index, (module, where) in enumerate(self.sites))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        remove_all(self._handles)
        self._handles = []

    def stacked(self, call: int) -> torch.Tensor | None:
        """[batch, n_sites, hidden] for call ``call`` (0: last prompt position), or None if not reached."""
        if any(len(calls) <= call for calls in self.records):
            return None
        return torch.stack([calls[call] for calls in self.records], dim=1)
