"""The one place the built-in plugins (the ``--model`` backends) are registered.

``register_builtins`` imports the modules whose import registers them: ``vrp_bench.models`` (the
``constant`` model and each family's hub model) and ``vrp_bench.zoo.models`` (the tiny zoo's
``tiny_<family>`` models). The CLI calls it before it looks a model up; so do tests and scripts that
look up a built-in model by name. (Metrics, aggregations and signals are registered where their
registries are defined.)
"""

from __future__ import annotations


def register_builtins() -> None:
    """Register every built-in model in ``MODELS``. Idempotent: each module is imported, so registers, once."""
    import vrp_bench.models  # noqa: F401  (constant, and each family's hub model)
    import vrp_bench.zoo.models  # noqa: F401  (tiny_<family>)
