"""``python -m benchmarks``: every benchmark, one table (``benchmarks.run_all``)."""

from benchmarks.run_all import main

main()
