"""The small core everything else plugs into: tasks, requests, the model interface, registries, metrics."""
