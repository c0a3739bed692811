"""The residual stream at the last position of every call, per decoder layer (forward hooks).

During generation with a KV cache, call 0 of a layer is the prompt (its last position is the last
prompt token) and call 1 processes the first answer token; ``keep_calls`` bounds what is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class LastPositionCapture:
    """Forward hooks on ``layers`` keeping ``output[:, -1]`` (float32) for the first ``keep_calls`` calls."""

    def __init__(self, layers: Sequence[nn.Module], keep_calls: int = 2) -> None:
        self.layers = list(layers)
        self.keep_calls = keep_calls
        self.records: list[list[torch.Tensor]] = []
        self._handles: list[Any] = []

    def _hook(self, index: int) -> Any:
        def keep_last_position(module: nn.Module, args: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            if len(self.records[index]) < self.keep_calls:
                self.records[index].append(hidden[:, -1].detach().float().clone())

        return keep_last_position

    def __enter__(self) -> "LastPositionCapture":
        self.records = [[] for _ in self.layers]
        try:
            for index, layer in enumerate(self.layers):
                self._handles.append(layer.register_forward_hook(self._hook(index)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def stacked(self, call: int) -> torch.Tensor | None:
        """[batch, n_layers, hidden] for call ``call`` (0: last prompt position), or None if not reached."""
        if any(len(calls) <= call for calls in self.records):
            return None
        return torch.stack([calls[call] for calls in self.records], dim=1)
