"""What each decoder layer writes into the residual stream during the prompt pass of a generation.

Decoder layer l reads HF's hidden state l (h_l) and writes h_{l+1} = h_l + a_l + m_l: a_l is its attention
block's write (with any post-attention norm of the family), m_l its MLP block's. ``ResidualStreamCapture``
hooks, for the first call of each layer only (the prompt pass):

- the layer's input (a forward pre-hook) and output (a forward hook): ``update_norms[l]``, the L2 norm of
  ``output - input`` at every position (the study's "late-stage forcing": LLaVA's image positions stay dormant
  through most layers, then the updates rise sharply in the last ones);
- the residual stream between the two blocks, h_l + a_l, read as the input of the norm in front of the MLP
  (``FamilyAdapter.residual_after_attention``): at the last position, ``last_input[l]`` = h_l,
  ``last_middle[l]`` = h_l + a_l and ``last_output[l]`` = h_{l+1} (the last layer's before the final norm),
  which ``models.logit_lens.margin_attribution`` splits into the two blocks' contributions to the truth margin.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from vrp_bench.capture.hooks import register_all, remove_all


def _first_tensor(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple) else value


def _input_tensor(args: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


class ResidualStreamCapture:
    """Hooks on decoder ``layers`` and on the ``middles`` (one module per layer whose input is the residual stream
    between the attention and the MLP block) keeping, for the first call of each layer: ``update_norms[l]``
    [batch, sequence] float32 (``||output - input||_2`` per position) and, at the last position, ``last_input[l]``,
    ``last_middle[l]``, ``last_output[l]`` [batch, hidden] float32 (None until layer l has run)."""

    def __init__(self, layers: Sequence[nn.Module], middles: Sequence[nn.Module]) -> None:
        if len(layers) != len(middles):
            raise ValueError(f"one middle site per layer: {len(layers)} layers, {len(middles)} middles")
        self.layers, self.middles = list(layers), list(middles)
        self.update_norms: list[torch.Tensor | None] = []
        self.last_input: list[torch.Tensor | None] = []
        self.last_middle: list[torch.Tensor | None] = []
        self.last_output: list[torch.Tensor | None] = []
        self._inputs: list[torch.Tensor | None] = []
        self._handles: list[Any] = []

    def _first_call(self, index: int) -> bool:
        return self.update_norms[index] is None

    def _keep_input(self, index: int) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
            if self._first_call(index):
                self._inputs[index] = _input_tensor(args, kwargs)

        return hook

    def _keep_middle(self, index: int) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
            if self._first_call(index):
                self.last_middle[index] = _input_tensor(args, kwargs)[:, -1].detach().float().cpu()

        return hook

    def _keep_update(self, index: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            layer_input = self._inputs[index]
            if self._first_call(index) and layer_input is not None:
                layer_output = _first_tensor(output).float()
                self.update_norms[index] = torch.linalg.vector_norm(layer_output - layer_input.float(), dim=-1).cpu()
                self.last_input[index] = layer_input[:, -1].detach().float().cpu()
                self.last_output[index] = layer_output[:, -1].detach().cpu()
                self._inputs[index] = None

        return hook

    def __enter__(self) -> ResidualStreamCapture:
        n = len(self.layers)
        self.update_norms, self.last_input, self.last_middle, self.last_output = ([None] * n for _ in range(4))
        self._inputs = [None] * n
        self._handles = register_all(
            register
            for index, (layer, middle) in enumerate(zip(self.layers, self.middles))
            for register in (partial(layer.register_forward_pre_hook, self._keep_input(index), with_kwargs=True),
                             partial(middle.register_forward_pre_hook, self._keep_middle(index), with_kwargs=True),
                             partial(layer.register_forward_hook, self._keep_update(index))))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        remove_all(self._handles)
        self._handles = []
        self._inputs = []

    def complete(self) -> bool:
        """Whether every layer (and its middle site) ran."""
        records = (self.update_norms, self.last_input, self.last_middle, self.last_output)
        return bool(self.layers) and all(value is not None for record in records for value in record)

    def stacked_update_norms(self) -> torch.Tensor | None:
        """[batch, layers, sequence] of the first call, or None if some layer never ran."""
        return torch.stack(self.update_norms, dim=1) if self.complete() else None

    def stacked_last(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(h_l, h_l + a_l, h_{l+1}) at the last position, each [batch, layers, hidden]; None if incomplete."""
        if not self.complete():
            return None
        return tuple(torch.stack(record, dim=1) for record in (self.last_input, self.last_middle, self.last_output))
