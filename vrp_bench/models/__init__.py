"""Model backends. Importing this package registers every built-in model."""

from vrp_bench.models import constant  # noqa: F401
from vrp_bench.models import hf_vlm  # noqa: F401
