"""The built-in models (the ``--model`` backends): their names and default checkpoints, and the one place
they are registered.

``register_builtins`` imports the modules whose import registers them: ``vrp_bench.models`` (the
``constant`` model and each family's hub model) and ``vrp_bench.zoo.models`` (the tiny zoo's
``tiny_<family>`` models). The CLI calls it before it looks a model up; so do tests and scripts that
look up a built-in model by name. (Metrics, aggregations and signals are registered where their
registries are defined.) Those imports take seconds (torch, transformers), so the CLI first checks the
model name and its checkpoint with ``check_builtin_model``, which imports neither.
"""

from __future__ import annotations

from typing import Any

from vrp_bench.api.model import MODELS
from vrp_bench.checkpoint_location import STUDY_CHECKPOINTS, locate


def register_builtins() -> None:
    """Register every built-in model in ``MODELS``. Idempotent: each module is imported, so registers, once."""
    import vrp_bench.models  # noqa: F401  (constant, and each family's hub model)
    import vrp_bench.zoo.models  # noqa: F401  (tiny_<family>)


def builtin_checkpoints() -> dict[str, str | None]:
    """What ``register_builtins`` registers, known without importing torch: each model's name -> its default
    checkpoint (``constant``: none; each family: its hub id; ``tiny_<family>``, for each tiny checkpoint that ships:
    its folder)."""
    from vrp_bench.zoo import CHECKPOINTS

    tiny = {f"tiny_{family}": str(CHECKPOINTS / family) for family in STUDY_CHECKPOINTS
            if (CHECKPOINTS / family / "config.json").is_file()}
    return {"constant": None, **STUDY_CHECKPOINTS, **tiny}


def check_builtin_model(name: str, model_args: dict[str, Any]) -> None:
    """Before torch is imported: a one-line ``UsageError`` (with suggestions) unless ``name`` is a built-in model
    or one registered in this process, and, for a built-in transformers model, unless its checkpoint (the
    ``pretrained`` model arg, or its default) can be had (``checkpoint_location.locate``)."""
    checkpoints = builtin_checkpoints()
    if name not in checkpoints and name not in MODELS:
        raise MODELS.unknown(name, [*checkpoints, *MODELS])
    default = checkpoints.get(name)
    if default is not None:
        locate(str(model_args.get("pretrained") or default), model_args.get("revision"))
