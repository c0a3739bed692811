"""Dataset generators shipped with VRP-Bench.

``vrp_shapes`` generates the synthetic grounded VQA docs; ``export`` (imports HF ``datasets``)
writes, reads and verifies them as parquet splits.
"""

from vrp_bench.datasets.vrp_shapes import (
    ANSWERS,
    CAPTION_QUESTION,
    COLORS,
    QUESTION_SETS,
    QUESTION_TYPES,
    SHAPES,
    VOCABULARY,
    caption,
    generate_docs,
    scene_signature,
)

__all__ = [
    "ANSWERS",
    "CAPTION_QUESTION",
    "COLORS",
    "QUESTION_SETS",
    "QUESTION_TYPES",
    "SHAPES",
    "VOCABULARY",
    "caption",
    "generate_docs",
    "scene_signature",
]
