"""The model interface every backend implements, and the model registry.

A model is built from ``--model_args`` (``key=value`` pairs, validated against the constructor's
keyword arguments) and answers batches of ``Request`` objects with ``Response`` objects, one per
request, in order. Register a model with ``@register_model("name")``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from vrp_bench.api.errors import UsageError
from vrp_bench.api.instance import OptionScore, Request, Response
from vrp_bench.api.registry import Registry, suggest

MODELS: Registry[type["VLM"]] = Registry("model", listing="vrp-bench models")


def register_model(name: str):
    """Class decorator: make a ``VLM`` subclass available as ``--model name``."""

    def add(cls: type[VLM]) -> type[VLM]:
        cls.name = name
        return MODELS.register(name)(cls)

    return add


class VLM(ABC):
    """A vision-language model under evaluation.

    Subclasses take their ``--model_args`` as keyword arguments of ``__init__`` (with defaults),
    set ``description`` (one line for ``vrp-bench models``) and implement ``generate``.
    ``prompt_keys`` lists the keys looked up, in order, in a task's ``lmms_eval_specific_kwargs``
    (after ``default``); it defaults to the registered name.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    image_size: ClassVar[int | None] = None
    """The image resolution (px) the model was trained for, when it suits only that one (the tiny zoo: 64): tasks
    that declare another (``metadata: {image_size: N}``) are skipped by ``--tasks all`` and wildcards."""

    @property
    def prompt_keys(self) -> tuple[str, ...]:
        return (self.name,)

    @property
    def n_parameters(self) -> int | None:
        """How many weights the model computes with (None: not a weight-based model); it sizes the CPU threads."""
        return None

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> list[Response]:
        """Answer each request; a sample that fails gets ``Response.failed(reason)``."""

    def loglikelihood(self, requests: Sequence[Request], options: Sequence[str]) -> list[OptionScore]:
        """Score ``options[i]`` as the answer to ``requests[i]`` (same length; ``multiple_choice`` tasks and
        lmms-eval's loglikelihood requests). Models that cannot score text do not override this."""
        raise UsageError(f"model {self.name!r} cannot score answer options (loglikelihood), which multiple_choice "
                         "tasks need; use a transformers model")

    def describe(self) -> dict[str, Any]:
        """Facts about the loaded model recorded in the report (checkpoint, dtype, fingerprint)."""
        return {}

    @classmethod
    def check_args(cls, model_args: dict[str, Any]) -> None:
        """Reject unknown or missing ``--model_args`` keys (cheap: nothing is loaded)."""
        parameters = inspect.signature(cls.__init__).parameters
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        # named keyword parameters only: an inherited object.__init__(*args, **kwargs) takes no model_args
        accepted = [name for name, p in parameters.items() if p.kind in named and name not in ("self", "device")]
        for key in model_args:
            if key not in accepted:
                listing = ", ".join(accepted) or "none"
                raise UsageError(
                    f"model {cls.name!r} has no model_arg {key!r}{suggest(key, accepted)}; accepted: {listing}"
                )
        missing = [p for p in accepted if parameters[p].default is inspect.Parameter.empty and p not in model_args]
        if missing:
            raise UsageError(f"model {cls.name!r} needs --model_args {','.join(f'{m}=...' for m in missing)}")

    @classmethod
    def check_device(cls, device: str | None) -> None:
        """Reject a ``--device`` this machine does not have (cheap: nothing is loaded); models that place no
        weights accept any."""

    @classmethod
    def from_args(cls, model_args: dict[str, Any], device: str | None = None) -> "VLM":
        """Build the model from parsed ``--model_args`` (a ``device`` parameter receives ``--device``)."""
        cls.check_args(model_args)
        kwargs = dict(model_args)
        if "device" in inspect.signature(cls.__init__).parameters:
            kwargs["device"] = device
        return cls(**kwargs)
