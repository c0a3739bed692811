"""Ablation sweeps: conditions, outcome statistics, the runner on every tiny model, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vrp_bench.api.errors import UsageError
from vrp_bench.interventions import AblationSettings, ablation_section, build_conditions
from vrp_bench.interventions.conditions import resolve_layers
from vrp_bench.interventions.outcomes import bottleneck, breaking_point, chance_accuracy, robustness_auc
from vrp_bench.interventions.runner import first_token_kl, masked_cells
from vrp_bench.models.families import FAMILIES as FAMILY_REGISTRY
from vrp_bench.api.instance import Response
from vrp_bench.api.traces import Traces
from vrp_bench.report.schema import schema_problems
from vrp_bench.scoring.settings import ScoringSettings

FAMILIES = list(FAMILY_REGISTRY)


# --- conditions ---------------------------------------------------------------------------------


def test_conditions_expand_the_settings() -> None:
    settings = AblationSettings(fractions=(0.0, 0.5, 1.0), seeds=3, patch_fraction=0.3)
    conditions = build_conditions(settings, [1, 2])
    ids = [c.id for c in conditions]
    assert len(ids) == len(set(ids))
    # per layer: p = 0 once, then 2 fractions x (3 random seeds + 1 probe); patches: top, bottom, 3 random
    assert len(conditions) == 2 * (1 + 2 * 4) + 5
    assert "L1/residual/zero/p0.00" in ids and "L2/residual/zero/random-s2/p1.00" in ids
    assert "L2/residual/zero/probe/p0.50" in ids and "patches/top/q0.30" in ids
    only_random = build_conditions(AblationSettings(selections=("random",), patch_fraction=0.0, seeds=1), [0])
    assert {c.selection for c in only_random} == {"none", "random"}


@pytest.mark.parametrize("bad", [
    {"fractions": (0.0, 1.5)}, {"fractions": ()}, {"fractions": (0.5, 0.5)}, {"space": "heads"},
    {"method": "shuffle"}, {"selections": ("best",)}, {"seeds": 0}, {"patch_fraction": 1.0},
    {"calibration_docs": 0}, {"layer": "last"},
])
def test_bad_settings_are_usage_errors(bad) -> None:
    with pytest.raises(UsageError):
        AblationSettings(**bad)


def test_layer_resolution() -> None:
    """Layers are hidden states 0..L (HF numbering); the MLP that writes hidden state i exists for i >= 1."""
    assert resolve_layers("all", 3, None, "residual") == [0, 1, 2, 3]
    assert resolve_layers("all", 3, None, "mlp") == [1, 2, 3]
    assert resolve_layers("probe", 3, 2, "residual") == [2]
    assert resolve_layers(3, 3, None, "residual") == [3]
    with pytest.raises(UsageError, match="0..3"):
        resolve_layers(4, 3, None, "residual")
    with pytest.raises(UsageError, match="1..3"):
        resolve_layers(0, 3, None, "mlp")
    with pytest.raises(UsageError, match="--layer N"):
        resolve_layers("probe", 3, None, "residual")
    with pytest.raises(UsageError, match="embedding output"):
        resolve_layers("probe", 3, 0, "mlp")


# --- outcome statistics ---------------------------------------------------------------------------


def test_robustness_auc_and_breaking_point() -> None:
    p = [0.0, 0.5, 1.0]
    assert robustness_auc(p, [0.8, 0.8, 0.8], 0.8) == pytest.approx(1.0)
    assert robustness_auc(p, [0.8, 0.4, 0.0], 0.8) == pytest.approx(0.5)
    assert robustness_auc(p, [0.8, 0.8, 0.0], 0.8) == pytest.approx(0.75)
    assert robustness_auc([0.0], [0.8], 0.8) is None
    # threshold = 0.8 - 0.5 (0.8 - 0.4) = 0.6
    assert breaking_point(p, [0.8, 0.61, 0.2], 0.8, 0.4) == 1.0
    assert breaking_point(p, [0.8, 0.59, 0.2], 0.8, 0.4) == 0.5
    assert breaking_point(p, [0.8, 0.7, 0.65], 0.8, 0.4) is None


def test_bottleneck_verdicts() -> None:
    def profile(*sensitivities):
        return [{"layer": i, "robustness_auc": 1 - s, "sensitivity": s} for i, s in enumerate(sensitivities)]

    assert bottleneck(profile(0.05, 0.1, 0.6))["verdict"] == "late bottleneck"
    assert bottleneck(profile(0.6, 0.1, 0.05, 0.1))["verdict"] == "early bottleneck"
    assert bottleneck(profile(0.4, 0.5, 0.45))["verdict"] == "distributed"
    assert bottleneck(profile(0.01, 0.02, 0.0))["verdict"] == "robust"
    assert bottleneck(profile(0.3))["verdict"] is None


def test_masked_cells_and_first_token_kl() -> None:
    attention = np.array([0.1, 0.5, 0.05, 0.3, 0.05])
    assert masked_cells(attention, "top", 0.4, [0]).tolist() == [1, 3]
    assert masked_cells(attention, "bottom", 0.4, [0]).tolist() == [2, 4]
    random = masked_cells(attention, "random", 0.4, [1, 2])
    assert len(random) == 2 and np.array_equal(random, masked_cells(attention, "random", 0.4, [1, 2]))
    p = np.log(np.array([0.5, 0.25, 0.25]))
    q = np.log(np.array([0.25, 0.5, 0.25]))
    same = first_token_kl(Response("a", Traces(first_token_logprobs=p)), Response("a", Traces(first_token_logprobs=p)))
    assert same == 0.0
    kl = first_token_kl(Response("a", Traces(first_token_logprobs=p)), Response("b", Traces(first_token_logprobs=q)))
    assert kl == pytest.approx(0.5 * np.log(2) + 0.25 * np.log(0.5))


def _synthetic(n: int = 60, seed: int = 0):
    """A baseline with 2/3 right answers, a p = 0 condition equal to it, and p = 1 answering all wrong."""
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < 2 / 3
    samples = {"t": [{"doc_id": i, "correct": bool(c), "error": None, "target": ["yes", "no"][i % 2],
                      "question_type": "exists", "signals": {"p_tok": float(c) + rng.normal(0, 0.5)}}
                     for i, c in enumerate(correct)]}
    base = {"kind": "units", "layer": 0, "space": "residual", "method": "zero", "seed": 0}
    conditions = [{**base, "id": "p0", "selection": "none", "fraction": 0.0}]
    records = [{"condition": "p0", "doc_id": i, "correct": bool(c), "flipped": False, "first_token_kl": 0.0,
                "signals": {"p_tok": s["signals"]["p_tok"]}, "error": None} for i, (c, s) in enumerate(zip(correct, samples["t"]))]
    for seed_ in (0, 1):
        conditions.append({**base, "id": f"p1-s{seed_}", "selection": "random", "fraction": 1.0, "seed": seed_})
        records += [{"condition": f"p1-s{seed_}", "doc_id": i, "correct": False, "flipped": True,
                     "first_token_kl": 2.0, "signals": {"p_tok": 0.0}, "error": "boom" if i == 0 else None}
                    for i in range(n)]
    context = {"settings": AblationSettings(layer=0, fractions=(0.0, 1.0), seeds=2).to_json(), "layers": [0],
               "probe_chosen_layers": None, "calibration": {"docs": 4, "tokens": 100}, "reference_mismatches": 0,
               "hooks_removed": True, "tracked_signals": ["p_tok"], "conditions": conditions}
    return samples, {"t": records}, context, correct


def test_ablation_section_statistics() -> None:
    samples, records, context, correct = _synthetic()
    section = ablation_section(samples, records, context, ScoringSettings(n_resamples=200))
    by_id = {c["id"]: c for c in section["conditions"]}
    assert by_id["p0"]["accuracy"]["mean"] == pytest.approx(correct.mean())
    assert by_id["p0"]["accuracy_change"]["value"] == 0.0 and by_id["p0"]["flip_rate"]["mean"] == 0.0
    broken = by_id["p1-s0"]
    assert broken["n_errors"] == 1 and broken["n"] == len(correct) - 1  # a failed doc is counted, not scored
    assert broken["accuracy"]["mean"] == 0.0
    assert broken["accuracy_change"]["value"] == pytest.approx(-correct[1:].mean())
    assert broken["accuracy_change"]["ci"][1] < 0
    assert broken["signal_auroc"]["p_tok"]["value"] is None  # one class only under the ablation
    assert section["baseline"]["chance"] == pytest.approx(0.5)
    assert section["baseline"]["signal_auroc"]["p_tok"]["value"] > 0.7
    (curve,) = section["curves"]
    assert curve["fractions"] == [0.0, 1.0] and curve["n_seeds"] == 2 and curve["accuracy_seed_sd"] == [0.0, 0.0]
    assert curve["breaking_point"] == 1.0 and curve["robustness_auc"] == pytest.approx(0.5, abs=0.02)
    report_problems = [p for p in schema_problems({"ablation": section}) if p.startswith("$.ablation")]
    assert report_problems == []


def test_chance_is_one_over_the_distinct_answers_per_question_type() -> None:
    samples = {"t": [{"doc_id": i, "correct": True, "error": None, "target": t, "question_type": q}
                     for i, (t, q) in enumerate([("red", "color"), ("blue", "color"), ("green", "color"),
                                                 ("yes", "exists"), ("no", "exists")])]}
    chance = chance_accuracy(samples)
    assert chance["t/0"] == pytest.approx(1 / 3) and chance["t/4"] == pytest.approx(1 / 2)


# --- the runner on every tiny model (through the CLI) -------------------------------------------------


def _report(folder: Path, model: str) -> dict:
    (path,) = (folder / model).glob("*_results.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize("family", FAMILIES)
def test_full_destruction_changes_accuracy_beyond_its_ci(cli, tmp_path, family) -> None:
    model = f"tiny_{family}"
    code, out, err = cli("ablate", "--model", model, "--tasks", "vrp_shapes_color,vrp_shapes_exists_random",
                         "--limit", 30, "--batch_size", 16, "--sc_samples", 0, "--layer", 2,
                         "--fractions", "0,0.5,1", "--ablation_seeds", 2, "--patch_fraction", 0.3,
                         "--bootstrap_resamples", 200, "--permutations", 5, "--cv_repeats", 1, "--output_path", tmp_path, "--log_samples")
    assert code == 0, err
    ablation = _report(tmp_path, model)["ablation"]
    by_id = {c["id"]: c for c in ablation["conditions"]}
    zero = by_id["L2/residual/zero/p0.00"]
    assert zero["flip_rate"]["mean"] == 0.0 and zero["accuracy_change"]["value"] == 0.0  # p = 0 is the baseline
    assert zero["first_token_kl"]["mean"] == 0.0
    assert ablation["reference_mismatches"] == 0 and ablation["hooks_removed"] is True
    for seed in (0, 1):
        change = by_id[f"L2/residual/zero/random-s{seed}/p1.00"]["accuracy_change"]
        assert change["ci"][1] < 0, change  # beyond its CI
    random_curve = next(c for c in ablation["curves"] if c["selection"] == "random")
    assert random_curve["n_seeds"] == 2 and len(random_curve["accuracy_seed_sd"]) == 3
    assert len(random_curve["robustness_auc_seeds"]) == 2
    assert {c["id"] for c in ablation["conditions"] if c["kind"] == "patches"} == {
        "patches/top/q0.30", "patches/bottom/q0.30", "patches/random-s0/q0.30", "patches/random-s1/q0.30"}
    assert "Ablation of residual units" in out
    (records_file,) = (tmp_path / model).glob("*_ablation_vrp_shapes_color.jsonl")
    lines = [json.loads(line) for line in records_file.read_text().splitlines()]
    assert len(lines) == 30 * len(ablation["conditions"])


def test_layer_sweep_on_tiny_paligemma_writes_a_profile_and_rescores(cli, tmp_path) -> None:
    code, out, err = cli("ablate", "--model", "tiny_paligemma", "--tasks", "vrp_shapes", "--layer", "all",
                         "--limit", 8, "--batch_size", 16, "--sc_samples", 0, "--fractions", "0,0.5,1",
                         "--ablation_seeds", 2, "--ablation_method", "noise", "--ablation_space", "mlp",
                         "--bootstrap_resamples", 200, "--permutations", 5, "--cv_repeats", 1, "--output_path", tmp_path, "--log_samples")
    assert code == 0, err
    report = _report(tmp_path, "tiny_paligemma")
    ablation = report["ablation"]
    assert ablation["layers"] == [1, 2, 3]  # the MLPs writing hidden states 1..L
    profile = ablation["bottleneck"]["profile"]
    assert [entry["layer"] for entry in profile] == [1, 2, 3]
    assert ablation["bottleneck"]["verdict"] in ("robust", "early bottleneck", "mid bottleneck", "late bottleneck",
                                                 "distributed")
    assert "bottleneck profile:" in out
    (results,) = (tmp_path / "tiny_paligemma").glob("*_results.json")
    assert cli("validate", results)[0] == 0
    rescored = tmp_path / "rescored.json"
    assert cli("score", tmp_path / "tiny_paligemma", "--output", rescored)[0] == 0
    assert json.loads(rescored.read_text())["ablation"] == ablation


@pytest.mark.parametrize("args, message", [
    (["--model", "constant", "--layer", 0], "no layers to ablate"),
    (["--model", "tiny_llava", "--model_args", "capture=false", "--layer", 0], "capture=True"),
    (["--model", "tiny_llava", "--layer", 7], "residual layers are 0..3"),
    (["--model", "tiny_llava", "--fractions", "0,2"], "between 0 and 1"),
    (["--model", "tiny_llava", "--fractions", "a,b"], "numbers separated by commas"),
    (["--model", "tiny_llava", "--ablation_units", "best"], "choose from random, probe"),
])
def test_bad_ablation_input_is_one_line_and_writes_nothing(cli, tmp_path, monkeypatch, args, message) -> None:
    from vrp_bench import evaluator

    def no_docs(*args, **kwargs):  # every check must come before the first doc is answered
        raise AssertionError("a doc was answered before the bad input was reported")

    monkeypatch.setattr(evaluator, "run_task", no_docs)
    code, out, err = cli("ablate", *args, "--tasks", "vrp_shapes_color", "--limit", 4, "--output_path", tmp_path)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.rglob("*.json"))


def test_ablation_flags_need_ablate_on_run(cli) -> None:
    code, _, err = cli("run", "--model", "constant", "--tasks", "vrp_shapes_color", "--layer", "1")
    assert code == 2 and "--layer only applies with --ablate" in err


def test_run_with_ablate_puts_the_section_in_the_same_report(cli, tmp_path) -> None:
    code, out, err = cli("run", "--ablate", "--model", "tiny_llava", "--tasks", "vrp_shapes_color", "--limit", 6,
                         "--sc_samples", 0, "--layer", 1, "--fractions", "0,1", "--ablation_seeds", 1,
                         "--ablation_units", "random", "--patch_fraction", 0, "--ablation_method", "mean",
                         "--bootstrap_resamples", 100, "--permutations", 5, "--cv_repeats", 1, "--output_path", tmp_path)
    assert code == 0, err
    ablation = _report(tmp_path, "tiny_llava")["ablation"]
    assert [c["id"] for c in ablation["conditions"]] == ["L1/residual/mean/p0.00", "L1/residual/mean/random-s0/p1.00"]
    assert ablation["calibration"]["docs"] == 6 and ablation["calibration"]["tokens"] > 6
    assert ablation["bottleneck"] is None and ablation["hooks_removed"] is True


@pytest.mark.parametrize("kind", ["logistic", "l1", "mlp"])
def test_saved_probe_arrays_reproduce_sklearn(kind) -> None:
    from vrp_bench.scoring.crossval import fit_probe
    from vrp_bench.scoring.probes import probe_probability

    rng = np.random.default_rng(0)
    features = rng.normal(size=(80, 6))
    labels = (features[:, 0] + rng.normal(0, 0.5, 80) > 0).astype(int)
    probe = fit_probe(features, labels, kind, seed=0)
    assert np.allclose(probe_probability(probe.arrays(), features), probe.predict_proba(features), atol=1e-9)


def test_tracked_signals_are_the_best_of_distinct_captures_without_self_consistency() -> None:
    from vrp_bench.interventions.runner import tracked_signals

    aurocs = {"sc_agreement": 0.95, "p_tok": 0.9, "min_logprob": 0.89, "first_token_margin": 0.8,
              "grounding_mass": 0.7, "h_s": 0.6, "mean_entropy": None}
    sections = {"summary": {"signal_auroc": {name: {"value": v, "ci": None} for name, v in aurocs.items()}}}
    assert tracked_signals(sections, 3) == ["p_tok", "first_token_margin", "grounding_mass"]
    assert tracked_signals(sections, 1) == ["p_tok"]


def test_a_condition_where_every_doc_failed_has_no_accuracy_not_zero() -> None:
    samples, records, context, _ = _synthetic(n=20)
    records["t"] = [dict(r, error="out of memory", correct=None) if r["condition"] == "p1-s1" else r
                    for r in records["t"]]
    section = ablation_section(samples, records, context, ScoringSettings(n_resamples=100))
    failed = next(c for c in section["conditions"] if c["id"] == "p1-s1")
    assert failed["n"] == 0 and failed["n_errors"] == 20 and failed["accuracy"]["mean"] is None
    (curve,) = section["curves"]
    assert curve["accuracy"][1] is None and curve["robustness_auc"] is None
    assert curve["robustness_auc_seeds"][0] is not None and curve["robustness_auc_seeds"][1] is None
    assert [p for p in schema_problems({"ablation": section}) if p.startswith("$.ablation")] == []


def test_the_probe_layer_is_the_most_chosen_the_lowest_on_ties() -> None:
    from vrp_bench.interventions.conditions import most_chosen_layer

    assert most_chosen_layer([2, 1, 2, 1]) == 1 and most_chosen_layer([3, 3, 1]) == 3
    assert most_chosen_layer([]) is None
