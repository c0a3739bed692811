"""``python -m vrp_bench`` is the ``vrp-bench`` command."""

from vrp_bench.cli import console_main

console_main()
