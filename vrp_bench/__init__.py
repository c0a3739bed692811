"""VRP-Bench: does a vision-language model's reliability signal predict whether its answer is right?

``vrp_bench.evaluate(model, tasks, ...)`` runs a model on tasks and returns the scored, validated report
(``vrp_bench.run``); it is imported on first use, so ``import vrp_bench`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

_LAZY = {"evaluate": "vrp_bench.run", "Evaluation": "vrp_bench.run"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vrp_bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
