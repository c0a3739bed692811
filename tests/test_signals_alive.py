"""On the embedded default every signal is alive: for each tiny model, on the README's main command (fewer docs),
no reliability signal is constant, two signals equal on every sample are grouped by the report, the cluster
counts vary, and the multi-token statistics (p_tok vs min_logprob) tell docs apart; the mechanistic analyses
(#16: the MLP share of the truth margin's growth and the forcing profile per layer, the attention-only
classifiers beside the best signal) are reported and printed; counting and spatial accuracy above chance is an
expected failure (#15)."""

from __future__ import annotations

import itertools
import json
import pytest

from vrp_bench.models.families import FAMILIES
from vrp_bench.signals.catalogue import SIGNALS

LIMIT = 30
LISTS = {"sc_answers", "sc_extracted"}
"""Per-sample lists (the sampled answers as generated and as extracted), not scalars."""
FAILURE_COUNTS = {"sc_unparsed"}
"""Counts of samples a task's filters found no answer in: 0 on every doc is the healthy value (the default tasks'
answers are single words that all parse), so it is not asked to vary."""
SCALARS = sorted(name for name, spec in SIGNALS.items() if not spec.per_layer and name not in LISTS | FAILURE_COUNTS)


@pytest.fixture(scope="module", params=list(FAMILIES))
def default_run(request, tmp_path_factory) -> tuple[str, dict, list[dict]]:
    from click.testing import CliRunner

    from vrp_bench.cli import cli

    family, out = request.param, tmp_path_factory.mktemp("alive")
    result = CliRunner().invoke(cli, ["--model", f"tiny_{family}", "--tasks", "all", "--limit", str(LIMIT),
                                      "--output_path", str(out), "--log_samples", "--permutations", "5",
                                      "--cv_repeats", "1", "--bootstrap_resamples", "100"])
    assert result.exit_code == 0, result.output
    folder = out / f"tiny_{family}"
    report = json.loads(next(folder.glob("*_results.json")).read_text())
    records = [{**json.loads(line), "file": path.name} for path in sorted(folder.glob("*_samples_*.jsonl"))
               for line in path.open()]
    return family, report, records, result.output


def values(records: list[dict], name: str) -> dict[str, float]:
    return {f"{r['file']}/{r['doc_id']}": r["signals"][name] for r in records
            if r.get("signals") and r["signals"].get(name) is not None}


def test_no_signal_is_constant(default_run) -> None:
    family, _, records, _ = default_run
    constant = [name for name in SCALARS if len(set(values(records, name).values())) < 2]
    assert not constant, f"tiny_{family}: constant on every doc: {constant}"


def test_signals_equal_on_every_sample_are_grouped_by_the_report(default_run) -> None:
    family, report, records, _ = default_run
    grouped = {frozenset(pair) for group in report["summary"]["signal_groups"]
               for pair in itertools.combinations(group, 2)}
    by_name = {name: values(records, name) for name in SCALARS}
    for first, second in itertools.combinations(SCALARS, 2):
        shared = by_name[first].keys() & by_name[second].keys()
        if len(shared) > 10 and all(by_name[first][k] == by_name[second][k] for k in shared):
            assert frozenset((first, second)) in grouped, (family, first, second)


def test_multi_token_statistics_differ(default_run) -> None:
    """The caption task's answers are several tokens long: mean and minimum log-probability part ways."""
    _, _, records, _ = default_run
    p_tok, min_logprob = values(records, "p_tok"), values(records, "min_logprob")
    assert any(abs(p_tok[key] - min_logprob[key]) > 1e-9 for key in p_tok.keys() & min_logprob.keys())


def test_cluster_counts_vary(default_run) -> None:
    """Every tiny model sees an 8 x 8 image-token grid: 7 cells reach the top 10%, enough for DBSCAN's clusters."""
    _, _, records, _ = default_run
    assert len(set(values(records, "c_k_dbscan").values())) > 1


def test_mechanisms_and_the_stress_test_are_reported(default_run) -> None:
    family, report, _, output = default_run
    attribution, forcing = report["mechanisms"]["margin_attribution"], report["mechanisms"]["forcing"]
    assert attribution["reason"] is None and attribution["n"] > 0
    assert [row["layer"] for row in attribution["per_layer"]] == list(range(len(attribution["per_layer"])))
    assert all(isinstance(row[block], float) for row in attribution["per_layer"] for block in ("attention", "mlp"))
    assert attribution["mlp_share_of_growth"]["value"] is not None or attribution["mlp_share_of_growth"]["reason"]
    for position in ("image", "last"):
        assert forcing[position]["reason"] is None and len(forcing[position]["mean_profile"]) == len(
            attribution["per_layer"]) and forcing[position]["forcing_layer"] is not None
    assert len(attribution["per_layer"]) == report["model"]["n_layers"]
    for profile in ("margin_mlp_layers", "margin_attention_layers", "residual_update_image_layers",
                    "gaze_divergence_layers"):
        assert len(report["layers"][profile]) == len(attribution["per_layer"]), profile
    structure = report["attention_classifiers"]["structure"]
    assert structure["reason"] is None and structure["heldout"]["auroc"]["ci"] is not None
    assert report["attention_classifiers"]["ensemble_probe"]["heldout"]["auroc"]["ci"] is not None
    lines = output.splitlines()
    best = next(i for i, line in enumerate(lines) if line.startswith("best signal:"))
    classifier = next(i for i, line in enumerate(lines) if line.startswith("attention-only classifier"))
    assert 0 < classifier - best <= 6 and "within-task AUROC" in lines[classifier]
    assert any(line.startswith("Mechanisms per decoder layer") for line in lines)
    assert any(line.startswith("late forcing (image)") for line in lines)


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="#15: every tiny model stays at chance on counting and spatial within the 5-minute budget")
@pytest.mark.parametrize("question_set", ["count", "spatial"])
def test_counting_and_spatial_above_chance(default_run, question_set) -> None:
    """#15 asks for counting and spatial accuracy above chance (4 balanced answers: 0.25) with the 95% Wilson
    interval excluding it. Not met (README, Models): strict, so a retrained zoo that meets it must drop the mark."""
    from scipy.stats import binomtest

    family, report, records, _ = default_run
    task = f"vrp_shapes_{question_set}"
    correct = sum(int(r["exact_match"]) for r in records if r["file"].endswith(f"_samples_{task}.jsonl"))
    if correct != round(report["results"][task]["exact_match,none"] * LIMIT):
        raise RuntimeError(f"{task}: per-sample records disagree with the report")
    low = binomtest(correct, LIMIT).proportion_ci(method="wilson").low
    assert low > 0.25, f"tiny_{family} {question_set}: {correct}/{LIMIT}, Wilson 95% low {low:.2f} <= chance 0.25"
