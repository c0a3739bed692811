"""Reliability signals: pure numpy functions on one sample's captured arrays.

``Traces`` (model code) + what the doc knows -> ``inputs.SignalInputs`` -> ``compute.compute_signals`` -> a flat
JSON-ready dict -> scoring. Homes: ``spec`` (what a signal is), ``catalogue`` (the ``SIGNALS`` registry and
every built-in signal, registered where the registry is defined), ``inputs`` (a sample's inputs and the
quantities signals share), ``compute`` (the loop), and the array functions by concept (``structural``,
``grounding``, ``generation``, ``consistency``). Import what you use from its module: this package's
``__init__`` imports nothing.
"""
