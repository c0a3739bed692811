"""Model backends. Importing this package registers ``constant`` and each family's hub model.

The tiny zoo's ``tiny_<family>`` models are registered by ``vrp_bench.zoo.models``;
``vrp_bench.builtins.register_builtins`` registers both. Nothing here imports ``vrp_bench.zoo``.
"""

from vrp_bench.models import constant  # noqa: F401
from vrp_bench.models import hf_vlm  # noqa: F401
