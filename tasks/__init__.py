"""The task YAMLs shipped with VRP-Bench (installed as the package ``vrp_bench.tasks``)."""
