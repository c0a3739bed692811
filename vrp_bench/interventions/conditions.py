"""What an ablation run destroys: its settings and the list of conditions they expand to.

A *units* condition destroys a fraction p of one decoder layer's units: residual-stream dimensions
(the layer's output) or MLP intermediate neurons (the input of its down projection), chosen at random
(seeded; the control) or ranked by the hidden-state probe's weights, and replaced by zero, the dataset
mean, or Gaussian noise matched to the activation scale. p = 0 is run once per layer: it must reproduce
the baseline answers exactly.

A *patches* condition blanks (zeroes the input embeddings of) the image tokens that received the
top / bottom / a random q of the decoder's attention in the unablated pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from vrp_bench.api.errors import UsageError

DEFAULT_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
SPACES = ("residual", "mlp")
METHODS = ("zero", "mean", "noise")
UNIT_SELECTIONS = ("random", "probe")
PATCH_SELECTIONS = ("top", "bottom", "random")
LayerSpec = int | Literal["probe", "all"]


@dataclass(frozen=True)
class AblationSettings:
    """How to ablate (the ``vrp-bench ablate`` flags), recorded in the report's ablation section."""

    layer: LayerSpec = "probe"
    space: str = "residual"
    method: str = "zero"
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    seeds: int = 3
    selections: tuple[str, ...] = UNIT_SELECTIONS
    patch_fraction: float = 0.3
    calibration_docs: int = 64
    best_signals: int = 3

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise UsageError(f"--ablation_space {self.space!r}: choose from {', '.join(SPACES)}")
        if self.method not in METHODS:
            raise UsageError(f"--ablation_method {self.method!r}: choose from {', '.join(METHODS)}")
        if not self.fractions or any(not 0.0 <= p <= 1.0 for p in self.fractions):
            raise UsageError(f"--fractions {list(self.fractions)}: give fractions between 0 and 1")
        if len({round(p, 2) for p in self.fractions}) != len(self.fractions):
            raise UsageError(f"--fractions {list(self.fractions)}: give distinct fractions at least 0.01 apart")
        unknown = [s for s in self.selections if s not in UNIT_SELECTIONS]
        if unknown or not self.selections:
            raise UsageError(f"--ablation_units {','.join(self.selections)}: choose from {', '.join(UNIT_SELECTIONS)}")
        if self.seeds < 1:
            raise UsageError(f"--ablation_seeds {self.seeds}: need at least 1 random seed")
        if not 0.0 <= self.patch_fraction < 1.0:
            raise UsageError(f"--patch_fraction {self.patch_fraction}: give q in [0, 1) (0 skips patch masking)")
        if self.calibration_docs < 1:
            raise UsageError(f"--calibration_docs {self.calibration_docs}: need at least 1 doc")
        if isinstance(self.layer, str) and self.layer not in ("probe", "all"):
            raise UsageError(f"--layer {self.layer!r}: give a layer index, 'probe' or 'all'")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "fractions": sorted(self.fractions), "selections": list(self.selections)}


@dataclass(frozen=True)
class Condition:
    """One intervention applied to every doc.

    ``kind`` "units": ``layer``, ``space``, ``method``, ``selection`` ("random" | "probe" | "none" for p = 0),
    ``fraction`` p and ``seed`` (random choice and noise). ``kind`` "patches": ``selection`` ("top" |
    "bottom" | "random"), ``fraction`` q and ``seed`` (random choice).
    """

    kind: Literal["units", "patches"]
    selection: str
    fraction: float
    seed: int = 0
    layer: int | None = None
    space: str | None = None
    method: str | None = None

    @property
    def id(self) -> str:
        """A readable unique name, e.g. ``L2/residual/zero/random-s1/p0.50`` or ``patches/top/q0.30``."""
        chosen = f"{self.selection}-s{self.seed}" if self.selection == "random" else self.selection
        if self.kind == "patches":
            return f"patches/{chosen}/q{self.fraction:.2f}"
        if self.fraction == 0.0:
            return f"L{self.layer}/{self.space}/{self.method}/p0.00"
        return f"L{self.layer}/{self.space}/{self.method}/{chosen}/p{self.fraction:.2f}"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **asdict(self)}


def most_chosen_layer(chosen: Sequence[int]) -> int | None:
    """The layer chosen most often (the nested probe's choice per outer fold), the lowest on ties: what
    ``--layer probe`` ablates; None when nothing was chosen."""
    counts = Counter(chosen)
    return min(counts, key=lambda layer: (-counts[layer], layer)) if counts else None


def resolve_layers(layer: LayerSpec, n_layers: int, probe_layer: int | None, space: str) -> list[int]:
    """The layers to ablate, numbered like HF's ``output_hidden_states`` (0: the embedding output, i: the output
    of decoder layer i - 1, ``n_layers``: the last, after the final norm): the probe's layer, one given index,
    or all of them. The ``mlp`` space of layer i is decoder layer i - 1's MLP, which writes hidden state i, so
    it starts at 1."""
    first = 1 if space == "mlp" else 0
    if layer == "all":
        return list(range(first, n_layers + 1))
    if layer == "probe":
        if probe_layer is None:
            raise UsageError("the hidden-state probe could not select a layer for this run; pass --layer N or all")
        if probe_layer < first:
            raise UsageError("the probe chose hidden state 0 (the embedding output), which has no MLP units; "
                             "pass --ablation_space residual, or --layer N")
        return [probe_layer]
    if not first <= layer <= n_layers:
        raise UsageError(f"--layer {layer}: the model's {space} layers are {first}..{n_layers} "
                         "(numbered like Hugging Face's output_hidden_states: 0 = the embedding output)")
    return [layer]


def build_conditions(settings: AblationSettings, layers: list[int]) -> list[Condition]:
    """Every condition of a run, in the order they are applied."""
    conditions: list[Condition] = []
    common = {"space": settings.space, "method": settings.method}
    for layer in layers:
        conditions.append(Condition("units", "none", 0.0, layer=layer, **common))
        for fraction in sorted(p for p in settings.fractions if p > 0):
            if "random" in settings.selections:
                conditions += [Condition("units", "random", fraction, seed, layer, **common)
                               for seed in range(settings.seeds)]
            if "probe" in settings.selections:
                conditions.append(Condition("units", "probe", fraction, 0, layer, **common))
    if settings.patch_fraction > 0:
        q = settings.patch_fraction
        conditions += [Condition("patches", "top", q), Condition("patches", "bottom", q)]
        conditions += [Condition("patches", "random", q, seed) for seed in range(settings.seeds)]
    return conditions
