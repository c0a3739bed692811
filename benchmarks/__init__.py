"""VRP-Bench's speed and memory benchmarks (run from the repository root: ``python -m benchmarks [--quick]``).

Not part of the package: they build random models of the real architectures (``shapes``), measure the capture
overhead (``capture_overhead``), VRP-Bench against lmms-eval (``harness``) and scaling (``scaling``), and
``run_all`` prints the tables. Only ratios measured side by side in one run are meaningful.
"""
