"""Removable captures of a model's internals during generation, and removable ablations (torch only).

Captures receive plain modules and say where they attach (``Site``); they never import model or
task code. Each is a context manager that restores the model exactly on exit, also on errors.
"""

from vrp_bench.capture.ablation import ImageTokenMask, UnitAblation, UnitStatistics, choose_units
from vrp_bench.capture.attention import AttentionCapture, Site
from vrp_bench.capture.hidden_states import LastPositionCapture
from vrp_bench.capture.residual_stream import ResidualStreamCapture

__all__ = [
    "AttentionCapture", "ImageTokenMask", "LastPositionCapture", "ResidualStreamCapture", "Site", "UnitAblation",
    "UnitStatistics", "choose_units",
]
