"""What lmms-eval's ``lmms_eval.models`` entry points load: one ``ModelManifest`` per VRP model.

lmms-eval reads the entry-point group ``lmms_eval.models`` each time ``lmms_eval.models`` is imported; each entry
point must load to a ``ModelManifest`` (or an iterable of them, or a callable returning either). A manifest names
the model (``model_id``, what ``--model`` accepts) and the ``module.Class`` that lmms-eval imports only when that
model is chosen. So this module is cheap on purpose: it imports neither torch nor VRP-Bench's models, and turns any
attribute ``vrp_<name>`` into the manifest of the VRP model ``<name>``, served by the generated class
``VRP_<name>`` of ``vrp_bench.integrations.lmms_eval_models`` (which checks ``<name>`` against VRP's registry).

pyproject.toml lists one entry point per built-in VRP model, named as its lmms-eval model::

    [project.entry-points."lmms_eval.models"]
    vrp_tiny_qwen2_vl = "vrp_bench.integrations.lmms_eval_manifests:vrp_tiny_qwen2_vl"
"""

from __future__ import annotations

from typing import Any

PREFIX = "vrp_"
"""lmms-eval model name = PREFIX + VRP model name (keeps VRP's ``llava``, ``qwen2_vl``, ... apart from lmms-eval's)."""

MODELS_MODULE = "vrp_bench.integrations.lmms_eval_models"


def lmms_name(vrp_name: str) -> str:
    """The lmms-eval ``--model`` name of VRP model ``vrp_name``."""
    return f"{PREFIX}{vrp_name}"


def class_name(vrp_name: str) -> str:
    """The name of the generated lmms-eval class serving VRP model ``vrp_name``."""
    return f"VRP_{vrp_name}"


def manifest(vrp_name: str) -> Any:
    """lmms-eval's ``ModelManifest`` for VRP model ``vrp_name`` (a simple, non-chat model)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=lmms_name(vrp_name), simple_class_path=f"{MODELS_MODULE}.{class_name(vrp_name)}")


def __getattr__(name: str) -> Any:
    if name.startswith(PREFIX) and len(name) > len(PREFIX):
        return manifest(name[len(PREFIX):])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
