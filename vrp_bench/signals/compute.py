"""One sample's ``SignalInputs`` -> its flat, JSON-ready signal dict (and the reasons of the signals that failed).

Every signal of the ``SIGNALS`` catalogue (or a chosen few) is computed from the same ``SignalInputs``, so the
quantities several signals share are computed once. A signal whose needed inputs are missing (None or empty)
is None, never 0; one that fails on this sample's data is None with its reason.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from vrp_bench.api.errors import UsageError
from vrp_bench.signals.catalogue import SIGNALS
from vrp_bench.signals.inputs import SignalInputs


@dataclass
class SampleSignals:
    """One sample's signals: ``values`` {name: JSON-ready value or None} and, for each signal that failed on
    this sample (raised, or gave a NaN / infinite number), ``errors`` {name: reason}; its value is None."""

    values: dict[str, Any]
    errors: dict[str, str]


def compute_signals(inputs: SignalInputs, names: Collection[str] | None = None) -> SampleSignals:
    """Every catalogued signal (or only ``names``) of one sample. A signal whose inputs are missing is None
    (inapplicable); one that fails on this sample's data (e.g. an attention map with zero mass) is None with
    the reason in ``errors``, and the others are still computed. A bad setting (``UsageError``) is not a
    property of the sample: it propagates."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, spec in SIGNALS.items():
        if names is not None and name not in names:
            continue
        values[name] = None
        if not all(inputs.present(need) for need in spec.needs):
            continue
        try:
            value = spec.compute(inputs)
        except UsageError:
            raise
        except Exception as error:  # this sample's data, not the run: recorded, counted, never fatal
            errors[name] = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
            continue
        if not _finite(value):
            errors[name] = "not a finite number (NaN or infinite)"
            continue
        values[name] = value
    return SampleSignals(values, errors)


def _finite(value: Any) -> bool:
    """False for a float (or a list holding one) that is NaN or infinite."""
    if isinstance(value, list):
        return all(_finite(item) for item in value)
    return not isinstance(value, float) or np.isfinite(value)
