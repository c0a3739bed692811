"""Removable interventions: destroy a chosen set of units of one module's activations.

``UnitAblation`` is a context manager around a forward hook. ``where="output"`` replaces units of the
module's output (a decoder layer: dimensions of the residual stream); ``where="input"`` replaces units of
its first input (an MLP's down projection: intermediate neurons). Replacement ``method``:

- ``zero``: the unit is set to 0;
- ``mean``: the unit is set to ``mean[unit]`` (e.g. the dataset's mean activation);
- ``noise``: the unit is set to ``mean[unit] + scale[unit] * N(0, 1)`` (Gaussian noise matched to the
  activation scale), drawn from a generator seeded once per context.

The hook is always removed on exit, also when the block raises (or is interrupted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

Method = Literal["zero", "mean", "noise"]


def choose_units(size: int, fraction: float, seed: int, ranking: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """round(fraction * size) unit indices: the highest-``ranking`` units (e.g. |probe weight|), else a
    seeded random choice (the control)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    count = int(round(fraction * size))
    if ranking is not None:
        order = np.argsort(-np.asarray(ranking, dtype=float), kind="stable")
        return np.sort(order[:count])
    return np.sort(np.random.default_rng(seed).permutation(size)[:count])


class UnitAblation:
    """Replace ``units`` of ``module``'s output (or first input) while active (``with ablation: ...``)."""

    def __init__(
        self,
        module: nn.Module,
        units: Sequence[int] | np.ndarray,
        method: Method = "zero",
        where: Literal["output", "input"] = "output",
        mean: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        if method in ("mean", "noise") and mean is None:
            raise ValueError(f"method {method!r} needs the units' mean activation")
        if method == "noise" and scale is None:
            raise ValueError("method 'noise' needs the units' activation scale")
        self.module, self.method, self.where, self.seed = module, method, where, seed
        self.units = torch.as_tensor(np.asarray(units, dtype=np.int64))
        self.mean, self.scale = mean, scale
        self._handle: Any = None
        self._generator: torch.Generator | None = None

    def _replace(self, hidden: torch.Tensor) -> torch.Tensor:
        if len(self.units) == 0:
            return hidden
        units = self.units.to(hidden.device)
        shape = (*hidden.shape[:-1], len(units))
        if self.method == "zero":
            values = torch.zeros(shape, dtype=hidden.dtype, device=hidden.device)
        else:
            values = self.mean.to(hidden.device, hidden.dtype)[units].expand(shape)
            if self.method == "noise":
                noise = torch.randn(shape, generator=self._generator, dtype=torch.float32).to(hidden.device, hidden.dtype)
                values = values + noise * self.scale.to(hidden.device, hidden.dtype)[units]
        replaced = hidden.clone()
        replaced[..., units] = values
        return replaced

    def _output_hook(self, module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (self._replace(output[0]), *output[1:])
        return self._replace(output)

    def _input_hook(self, module: nn.Module, args: Any) -> Any:
        return (self._replace(args[0]), *args[1:])

    def __enter__(self) -> "UnitAblation":
        self._generator = torch.Generator().manual_seed(self.seed)
        if self.where == "output":
            self._handle = self.module.register_forward_hook(self._output_hook)
        else:
            self._handle = self.module.register_forward_pre_hook(self._input_hook)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
