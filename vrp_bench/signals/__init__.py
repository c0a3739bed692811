"""Reliability signals: pure numpy functions on one sample's captured arrays.

capture (model code) -> ``SampleCapture`` -> ``compute_signals`` -> flat JSON-ready dict -> scoring.
Each signal is a function in a concept module (structural, grounding, generation, consistency)
plus one ``SIGNALS`` entry (registered in ``compute``) saying what it reads and how it is oriented.
"""

from vrp_bench.signals.compute import SampleCapture, SampleSignals, SignalSettings, compute_signals
from vrp_bench.signals.registry import SIGNALS, SignalSpec

__all__ = ["SIGNALS", "SampleCapture", "SampleSignals", "SignalSettings", "SignalSpec", "compute_signals"]
