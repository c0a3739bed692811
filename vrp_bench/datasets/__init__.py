"""Dataset generators shipped with VRP-Bench.

``vrp_shapes`` generates the synthetic grounded VQA docs; ``export`` (imports HF ``datasets``)
writes, reads and verifies them as parquet splits.
"""

from vrp_bench.datasets.vrp_shapes import (
    ANSWERS,
    COLORS,
    QUESTION_SETS,
    QUESTION_TYPES,
    SHAPES,
    VOCABULARY,
    generate_docs,
    scene_signature,
)

__all__ = [
    "ANSWERS",
    "COLORS",
    "QUESTION_SETS",
    "QUESTION_TYPES",
    "SHAPES",
    "VOCABULARY",
    "generate_docs",
    "scene_signature",
]
