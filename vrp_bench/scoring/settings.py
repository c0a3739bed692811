"""``ScoringSettings``: every choice that turns per-sample records into scores (recorded in each report)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # kept light: the CLI reads the defaults at start-up
    from vrp_bench.scoring.heldout import HeldOutDesign
    from vrp_bench.scoring.signal_quality import ScoringOptions

ATTENTION_CLASSIFIERS = ("logistic", "gbt")
"""Kinds of the attention-only classifier (``scoring.attention_classifiers``)."""


@dataclass(frozen=True)
class ScoringSettings:
    """How signals are scored (recorded in the report's config)."""

    seed: int = 0
    n_resamples: int = 1000
    min_samples: int = 10
    probe_kind: str = "logistic"
    probe_folds: int = 5
    probe_last_k: int = 5
    repeats: int = 3
    """Seeds of repeated cross-validation for probes, fusion and attention classifiers (their CIs include
    retraining)."""
    permutations: int = 100
    """Within-task label permutations of the probe / fusion / attention-classifier permutation test."""
    equivalence_margin: float = 0.05
    """"No relation" means a within-task AUROC within 0.5 +/- this (equivalence tests of the verdicts)."""
    alpha: float = 0.05
    """Family-wise level of the verdicts' tests (Holm-corrected across the signals a verdict covers)."""
    attention_classifier: str = "logistic"
    """The attention-only classifier over attention-structure features: "logistic" or "gbt" (gradient-boosted
    trees; about 100x the CPU time of "logistic" under the permutation test: ``scoring.attention_classifiers``)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def options(self) -> ScoringOptions:
        """The options of one signal's scoring (``signal_quality``)."""
        from vrp_bench.scoring.signal_quality import ScoringOptions

        return ScoringOptions(seed=self.seed, n_resamples=self.n_resamples, min_samples=self.min_samples,
                              equivalence_margin=self.equivalence_margin)

    def design(self) -> HeldOutDesign:
        """How often probes and fusion are refitted (``heldout``)."""
        from vrp_bench.scoring.heldout import HeldOutDesign

        return HeldOutDesign(repeats=self.repeats, permutations=self.permutations)
