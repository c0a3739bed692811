"""Run the ablation conditions of a finished run: every scored doc again, once per condition.

For each batch the unablated model answers first (the *reference*: its answers must equal the
baseline run's, its first-token distribution is what divergences are measured from, and its
decoder attention picks the image tokens for patch masking); then each condition answers with its
removable hook attached. Self-consistency sampling is off under ablation (it would multiply the cost
by K); every other signal is recomputed. Each condition's outcome per doc becomes one JSON record;
``outcomes.ablation_section`` turns them into the report's ``ablation`` section.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vrp_bench.api.errors import UsageError
from vrp_bench.api.instance import Request, Response
from vrp_bench.api.interventions import (
    ImageTokenLayout,
    Intervenable,
    UnitSite,
    UnitSpace,
)
from vrp_bench.api.model import VLM
from vrp_bench.api.task import DocError, Task
from vrp_bench.api.traces import LAST_PROMPT, SELF_CONSISTENCY_FIELDS
from vrp_bench.capture import ImageTokenMask, UnitAblation, UnitStatistics, choose_units
from vrp_bench.evaluator import Progress, RunResult, SampleRecord, score_record
from vrp_bench.interventions.conditions import (
    AblationSettings,
    Condition,
    build_conditions,
    most_chosen_layer,
    resolve_layers,
)
from vrp_bench.scoring.crossval import fit_probe
from vrp_bench.scoring.probes import ProbeFits, probe_probability
from vrp_bench.scoring.records import sample_key
from vrp_bench.signals.catalogue import SIGNALS


@dataclass
class AblationRun:
    """What ``run_ablation`` did: the conditions, the per-doc records of each, and run-level checks."""

    settings: AblationSettings
    layers: list[int]
    probe_chosen_layers: list[int] | None
    conditions: list[Condition]
    tracked_signals: list[str]
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    reference_mismatches: int = 0
    hooks_removed: bool | None = None

    def context(self) -> dict[str, Any]:
        """Everything ``outcomes.ablation_section`` needs besides the records (JSON-ready; a saved section
        gives it back through ``outcomes.ablation_context``)."""
        return {
            "settings": self.settings.to_json(),
            "layers": self.layers,
            "probe_chosen_layers": self.probe_chosen_layers,
            "conditions": [c.to_json() for c in self.conditions],
            "tracked_signals": self.tracked_signals,
            "calibration": self.calibration,
            "reference_mismatches": self.reference_mismatches,
            "hooks_removed": self.hooks_removed,
        }


def check_ablatable(model: VLM, settings: AblationSettings) -> None:
    """Before any doc is answered: ablations need a backend that implements ``Intervenable`` with capture on
    (they read its layers and traces), and a ``--layer N`` the model has."""
    if not isinstance(model, Intervenable):
        raise UsageError(f"model {model.name!r} has no layers to ablate; use a transformers model (e.g. tiny_llava)")
    if not model.captures:
        raise UsageError(f"model {model.name!r}: ablations need capture=True (drop capture=false from --model_args)")
    if isinstance(settings.layer, int):
        resolve_layers(settings.layer, model.n_layers, None, settings.space)


def probe_layer(sections: dict[str, Any]) -> tuple[int | None, list[int] | None]:
    """The layer the nested probe (last prompt position) chose most often across its outer folds
    (the lowest on ties), and every fold's choice."""
    nested = ((sections.get("probes") or {}).get(LAST_PROMPT) or {}).get("nested") or {}
    chosen = nested.get("chosen_layers")
    if not chosen:
        return None, None
    return most_chosen_layer(chosen), list(chosen)


def tracked_signals(sections: dict[str, Any], k: int) -> list[str]:
    """The signals with the highest baseline AUROC that can be recomputed under ablation (not
    self-consistency, which is off there), at most one per set of captures read (so that e.g. p_tok and
    min_logprob, both read from the token log-probabilities, do not fill the list): k of them."""
    aurocs = (sections.get("summary") or {}).get("signal_auroc") or {}
    usable = sorted(((entry["value"], name) for name, entry in aurocs.items()
                     if entry["value"] is not None and not set(SELF_CONSISTENCY_FIELDS) & set(SIGNALS.get(name).needs)),
                    key=lambda item: (-item[0], item[1]))
    chosen: dict[tuple[str, ...], str] = {}
    for _, name in usable:
        chosen.setdefault(SIGNALS.get(name).needs, name)
    return list(chosen.values())[:k]


@dataclass
class _Sample:
    task: Task
    baseline: SampleRecord
    doc: dict[str, Any]
    request: Request


def _samples(run: RunResult) -> list[_Sample]:
    """Every doc the baseline scored, rendered exactly as the baseline run rendered it."""
    config = run.config
    samples = []
    for result in run.results.values():
        task = result.task
        prompt_kwargs = task.prompt_kwargs(run.model.prompt_keys)
        for record in result.records:
            if record.error is not None:
                continue
            try:
                doc, request = task.render(record.doc_id, prompt_kwargs, config.gen_kwargs, config.seed)
            except DocError:  # pragma: no cover - it rendered a moment ago
                continue
            samples.append(_Sample(task, record, doc, request))
    return samples


class _Units:
    """Where a layer's units live (``space``), their dataset statistics and probe ranking."""

    def __init__(self, model: Intervenable, layer: int, space: UnitSpace) -> None:
        self.site: UnitSite = model.unit_site(layer, space)
        self.statistics = UnitStatistics(self.site.module, self.site.where)
        self.ranking: np.ndarray | None = None


def _rank_units(units: dict[int, _Units], run: RunResult, seed: int) -> None:
    """Rank each layer's units by the magnitude of a logistic probe for correctness trained on all
    baseline samples' hidden states at that layer (last prompt position, standardised). Residual
    dimensions: |w_d|. MLP neurons: |w . W_down[:, n]| x std(neuron n), the neuron's typical direct
    effect on the probe's logit (w in raw units: coefficient / feature scale)."""
    states, correct = [], []
    for result in run.results.values():
        for record in result.records:
            if record.error is None and LAST_PROMPT in record.hidden_states:
                states.append(record.hidden_states[LAST_PROMPT].astype(np.float32))
                correct.append(int(bool(record.correct)))
    labels = np.array(correct)
    if len(labels) == 0 or min(labels.sum(), len(labels) - labels.sum()) < 2:
        raise UsageError("probe-ranked ablation needs hidden states of at least 2 right and 2 wrong answers; "
                         "run more docs or pass --ablation_units random")
    features = np.stack(states)
    for layer, entry in units.items():
        probe = fit_probe(features[:, layer], labels, "logistic", seed)
        weights = probe.model.coef_[0]
        if entry.site.readout is None:  # residual dimensions
            entry.ranking = np.abs(weights)
        else:
            direction = torch.as_tensor(weights / probe.scaler.scale_, dtype=torch.float32)
            readout = entry.site.readout.detach().float().cpu()  # [hidden, units]
            entry.ranking = (np.abs((direction @ readout).numpy()) * entry.statistics.std.numpy())


def _intervention(condition: Condition, units: dict[int, _Units], batch: list[_Sample], reference: list[Response],
                  image_tokens: ImageTokenLayout | None, seed: int) -> UnitAblation | ImageTokenMask:
    """The hook of ``condition`` for this batch (``image_tokens``: the batch's layout, for patch conditions)."""
    if condition.kind == "units":
        entry = units[condition.layer]
        ranking = entry.ranking if condition.selection == "probe" else None
        unit_seed = seed * 1000 + condition.seed
        chosen = choose_units(entry.site.size, condition.fraction, seed=unit_seed, ranking=ranking)
        stats = {"mean": entry.statistics.mean, "scale": entry.statistics.std} if condition.method != "zero" else {}
        return UnitAblation(entry.site.module, chosen, condition.method, entry.site.where, seed=unit_seed, **stats)
    assert image_tokens is not None
    positions = []
    for sample, span, response in zip(batch, image_tokens.spans, reference):
        attention = response.traces.answer_attention_first
        if attention is None or len(span) == 0:
            positions.append([])
            continue
        cells = masked_cells(attention.mean(axis=0).ravel(), condition.selection, condition.fraction,
                             seed=[seed, condition.seed, sample.baseline.doc_id])
        positions.append(span[cells].tolist())
    return ImageTokenMask(image_tokens.embedding_site, positions, image_tokens.prompt_length)


def masked_cells(attention: np.ndarray, selection: str, fraction: float, seed: Sequence[int]) -> np.ndarray:
    """Indices of round(fraction x cells) patch-grid cells: the most / least attended, or a seeded random set."""
    count = int(round(fraction * len(attention)))
    if selection == "top":
        return np.argsort(-attention, kind="stable")[:count]
    if selection == "bottom":
        return np.argsort(attention, kind="stable")[:count]
    return np.random.default_rng(list(seed)).permutation(len(attention))[:count]


def first_token_kl(reference: Response, ablated: Response) -> float | None:
    """KL(reference || ablated) in nats between the first answer token's next-token distributions."""
    p, q = reference.traces.first_token_logprobs, ablated.traces.first_token_logprobs
    if p is None or q is None:
        return None
    return float(np.sum(np.exp(p) * (p - q)))


HeldOutProbes = dict[str, tuple[int, dict[str, np.ndarray]]]
"""``sample_key`` -> (layer, probe arrays) of the nested probe fold that held that doc out."""


def held_out_probes(fits: ProbeFits | None) -> HeldOutProbes:
    """For each doc, the baseline's nested probe (last prompt position) trained without it."""
    if fits is None:
        return {}
    return {key: (fold.layers[0], fold.arrays) for fold in fits.folds if fold.pipeline == "nested"
            for key in fold.test_doc_ids}


def _probe_probability(probes: HeldOutProbes, sample: _Sample, response: Response) -> float | None:
    """P(correct) of the held-out nested probe on this response's (ablated) last-prompt hidden state."""
    held_out = probes.get(sample_key(sample.task.name, sample.baseline.doc_id))
    hidden = response.traces.hidden_last_prompt
    if held_out is None or hidden is None:
        return None
    layer, arrays = held_out
    return float(probe_probability(arrays, np.asarray(hidden[layer], dtype=np.float32)[None])[0])


def _record(condition: Condition, sample: _Sample, response: Response, reference: Response,
            signals: list[str], probes: HeldOutProbes) -> dict[str, Any]:
    """One doc's outcome under one condition (a failed sample keeps its reason and is never scored)."""
    scored = SampleRecord(sample.baseline.doc_id)
    if reference.text is None:
        scored.error = f"the unablated reference pass failed: {reference.error}"
    else:
        score_record(sample.task, scored, sample.doc, sample.request, response, signal_names=signals)
    return {
        "condition": condition.id,
        "doc_id": sample.baseline.doc_id,
        "prediction": scored.prediction,
        "correct": scored.correct,
        "flipped": None if scored.error else scored.prediction != reference.text,
        "first_token_kl": None if scored.error else first_token_kl(reference, response),
        "signals": {name: scored.signals.get(name) for name in signals} if scored.error is None else {},
        "signal_errors": scored.signal_errors,
        "probe_probability": None if scored.error else _probe_probability(probes, sample, response),
        "error": scored.error,
    }


def run_ablation(
    run: RunResult, sections: dict[str, Any], settings: AblationSettings, probes: ProbeFits | None = None,
    progress: Callable[[int], Progress] | None = None,
) -> AblationRun:
    """Apply every condition of ``settings`` to every doc the baseline ``run`` scored (``sections``: the
    run's scored sections, for the probe's layer and the signals to track; ``probes``: its nested
    last-prompt probes, re-applied held out to the ablated hidden states). ``progress(total)`` makes the
    progress reporter, counted in answered docs."""
    model = run.model
    check_ablatable(model, settings)
    assert isinstance(model, Intervenable)
    chosen, folds = probe_layer(sections)
    layers = resolve_layers(settings.layer, model.n_layers, chosen, settings.space)
    conditions = build_conditions(settings, layers)
    ablation = AblationRun(settings, layers, folds, conditions, tracked_signals(sections, settings.best_signals))
    samples = _samples(run)
    if not samples:
        raise UsageError("the baseline run scored no doc, so there is nothing to ablate")
    units = {layer: _Units(model, layer, settings.space) for layer in layers}
    seed = run.config.seed
    held_out = held_out_probes(probes)
    # spread over every task's docs, not the first task only
    calibration = [s.request for s in samples[:: max(1, len(samples) // settings.calibration_docs)]]
    calibration = calibration[: settings.calibration_docs]
    statistics = [entry.statistics for entry in units.values()]
    for request in calibration:  # one prompt at a time: no padding positions in the statistics
        model.prefill([request], hooks=statistics)
    ablation.calibration = {"docs": len(calibration), "tokens": statistics[0].count if statistics else 0}
    if "probe" in settings.selections and any(c.selection == "probe" for c in conditions):
        _rank_units(units, run, seed)
    requests = [s.request for s in samples]
    passes = [[samples[i] for i in indices] for indices in model.batches(requests, run.config.batch_size)]
    bar = progress(len(samples) * (len(conditions) + 1)) if progress is not None else None
    first_reference: list[Response] = []
    try:
        for batch in passes:
            batch_requests = [s.request for s in batch]
            # self-consistency is off under ablation (it would multiply the cost by K)
            reference = model.generate(batch_requests, self_consistency=False)
            first_reference = first_reference or reference
            ablation.reference_mismatches += sum(r.text != s.baseline.prediction for r, s in zip(reference, batch))
            image_tokens = model.image_token_layout(batch_requests) if settings.patch_fraction > 0 else None
            for condition in conditions:
                if bar is not None:
                    bar.set_postfix_str(f"{batch[0].task.name}: {condition.id}")
                hook = _intervention(condition, units, batch, reference, image_tokens, seed)
                responses = model.generate(batch_requests, hooks=[hook], self_consistency=False)
                if isinstance(hook, ImageTokenMask) and hook.applied != 1:
                    # the model did not answer the batch in one greedy pass (sampling, beams): not masked
                    reason = "patch mask not applied: patch masking needs greedy decoding of the whole batch"
                    responses = [Response.failed(reason) for _ in batch]
                for sample, response, ref in zip(batch, responses, reference):
                    ablation.records.setdefault(sample.task.name, []).append(
                        _record(condition, sample, response, ref, ablation.tracked_signals, held_out))
            if bar is not None:
                bar.update(len(batch) * (len(conditions) + 1))
    finally:
        if bar is not None:
            bar.close()
    # every hook is off again: the first batch must get exactly the answers and distributions it got first
    again = model.generate([s.request for s in passes[0]], self_consistency=False)
    ablation.hooks_removed = all(
        a.text == r.text and np.array_equal(a.traces.first_token_logprobs, r.traces.first_token_logprobs)
        for a, r in zip(again, first_reference))
    return ablation
