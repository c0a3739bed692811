"""``Intervenable``: what a backend offers so that its internals can be intervened on.

``vrp_bench.interventions`` reaches a model only through this interface (plus ``VLM.generate``), so any
backend that implements it can be ablated: how many decoder layers it has, where a layer's units live
(``UnitSite``), where a batch's image tokens sit (``ImageTokenLayout``), how it splits requests into forward
passes, a prompt-only forward pass, and ``generate`` with removable hooks active and self-consistency
sampling switched off per call. Hooks are context managers (``vrp_bench.capture``) entered around the call
and always left, also on errors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

from vrp_bench.api.instance import Request, Response

UnitSpace = Literal["residual", "mlp"]
"""``residual``: the dimensions of a hidden state; ``mlp``: the intermediate neurons of the MLP that writes it.

Layers are numbered like Hugging Face's ``output_hidden_states``: layer i is hidden state i (0: the embedding
output, i: decoder layer i - 1's output, L: the last after the final norm), the layer a hidden-state probe
reports; its ``mlp`` units are decoder layer i - 1's MLP neurons (i >= 1)."""


@dataclass(frozen=True)
class UnitSite:
    """Where the units of one layer in one space live.

    ``module`` (a torch module) holds them in its output (``where="output"``) or first input (``"input"``);
    ``size`` is their number; ``readout`` is the [hidden, size] weight that writes them into the residual
    stream (the MLP's down projection), None when the units are residual dimensions themselves.
    """

    module: Any
    where: Literal["output", "input"]
    size: int
    readout: Any | None = None


@dataclass(frozen=True)
class ImageTokenLayout:
    """Where a batch's image tokens sit in its padded prompt, as one forward pass sees it.

    ``spans[b]`` (an integer tensor) lists the prompt positions of request b's image tokens (all images, in
    order), the first ``rows x cols`` of them forming its patch grid row-major; ``prompt_length`` is the
    padded prompt's length; ``embedding_site`` is the module whose first input holds the input embeddings
    (the first decoder layer), where image tokens are blanked.
    """

    spans: list[Any]
    prompt_length: int
    embedding_site: Any


class Intervenable(ABC):
    """A backend whose answers can be recomputed under removable interventions."""

    @property
    @abstractmethod
    def captures(self) -> bool:
        """Whether responses carry ``Traces`` (interventions compare first-token distributions and attention)."""

    @property
    @abstractmethod
    def n_layers(self) -> int:
        """Number of decoder layers L (hidden states 0..L)."""

    @abstractmethod
    def unit_site(self, layer: int, space: UnitSpace) -> UnitSite:
        """Where the units of ``space`` of layer ``layer`` (hidden-state numbering, see ``UnitSpace``) live."""

    @abstractmethod
    def image_token_layout(self, requests: Sequence[Request]) -> ImageTokenLayout:
        """The image-token layout of ``requests`` answered as one batch (one of ``batches``)."""

    @abstractmethod
    def batches(self, requests: Sequence[Request], size: int) -> list[list[int]]:
        """Indices of ``requests`` grouped as the backend answers them: each group one forward pass of at
        most ``size`` requests, in order."""

    @abstractmethod
    def prefill(self, requests: Sequence[Request], hooks: Sequence[AbstractContextManager] = ()) -> None:
        """One forward pass over the prompts of ``requests`` (nothing generated), with ``hooks`` active."""

    @abstractmethod
    def generate(
        self, requests: Sequence[Request], *, hooks: Sequence[AbstractContextManager] = (),
        self_consistency: bool = True,
    ) -> list[Response]:
        """``VLM.generate`` with ``hooks`` active for the whole call; ``self_consistency=False`` draws no
        self-consistency samples (the other traces are captured as usual)."""
