"""Model backends. Importing this package registers every built-in model."""

from vrp_bench.models import constant  # noqa: F401
