"""Removable interventions: destroy chosen units of one module's activations, or blank chosen image tokens.

``UnitAblation`` is a context manager around a forward hook. ``where="output"`` replaces units of the
module's output (a decoder layer: dimensions of the residual stream); ``where="input"`` replaces units of
its first input (an MLP's down projection: intermediate neurons). Replacement ``method``:

- ``zero``: the unit is set to 0;
- ``mean``: the unit is set to ``mean[unit]`` (e.g. the dataset's mean activation);
- ``noise``: the unit is set to ``mean[unit] + scale[unit] * N(0, 1)`` (Gaussian noise matched to the
  activation scale), drawn from a generator seeded once per context.

``UnitStatistics`` records the per-unit mean and standard deviation those methods need;
``ImageTokenMask`` zeroes the input embeddings of chosen image tokens (patch masking). Every hook is
always removed on exit, also when the block raises (or is interrupted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeVar

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


Hook = TypeVar("Hook", bound="_ModuleHook")


class _ModuleHook:
    """A forward hook (``where="output"``) or forward pre-hook (``where="input"``) on one module while
    active; subclasses define ``_output_hook`` / ``_input_hook``. Always removed on exit."""

    def __init__(self, module: nn.Module, where: Literal["output", "input"]) -> None:
        self.module, self.where = module, where
        self._handle: Any = None

    def _output_hook(self, module: nn.Module, args: Any, output: Any) -> Any:
        raise NotImplementedError

    def _input_hook(self, module: nn.Module, args: Any) -> Any:
        raise NotImplementedError

    def __enter__(self: Hook) -> Hook:
        if self.where == "output":
            self._handle = self.module.register_forward_hook(self._output_hook)
        else:
            self._handle = self.module.register_forward_pre_hook(self._input_hook)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class UnitAblation(_ModuleHook):
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
        super().__init__(module, where)
        self.method, self.seed = method, seed
        self.units = torch.as_tensor(np.asarray(units, dtype=np.int64))
        self.mean, self.scale = mean, scale
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
        super().__enter__()
        return self


class UnitStatistics(_ModuleHook):
    """Per-unit mean and standard deviation of ``module``'s output (or first input) over every token position
    of every call while active: the dataset statistics that ``mean`` and ``noise`` ablations replace units with.

    Feed it unpadded sequences (one request per call), or padding positions count too.
    """

    def __init__(self, module: nn.Module, where: Literal["output", "input"] = "output") -> None:
        super().__init__(module, where)
        self.count = 0
        self._sum: torch.Tensor | None = None
        self._sum_squares: torch.Tensor | None = None

    def _add(self, hidden: torch.Tensor) -> None:
        flat = hidden.detach().reshape(-1, hidden.shape[-1]).double().cpu()
        if self._sum is None:
            self._sum, self._sum_squares = flat.sum(0), (flat * flat).sum(0)
        else:
            self._sum += flat.sum(0)
            self._sum_squares += (flat * flat).sum(0)
        self.count += flat.shape[0]

    def _output_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        self._add(output[0] if isinstance(output, tuple) else output)

    def _input_hook(self, module: nn.Module, args: Any) -> None:
        self._add(args[0])

    @property
    def mean(self) -> torch.Tensor:
        """[units] float32 mean activation."""
        if self._sum is None:
            raise RuntimeError("UnitStatistics saw no activations")
        return (self._sum / self.count).float()

    @property
    def std(self) -> torch.Tensor:
        """[units] float32 standard deviation (population) of the activation."""
        if self._sum is None or self._sum_squares is None:
            raise RuntimeError("UnitStatistics saw no activations")
        mean = self._sum / self.count
        return (self._sum_squares / self.count - mean * mean).clamp_min(0.0).sqrt().float()


class ImageTokenMask:
    """Zero the input of the first decoder layer at chosen image tokens (their input embeddings, after any
    embedding scaling): a forward pre-hook on that layer.

    ``positions[b]`` lists sequence indices of batch row ``b`` (of the padded prompt). The hook acts on the
    prefill call only (the one whose sequence length equals ``prompt_length``); later calls read those tokens
    from the KV cache, so they stay zeroed for the whole answer. The tokens keep their positions (nothing
    is shifted): they are blanked, not removed, and can still receive attention.
    """

    def __init__(self, first_layer: nn.Module, positions: Sequence[Sequence[int]], prompt_length: int) -> None:
        self.first_layer = first_layer
        self.positions = [torch.as_tensor(np.asarray(p, dtype=np.int64)) for p in positions]
        self.prompt_length = prompt_length
        self.applied = 0
        self._handle: Any = None

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]] | None:
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] != self.prompt_length:
            return None
        if hidden.shape[0] != len(self.positions):
            raise RuntimeError(f"image-token mask built for {len(self.positions)} rows, the batch has {hidden.shape[0]}")
        masked = hidden.clone()
        for row, positions in enumerate(self.positions):
            masked[row, positions.to(hidden.device)] = 0.0
        self.applied += 1
        if args:
            return (masked, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": masked}

    def __enter__(self) -> "ImageTokenMask":
        self.applied = 0
        self._handle = self.first_layer.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
