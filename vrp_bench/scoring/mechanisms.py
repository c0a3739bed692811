"""The report's ``mechanisms`` section: the study's mechanistic analyses aggregated over a run's samples.

- ``margin_attribution``: how much of the logit-lens truth margin's growth the MLP blocks account for (the study:
  LLaVA 82.1%, PaliGemma 47.6%, Qwen2-VL 68.2%), from each sample's per-layer block contributions
  (``margin_attention_layers``, ``margin_mlp_layers``; ``models.logit_lens``). Aggregated as a ratio of sums,
  share = sum_i sum_l mlp_il / sum_i sum_l (attention_il + mlp_il), so samples with more margin growth weigh more
  (the per-sample ``mlp_share`` signal, the share of the margin's movement in absolute contributions, is in
  ``diagnostics`` by correct vs incorrect); for all, correct and
  incorrect samples, with a percentile bootstrap CI over samples (stratified by task); per decoder layer the mean
  contributions, and the peak layers of those means. It reads the reference answer: descriptive, never ranked.
- ``forcing``: per position (``image``: mean over the image tokens; ``last``: the last prompt position), the mean
  residual-update norm per decoder layer, the layer where that mean profile rises most (``forcing_layer``) and its
  late forcing (mean of the last ``late_fraction`` of layers over the layers before) with a bootstrap CI.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from typing import Any

import numpy as np

from vrp_bench.scoring.bootstrap import percentile_ci, resample_weights
from vrp_bench.scoring.records import correctness, per_layer_table
from vrp_bench.scoring.settings import ScoringSettings
from vrp_bench.signals.inputs import SignalSettings
from vrp_bench.signals.residual import forcing_layer, late_window, peak_layer

FORCING_PROFILES = {"image": "residual_update_image_layers", "last": "residual_update_last_layers"}


def ratio_of_sums(numerator: np.ndarray, denominator: np.ndarray, tasks: np.ndarray, settings: ScoringSettings,
                  undefined: str = "the denominator sums to <= 0") -> dict[str, Any]:
    """sum(numerator) / sum(denominator) over samples, with a percentile bootstrap CI over samples (stratified by
    ``tasks``); None with the reason ``undefined`` (a resample: NaN) where the denominator's sum is <= 0."""
    if len(numerator) == 0:
        return {"value": None, "ci": None, "n": 0, "reason": "no samples"}
    total = float(denominator.sum())
    if total <= 0:
        return {"value": None, "ci": None, "n": int(len(numerator)), "reason": undefined}
    weights = resample_weights(len(numerator), settings.n_resamples, settings.seed, strata=tasks)
    tops, bottoms = weights @ numerator, weights @ denominator
    ci = percentile_ci(np.where(bottoms > 0, tops / np.where(bottoms > 0, bottoms, 1.0), np.nan),
                       settings.options().confidence)
    return {"value": float(numerator.sum()) / total, "ci": ci.interval, "n": int(len(numerator)), "reason": ci.reason}


ATTRIBUTION = ("margin_attention_layers", "margin_mlp_layers", "margin_unattributed_layers")


def margin_attribution(records: Sequence[dict[str, Any]], tasks: Sequence[str],
                       settings: ScoringSettings) -> dict[str, Any]:
    """The ``margin_attribution`` entry (module docstring), over the samples that have all of ``ATTRIBUTION``."""
    tables = [per_layer_table(records, name) for name in ATTRIBUTION]
    if any(table is None for table in tables):
        return {"reason": "no sample has the truth margin's block contributions (they need the reference answer's "
                          "first token and a model that captures the residual stream)"}
    kept = reduce(np.intersect1d, [usable for usable, _ in tables])
    attention_values, mlp_values, unattributed_values = (values[np.searchsorted(usable, kept)]
                                                         for usable, values in tables)
    correct = correctness(records)[kept].astype(bool)
    strata = np.asarray(tasks)[kept]
    grown = attention_values.sum(1) + mlp_values.sum(1)

    def share(mask: np.ndarray) -> dict[str, Any]:
        return ratio_of_sums(mlp_values.sum(1)[mask], grown[mask], strata[mask], settings,
                             undefined="the blocks' summed contribution is not a growth (<= 0)")

    per_layer = [{"layer": layer, "attention": float(attention_values[:, layer].mean()),
                  "mlp": float(mlp_values[:, layer].mean()), "unattributed": float(unattributed_values[:, layer].mean())}
                 for layer in range(attention_values.shape[1])]
    return {
        "n": int(len(kept)),
        "mlp_share_of_growth": share(np.ones(len(kept), dtype=bool)),
        "mlp_share_of_growth_correct": share(correct),
        "mlp_share_of_growth_incorrect": share(~correct),
        "per_layer": per_layer,
        "peak_layers": {"attention": peak_layer(attention_values.mean(0)), "mlp": peak_layer(mlp_values.mean(0)),
                        "blocks": peak_layer((attention_values + mlp_values).mean(0))},
        "reason": None,
    }


def forcing(records: Sequence[dict[str, Any]], tasks: Sequence[str], settings: ScoringSettings) -> dict[str, Any]:
    """The ``forcing`` entry (module docstring), per position; "late" as in the per-sample ``late_forcing`` (the
    default ``SignalSettings``, which every run records)."""
    section: dict[str, Any] = {}
    fraction = SignalSettings().late_fraction
    for position, name in FORCING_PROFILES.items():
        table = per_layer_table(records, name)
        if table is None:
            section[position] = {"reason": f"no sample has {name} (a model that captures the residual stream)"}
            continue
        usable, norms = table
        n_layers = norms.shape[1]
        profile = norms.mean(0)
        entry: dict[str, Any] = {"n": int(len(usable)), "mean_profile": profile.tolist(),
                                 "forcing_layer": forcing_layer(profile), "late_forcing": None, "reason": None}
        if n_layers >= 2:
            first_late = n_layers - late_window(n_layers, fraction)
            entry["late_forcing"] = ratio_of_sums(norms[:, first_late:].mean(1), norms[:, :first_late].mean(1),
                                                  np.asarray(tasks)[usable], settings)
        section[position] = entry
    return section


def mechanisms(records: Sequence[dict[str, Any]], tasks: Sequence[str], settings: ScoringSettings) -> dict[str, Any]:
    """The report's ``mechanisms`` section (module docstring) over scored ``records`` of ``tasks``."""
    return {"margin_attribution": margin_attribution(records, tasks, settings),
            "forcing": forcing(records, tasks, settings)}
