"""Reading per-sample records (the JSON lines a run writes): which were scored, their keys, signals and labels.

A record is ``evaluator.SampleRecord.to_json()`` as read back from disk: ``doc_id``, ``correct``,
``error``, ``signals`` (name -> value, None where a signal does not apply), the metric values, ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vrp_bench.signals.catalogue import SIGNALS
from vrp_bench.signals.spec import SignalSpec

WELL_COVERED = 0.9
"""A signal joins the fusion and competes for best signal when it is defined for at least this share of the
scored samples."""


def scored_records(samples: Mapping[str, Sequence[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Per task, the records that were scored (no error), in order."""
    return {task: [r for r in records if r.get("error") is None and r.get("correct") is not None]
            for task, records in samples.items()}


def concatenated_records(samples: Mapping[str, Sequence[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every scored record of the run in ``scored_records`` order, and the task of each."""
    per_task = scored_records(samples)
    return ([r for records in per_task.values() for r in records],
            [task for task, records in per_task.items() for _ in records])


def sample_key(task: str, doc_id: int) -> str:
    """A sample's id, unique across the tasks of a run: ``task/doc_id``."""
    return f"{task}/{doc_id}"


def sample_keys(samples: Mapping[str, Sequence[dict[str, Any]]]) -> list[str]:
    """``sample_key`` of every scored record, in ``concatenated_records`` order."""
    return [sample_key(task, r["doc_id"]) for task, records in scored_records(samples).items() for r in records]


def boxes_answer_independent(metadata: Mapping[str, Any] | None) -> bool:
    """Whether a task's YAML metadata declares its ground-truth boxes independent of the answer (default: no)."""
    return bool((metadata or {}).get("boxes_answer_independent", False))


def is_reliability_signal(spec: SignalSpec, answer_independent_boxes: bool) -> bool:
    """A scored signal that reads no reference: none at all, or boxes that do not depend on the answer."""
    return spec.reference is None or (spec.reference == "boxes" and answer_independent_boxes)


def scalar_signal_names(records: Sequence[dict[str, Any]], oriented: bool = True) -> list[str]:
    """Registered scalar signals that at least one record carries (registry order): the oriented ones (those a
    reliability score is read from), or all of them."""
    present = {name for r in records for name, value in (r.get("signals") or {}).items() if value is not None}
    return [name for name, spec in SIGNALS.items()
            if (spec.orientation is not None or not oriented) and not spec.per_layer and name in present]


def signal_values(records: Sequence[dict[str, Any]], name: str) -> list[float | None]:
    """One value per record (None where the signal is absent)."""
    values = [(r.get("signals") or {}).get(name) for r in records]
    return [None if v is None else float(v) for v in values]


def correctness(records: Sequence[dict[str, Any]]) -> np.ndarray:
    return np.array([bool(r["correct"]) for r in records], dtype=int)


def per_layer_table(records: Sequence[dict[str, Any]], name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(positions of the records with a complete per-layer ``name``, their values [n, layers]); None if none."""
    rows = [(r.get("signals") or {}).get(name) for r in records]
    usable = [i for i, row in enumerate(rows) if row is not None and None not in row]
    if not usable:
        return None
    return np.array(usable), np.array([rows[i] for i in usable], dtype=float)


def well_covered(records: Sequence[dict[str, Any]], names: Sequence[str]) -> list[str]:
    """The ``names`` defined for at least ``WELL_COVERED`` of ``records``."""
    return [n for n in names if sum(v is not None for v in signal_values(records, n)) >= WELL_COVERED * len(records)]


def reliability_view(
    per_task: Mapping[str, Sequence[dict[str, Any]]], metadata: Mapping[str, Mapping[str, Any]],
) -> dict[str, list[dict[str, Any]]]:
    """Per task, the records with only the signals that are reliability signals there
    (``is_reliability_signal``), plus the labels their calibration is scored against
    (``SignalSpec.calibrated_against``): what ranking, fusion and best-signal selection may read."""
    view = {}
    for task, records in per_task.items():
        independent = boxes_answer_independent(metadata.get(task))
        reliable = [spec for _, spec in SIGNALS.items() if is_reliability_signal(spec, independent)]
        keep = {spec.name for spec in reliable} | {spec.calibrated_against for spec in reliable
                                                   if spec.calibrated_against is not None}
        view[task] = [{**r, "signals": {k: v for k, v in (r.get("signals") or {}).items() if k in keep}}
                      for r in records]
    return view
