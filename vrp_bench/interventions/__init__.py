"""Causal interventions on a finished run: ablation sweeps of decoder layers and patch masking.

``conditions`` says what is destroyed, ``runner`` applies each condition to every scored doc (hooks
from ``vrp_bench.capture``, always removed; it needs torch and the model), ``outcomes`` turns the
per-doc records into the report's ``ablation`` section (accuracy change, flip rate, first-token KL,
signal AUROC, robustness AUC, breaking point, bottleneck profile) without the model.
"""

from vrp_bench.interventions.conditions import (
    AblationSettings,
    Condition,
    build_conditions,
)
from vrp_bench.interventions.outcomes import ablation_context, ablation_section

__all__ = ["AblationSettings", "Condition", "ablation_context", "ablation_section", "build_conditions"]
