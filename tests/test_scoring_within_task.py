"""Statistics that mean what they say: within-task scoring, reference-free ranking, equivalence-tested
verdicts, held-out uncertainty that includes retraining, multiplicity. Checked on planted data whose truth
is known, and against brute-force definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import false_discovery_control, norm, pearsonr, rankdata
from sklearn.metrics import roc_auc_score

from vrp_bench.report.console import signals_table
from vrp_bench.scoring.bootstrap import resample_weights
from vrp_bench.scoring.fusion import fusion_pipeline
from vrp_bench.scoring.heldout import HeldOutDesign, evaluate_heldout, permuted_within
from vrp_bench.scoring.hypotheses import benjamini_hochberg, holm
from vrp_bench.scoring.sections import score_sections
from vrp_bench.scoring.settings import ScoringSettings
from vrp_bench.scoring.signal_quality import ScoringOptions, score_auroc, score_signal
from vrp_bench.scoring.stratified import StratifiedTally
from vrp_bench.scoring.verdicts import DOES_NOT_HOLD, HOLDS, UNDETERMINED, cluster_failure, layer_verdicts

TASK_ACCURACY = {"exists": 0.85, "color": 0.7, "spatial": 0.5, "count": 0.25}
PLANTED_AUROC = 0.8
SHIFT = math.sqrt(2) * norm.ppf(PLANTED_AUROC)  # N(shift, 1) vs N(0, 1): AUROC = Phi(shift / sqrt 2)


def tasks_and_labels(rng: np.random.Generator, per_task: int) -> tuple[np.ndarray, np.ndarray]:
    tasks = np.repeat(list(TASK_ACCURACY), per_task)
    correct = (rng.random(len(tasks)) < np.array([TASK_ACCURACY[t] for t in tasks])).astype(int)
    return tasks, correct


def task_only_signal(tasks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each sample's task accuracy plus noise that knows nothing about the sample."""
    return np.array([TASK_ACCURACY[t] for t in tasks]) + rng.normal(0, 0.01, len(tasks))


# --- definitions against brute force -----------------------------------------------------------


def test_within_task_statistics_match_their_definitions():
    rng = np.random.default_rng(0)
    tasks, y = tasks_and_labels(rng, 80)
    s = np.round(rng.normal(size=len(y)) + y + np.array([list(TASK_ACCURACY).index(t) for t in tasks]), 1)
    tally = StratifiedTally.from_samples(s, y.astype(float), tasks)
    pairs = [(a, b) for t in TASK_ACCURACY for a in s[(tasks == t) & (y == 1)] for b in s[(tasks == t) & (y == 0)]]
    assert tally.auroc()[0] == pytest.approx(np.mean([(a > b) + 0.5 * (a == b) for a, b in pairs]), abs=1e-12)
    centred = [np.concatenate([x[tasks == t] - x[tasks == t].mean() for t in TASK_ACCURACY]) for x in (s, y)]
    assert tally.point_biserial_r()[0] == pytest.approx(pearsonr(*centred).statistic, abs=1e-12)
    ranks = np.concatenate([rankdata(s[tasks == t]) for t in TASK_ACCURACY])
    y_by_task = np.concatenate([y[tasks == t] - y[tasks == t].mean() for t in TASK_ACCURACY])
    rank_centred = np.concatenate([r - r.mean() for r in np.split(ranks, 4)])
    assert tally.spearman_rho()[0] == pytest.approx(pearsonr(rank_centred, y_by_task).statistic, abs=1e-12)
    sizes = np.array([(tasks == t).sum() for t in TASK_ACCURACY])
    per_task_brier = [np.mean((1 / (1 + np.exp(-s[tasks == t])) - y[tasks == t]) ** 2) for t in TASK_ACCURACY]
    p = 1 / (1 + np.exp(-s))
    assert StratifiedTally.from_samples(p, y.astype(float), tasks).brier()[0] == pytest.approx(
        np.average(per_task_brier, weights=sizes))
    one = StratifiedTally.from_samples(s, y.astype(float))
    assert one.auroc()[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_stratified_bootstrap_keeps_every_task_size():
    tasks = np.repeat(["a", "b", "c"], [5, 20, 75])
    weights = resample_weights(100, 200, seed=3, strata=tasks)
    for task, size in (("a", 5), ("b", 20), ("c", 75)):
        assert (weights[:, tasks == task].sum(axis=1) == size).all()


def test_within_task_correlation_has_n_minus_tasks_minus_one_degrees_of_freedom():
    rng = np.random.default_rng(1)
    tasks, y = tasks_and_labels(rng, 60)
    s = rng.normal(size=len(y)) + 0.5 * y
    entry = score_signal(list(s), y, 1, strata=tasks, options=ScoringOptions(n_resamples=100))["statistics"]["r_pb"]
    r, df = entry["value"], len(y) - 4 - 1
    from scipy.stats import t as student

    assert entry["p_value"] == pytest.approx(2 * student.sf(abs(r) * math.sqrt(df / (1 - r * r)), df))


# --- planted truths ---------------------------------------------------------------------------


def test_task_only_signal_is_chance_within_task_though_high_concatenated():
    covered = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        tasks, y = tasks_and_labels(rng, 60)
        signal = task_only_signal(tasks, rng)
        within = score_auroc(signal, y, strata=tasks, options=ScoringOptions(seed=seed, n_resamples=300))
        covered += within["ci"][0] <= 0.5 <= within["ci"][1]
        concatenated = score_auroc(signal, y, options=ScoringOptions(seed=seed, n_resamples=300))
        assert concatenated["value"] > 0.6  # what the task mix alone buys when tasks are concatenated
    assert covered >= 27
    exact = np.array([TASK_ACCURACY[t] for t in tasks])
    undefined = score_auroc(exact, y, strata=tasks)
    assert undefined["value"] is None and "within a task" in undefined["reason"]


def test_planted_within_task_auroc_is_covered_by_its_ci():
    covered, n_seeds = 0, 100
    for seed in range(n_seeds):
        rng = np.random.default_rng(100 + seed)
        tasks, y = tasks_and_labels(rng, 75)
        offset = np.array([3.0 * list(TASK_ACCURACY).index(t) for t in tasks])  # tasks differ in level
        signal = rng.normal(size=len(y)) + SHIFT * y + offset
        entry = score_auroc(signal, y, strata=tasks, options=ScoringOptions(seed=seed, n_resamples=400))
        covered += entry["ci"][0] <= PLANTED_AUROC <= entry["ci"][1]
    assert covered / n_seeds >= 0.9


def test_calibrated_probability_gets_a_debiased_ece_whose_ci_covers_zero():
    covered, n_seeds = 0, 40
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        tasks = np.repeat(list(TASK_ACCURACY), 40)
        p = rng.uniform(0.05, 0.95, len(tasks))
        y = (rng.random(len(tasks)) < p).astype(int)
        scores = score_signal(list(p), y, 1, probability=True, strata=tasks,
                              options=ScoringOptions(seed=seed, n_resamples=300))["statistics"]
        covered += scores["ece_l2_debiased"]["ci"][0] == 0.0
        raw = scores["ece"]
        assert raw["ci"] is None and raw["value"] > 0  # biased upward, no CI
        assert raw["expected_if_calibrated"]["band"][0] <= raw["value"] <= raw["expected_if_calibrated"]["band"][1] + 0.05
    assert covered / n_seeds >= 0.9


def test_agreement_is_calibrated_against_the_majority_answers_correctness():
    rng = np.random.default_rng(0)
    agreement = rng.choice([0.4, 0.6, 0.8, 1.0], 400)
    majority_correct = (rng.random(400) < agreement).astype(int)
    greedy_correct = rng.integers(0, 2, 400)
    scores = score_signal(list(agreement), greedy_correct, 1, probability=True, calibration_correct=list(majority_correct),
                          options=ScoringOptions(n_resamples=200))["statistics"]
    assert scores["brier"]["value"] == pytest.approx(np.mean((agreement - majority_correct) ** 2))
    assert scores["ece_l2_debiased"]["labels"] == "calibration label"
    assert scores["auroc"]["value"] == pytest.approx(roc_auc_score(greedy_correct, agreement))


def test_shuffled_labels_give_a_permutation_p_value_that_is_rarely_significant():
    """A predictor that can learn each task's accuracy but nothing within a task: the permutation test,
    labels permuted within task, rejects at 0.05 in at most ~5% of seeds (here: <= 10% of 20)."""
    significant = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        tasks, y = tasks_and_labels(rng, 40)
        features = np.c_[[list(TASK_ACCURACY).index(t) for t in tasks], rng.normal(size=(len(y), 2))]
        result = evaluate_heldout(fusion_pipeline(features, 5), y, tasks, n_folds=5, design=HeldOutDesign(1, 39),
                                  options=ScoringOptions(seed=seed, n_resamples=200))
        significant += result["permutation_test"]["p_value"] < 0.05
        assert result["concatenated_auroc"]["value"] > 0.65  # it does learn the task mix
    assert significant <= 2
    gain = result["gain_over_task_only"]
    assert gain["ci"][0] <= 0.0 <= gain["ci"][1] + 0.02  # no better than knowing the task


def test_a_probe_on_within_task_shuffled_labels_is_rarely_significant():
    """The nested hidden-state probe, whose states encode the task (so it learns each task's accuracy) but not
    which answers are right: significant (p <= 0.05 with 19 permutations, chance 1/20) in at most 1 of 10 seeds,
    while its concatenated AUROC still looks good and its gain over a task-only predictor is nil."""
    from vrp_bench.scoring.probes import run_probes

    significant = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        tasks, y = tasks_and_labels(rng, 30)
        features = rng.normal(size=(len(y), 2, 4))
        features[:, :, 0] += 3.0 * np.array([list(TASK_ACCURACY).index(t) for t in tasks])[:, None]
        result, _ = run_probes(features, y, [f"{t}/{i}" for i, t in enumerate(tasks)], tasks, n_folds=3,
                               design=HeldOutDesign(1, 19), options=ScoringOptions(seed=seed, n_resamples=200))
        nested = result["nested"]
        significant += nested["permutation_test"]["p_value"] <= 0.05
        assert nested["concatenated_auroc"]["value"] > 0.6
        assert nested["gain_over_task_only"]["ci"][0] < 0.02
    assert significant <= 1


def test_repeated_cv_ci_includes_training_variability():
    rng = np.random.default_rng(4)
    tasks, y = tasks_and_labels(rng, 50)
    features = np.c_[rng.normal(size=len(y)) + y, rng.normal(size=(len(y), 3))]
    result = evaluate_heldout(fusion_pipeline(features, 5), y, tasks, n_folds=5, design=HeldOutDesign(4, 0),
                              options=ScoringOptions(n_resamples=200))
    auroc = result["auroc"]
    assert len(auroc["repeats"]) == 4 and len(set(auroc["repeats"])) > 1  # folds differ between repeats
    assert auroc["value"] == pytest.approx(np.mean(auroc["repeats"]))
    assert result["seeds"] == [0, 1, 2, 3] and result["permutation_test"]["p_value"] is None


def test_permutations_keep_each_tasks_labels():
    rng = np.random.default_rng(0)
    tasks, y = tasks_and_labels(rng, 30)
    permuted = permuted_within(y, tasks, rng)
    for task in TASK_ACCURACY:
        assert sorted(permuted[tasks == task]) == sorted(y[tasks == task])
    assert (permuted != y).any()


# --- verdicts ----------------------------------------------------------------------------------


def structure_scores(rng: np.random.Generator, tasks: np.ndarray, y: np.ndarray, effect: float) -> dict:
    options = ScoringOptions(seed=int(rng.integers(1000)), n_resamples=400)
    return {name: {**score_signal(list(rng.normal(size=len(y)) - effect * y), y, -1, strata=tasks, options=options),
                   "tasks": sorted(set(tasks))}
            for name in ("h_s", "c_k_dbscan", "c_k_components")}


def test_cluster_failure_on_150_count_docs_with_no_relation_is_undetermined():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        tasks = np.repeat(["count"], 150)
        y = (rng.random(150) < 0.29).astype(int)
        verdict = cluster_failure(structure_scores(rng, tasks, y, 0.0), ScoringSettings())
        assert verdict["status"] == UNDETERMINED, verdict["decided_by"]
        assert all(e["p_equivalent_holm"] >= e["p_equivalent"] for e in verdict["signals"].values())


def test_cluster_failure_holds_with_enough_data_and_fails_with_a_real_relation():
    rng = np.random.default_rng(0)
    tasks, y = tasks_and_labels(rng, 1500)
    assert cluster_failure(structure_scores(rng, tasks, y, 0.0), ScoringSettings())["status"] == HOLDS
    related = cluster_failure(structure_scores(rng, tasks, y, 0.8), ScoringSettings())
    assert related["status"] == DOES_NOT_HOLD and "beyond" in related["decided_by"]


def planted_without_c_k_dbscan(how: str) -> dict:
    """The synthetic run's sections with c_k_dbscan degenerate on every doc: 0 everywhere ("constant"), null
    everywhere with the reason in signal_errors ("failed"), or absent from every record ("absent")."""
    samples, metadata = synthetic_run(per_task=40)
    for records in samples.values():
        for record in records:
            if how == "constant":
                record["signals"]["c_k_dbscan"] = 0
            elif how == "failed":
                record["signals"]["c_k_dbscan"] = None
                record["signal_errors"] = {"c_k_dbscan": "ValueError: an attention map with zero total mass"}
            else:
                del record["signals"]["c_k_dbscan"]
    sections, _ = score_sections(samples, {}, ScoringSettings(n_resamples=100, permutations=0, repeats=1), metadata)
    return sections


@pytest.mark.parametrize("how, why", [("constant", "signal is constant"),
                                      ("failed", "null on all 160 scored docs: it failed on 160 (first: ValueError"),
                                      ("absent", "null on all 160 scored docs (its inputs were not captured)")])
def test_a_verdict_names_every_signal_it_could_not_test_and_why(how: str, why: str):
    sections = planted_without_c_k_dbscan(how)
    verdict = sections["verdicts"]["cluster_failure"]
    assert set(verdict["signals"]) == {"h_s", "c_k_components"}
    assert list(verdict["untested"]) == ["c_k_dbscan"] and verdict["untested"]["c_k_dbscan"].startswith(why)
    assert f"c_k_dbscan untested: {why}" in verdict["decided_by"]
    printed = [line for line in signals_table(sections) if isinstance(line, str) and "cluster_failure" in line]
    assert len(printed) == 1 and f"c_k_dbscan untested: {why}" in printed[0]


def test_a_verdict_with_nothing_tested_names_each_signal_once_per_reason():
    rng = np.random.default_rng(0)
    tasks, y = tasks_and_labels(rng, 30)
    records = [{"correct": bool(c), "signals": {"h_s": 1.0}} for c in y]
    scores = {"h_s": {**score_signal([1.0] * len(y), y, -1, strata=tasks), "tasks": sorted(set(tasks))}}
    verdict = cluster_failure(scores, ScoringSettings(), records)
    assert verdict["status"] == UNDETERMINED and set(verdict["untested"]) == {"h_s", "c_k_dbscan", "c_k_components"}
    assert verdict["decided_by"].startswith("no attention-structure signal could be tested; h_s untested: signal is")
    assert "; c_k_dbscan, c_k_components untested: null on all 120 scored docs" in verdict["decided_by"]
    assert cluster_failure(scores, ScoringSettings())["untested"]["c_k_dbscan"] == "not scored in this run"


def records_with_deltas(deltas: np.ndarray) -> list[dict]:
    return [{"correct": True, "signals": {"delta_h_s_layers": list(map(float, row))}} for row in deltas]


def test_layer_verdicts_need_a_determined_layer_and_a_drop_beyond_noise():
    rng = np.random.default_rng(0)
    settings = ScoringSettings(n_resamples=300)
    tasks = ["t"] * 200
    locked = rng.normal(0, 0.3, (200, 4)) + np.array([0.0, -2.0, 0.0, 1.0])
    verdicts = layer_verdicts(records_with_deltas(locked), tasks, settings)
    assert verdicts["early_lock"]["status"] == HOLDS and verdicts["early_lock"]["layer"] == 2
    assert verdicts["late_diffusion"]["status"] == HOLDS and verdicts["late_diffusion"]["layer"] == 4
    rising = rng.normal(0, 0.3, (200, 4)) + 1.0
    assert layer_verdicts(records_with_deltas(rising), tasks, settings)["early_lock"]["status"] == DOES_NOT_HOLD
    flat = rng.normal(0, 1.0, (200, 4))
    ambiguous = layer_verdicts(records_with_deltas(flat), tasks, settings)["early_lock"]
    assert ambiguous["status"] == UNDETERMINED and ambiguous["layer"] is None and ambiguous["candidate_layer"] >= 1


# --- reference-free ranking, grouping, multiplicity ---------------------------------------------


def synthetic_run(seed: int = 0, per_task: int = 120) -> tuple[dict, dict]:
    """Four tasks; grounding reads the answer on exists/count (a box only for "yes"), truth_margin reads
    the target; p_tok and min_logprob are identical (one-token answers)."""
    rng = np.random.default_rng(seed)
    samples, metadata = {}, {}
    for task, accuracy in TASK_ACCURACY.items():
        independent = task in ("color", "spatial")
        records = []
        for i in range(per_task):
            right = bool(rng.random() < accuracy)
            p_tok = float(rng.normal() + SHIFT * right)
            records.append({"doc_id": i, "correct": right, "error": None, "signals": {
                "p_tok": p_tok, "min_logprob": p_tok, "h_s": float(rng.normal()),
                "c_k_dbscan": int(rng.integers(0, 3)), "c_k_components": int(rng.integers(0, 3)),
                "grounding_mass": float(rng.random() + (0.2 * right if independent else 3.0 * right)),
                "truth_margin": float(5.0 * right + rng.normal()),
                "delta_h_s_layers": [float(rng.normal(-1, 0.3)), float(rng.normal(0.5, 0.3))]}})
        samples[f"t_{task}"] = records
        metadata[f"t_{task}"] = {"boxes_answer_independent": independent}
    return samples, metadata


@pytest.fixture(scope="module")
def synthetic_sections() -> dict:
    samples, metadata = synthetic_run()
    sections, _ = score_sections(samples, {}, ScoringSettings(n_resamples=200, permutations=9, repeats=2), metadata)
    return sections


def test_reference_reading_signals_are_diagnostics_only(synthetic_sections):
    sections = synthetic_sections
    within = sections["signals"]["within_task"]["signals"]
    assert "truth_margin" not in within and within["grounding_mass"]["tasks"] == ["t_color", "t_spatial"]
    summary = sections["summary"]
    listed = {name for name, entry in summary["signal_auroc"].items()} | {
        other for entry in summary["signal_auroc"].values() for other in entry["same_ranking_as"]}
    assert "truth_margin" not in listed and summary["best_signal"]["name"] != "truth_margin"
    assert "truth_margin" not in sections["fusion"]["signals"] and "grounding_mass" not in sections["fusion"]["signals"]
    for verdict in sections["verdicts"].values():
        assert "truth_margin" not in verdict.get("signals", {})
    grounding = sections["verdicts"]["grounding_predicts_correctness"]["signals"]["grounding_mass"]
    assert grounding["tasks"] == ["t_color", "t_spatial"]
    assert set(sections["diagnostics"]["t_exists"]) == {"grounding_mass", "truth_margin"}
    assert set(sections["diagnostics"]["t_color"]) == {"truth_margin"}
    exists = sections["diagnostics"]["t_exists"]["grounding_mass"]
    assert exists["reference"] == "boxes" and exists["correct"]["mean"] > exists["incorrect"]["mean"] + 2
    for task in ("t_exists", "t_count"):
        assert "grounding_mass" not in sections["signals"]["tasks"][task]["signals"]


def test_identical_signals_are_grouped_and_the_best_is_reported_on_held_out_docs(synthetic_sections):
    summary = synthetic_sections["summary"]
    assert summary["signal_groups"] == [["min_logprob", "p_tok"]]
    assert "p_tok" not in summary["signal_auroc"] and summary["signal_auroc"]["min_logprob"]["same_ranking_as"] == ["p_tok"]
    best = summary["best_signal"]
    assert best["name"] == "min_logprob" and best["same_ranking_as"] == ["p_tok"]
    assert best["n"] + best["selection"]["n"] == 480 and best["ci"][0] <= PLANTED_AUROC <= best["ci"][1]


def test_p_values_are_adjusted_within_each_scope(synthetic_sections):
    within = synthetic_sections["signals"]["within_task"]["signals"]
    names = list(within)
    raw = [within[n]["statistics"]["r_pb"]["p_value"] for n in names]
    adjusted = [within[n]["statistics"]["r_pb"]["p_value_bh"] for n in names]
    assert adjusted == pytest.approx(list(false_discovery_control(raw)))


def test_holm_and_benjamini_hochberg_match_their_definitions():
    p = [0.01, 0.04, 0.03, None, 0.5]
    defined = [0.01, 0.04, 0.03, 0.5]
    # sorted: 0.01 x 4 = 0.04; 0.03 x 3 = 0.09; 0.04 x 2 = 0.08 -> 0.09 (monotone); 0.5 x 1
    assert holm(p) == [pytest.approx(0.04), pytest.approx(0.09), pytest.approx(0.09), None, pytest.approx(0.5)]
    bh = benjamini_hochberg(p)
    assert bh[3] is None
    assert [v for v in bh if v is not None] == pytest.approx(list(false_discovery_control(defined)))


def test_agreement_keeps_its_calibration_label_through_the_reliability_view():
    """sc_majority_correct reads the target, so it is never a reliability signal, but it is the label
    sc_agreement is calibrated against: scoring must still see it."""
    rng = np.random.default_rng(2)
    samples = {}
    for task in ("t_a", "t_b"):
        agreement = rng.choice([0.4, 0.7, 1.0], 60)
        samples[task] = [{"doc_id": i, "correct": bool(rng.random() < 0.6), "error": None,
                          "signals": {"sc_agreement": float(a), "sc_majority_correct": bool(rng.random() < a)}}
                         for i, a in enumerate(agreement)]
    sections, _ = score_sections(samples, {}, ScoringSettings(n_resamples=100, permutations=0, repeats=1), {})
    calibration = sections["signals"]["within_task"]["signals"]["sc_agreement"]["statistics"]
    assert calibration["brier"]["n"] == 120 and calibration["brier"]["value"] is not None
    assert calibration["ece_l2_debiased"]["labels"] == "calibration label"
    assert "sc_majority_correct" not in sections["summary"]["signal_auroc"]
