"""The tiny zoo's models: ``tiny_<family>``, registered on import.

For each family with a recipe (``RECIPES``) and a checkpoint shipped in ``CHECKPOINTS/<family>``,
``tiny_<family>`` is the family's transformers backend with that checkpoint as its default
``pretrained``: the same loading code as ``<family>``, another default. ``vrp_bench.builtins`` imports
this module; the backend itself (``vrp_bench.models``) never imports the zoo.
"""

from __future__ import annotations

from vrp_bench.models.families import FAMILIES
from vrp_bench.models.hf_vlm import register_hf_model
from vrp_bench.zoo import CHECKPOINTS
from vrp_bench.zoo.build import IMAGE_SIZE
from vrp_bench.zoo.recipes import RECIPES

for _family in RECIPES:
    _checkpoint = CHECKPOINTS / _family
    if (_checkpoint / "config.json").is_file():
        register_hf_model(
            f"tiny_{_family}",
            FAMILIES[_family],
            str(_checkpoint),
            f"tiny trained {_family} (~1M parameters, {IMAGE_SIZE} px, shipped; trained on vrp_shapes)",
            image_size=IMAGE_SIZE,
        )
