"""``SignalSpec``: what one key of the per-sample signal dict means (the ``SIGNALS`` catalogue holds one each).

A spec says how to compute its key from a sample's ``SignalInputs`` and how to read it: its orientation
for scoring, the input fields it needs (missing ones make the value None), whether it is a
per-layer list and whether it is a probability (ECE / Brier). Per-layer keys are their own
entries (``per_layer=True``) with the orientation of their scalar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from vrp_bench.signals.inputs import INPUT_FIELDS, SignalInputs

ComputeFn = Callable[[SignalInputs], Any]
Reference = Literal["target", "boxes"]
REFERENCES: tuple[Reference, ...] = ("target", "boxes")


@dataclass(frozen=True)
class SignalSpec:
    """What one signal key means.

    ``orientation``: +1 if higher means more likely correct, -1 if lower does (for attention
    structure: under the Attention-Confidence Assumption, the hypothesis the benchmark tests);
    None for descriptive keys that are not a reliability score (scoring skips them).
    ``needs``: the ``SignalInputs`` fields read (``Traces`` fields, ``image_size``, ``boxes``, ``target``);
    when one is None or empty the value is None.
    ``reference``: what of the reference answer the value reads: "target" (the answer itself, e.g. the
    logit-lens truth margin), "boxes" (the task's ground-truth boxes, which reveal the answer wherever they
    depend on it: a box exists only for a "yes", one box per counted object) or None. A signal that reads
    the reference is a diagnostic, never a reliability signal: it is shown by correct vs incorrect and
    never ranked, fused or used in reliability verdicts; "boxes" signals are scored as reliability signals
    only on tasks whose YAML metadata declares ``boxes_answer_independent: true``.
    ``calibrated_against``: for a probability, the per-sample signal holding the correctness it
    predicts, when that is not the greedy answer's (e.g. ``sc_majority_correct`` for ``sc_agreement``).
    ``compute``: (inputs) -> a JSON-ready value.
    """

    name: str
    orientation: int | None
    needs: tuple[str, ...]
    per_layer: bool
    probability: bool
    description: str
    compute: ComputeFn
    reference: Reference | None = None
    calibrated_against: str | None = None

    def __post_init__(self) -> None:
        if self.orientation not in (1, -1, None):
            raise ValueError(f"signal {self.name!r}: orientation must be +1, -1 or None")
        if self.reference not in (*REFERENCES, None):
            raise ValueError(f"signal {self.name!r}: reference must be one of {REFERENCES} or None")
        unknown = [need for need in self.needs if need not in INPUT_FIELDS]
        if unknown:
            raise ValueError(f"signal {self.name!r} needs {unknown}, which no sample has; inputs: {INPUT_FIELDS}")
