"""Attention-only classifiers (the stress test): planted and null attention, sklearn references on the same folds,
no fold leakage, no reference-reading feature where it reads the answer, the ensemble attention probe, the report
section (schema, console) and its saved-traces path."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from vrp_bench.evaluator import SampleRecord, TaskResult
from vrp_bench.report.console import signals_table
from vrp_bench.report.results import read_traces, trace_arrays, traces_npz
from vrp_bench.report.run_files import RunFiles
from vrp_bench.report.schema import schema_problems
from vrp_bench.scoring.attention_classifiers import (
    ENSEMBLE_MAP,
    GBT_PARAMS,
    attention_classifiers,
    classifier_pipeline,
    feature_table,
    normalised_maps,
)
from vrp_bench.scoring.records import reliability_view
from vrp_bench.scoring.sections import score_sections
from vrp_bench.scoring.settings import ScoringSettings

LAYERS, GRID = 3, 6
FAST = ScoringSettings(n_resamples=200, repeats=2, permutations=19)
NO_TEST = ScoringSettings(n_resamples=200, repeats=1, permutations=0)


def structure_signals(rng: np.random.Generator, shift: float = 0.0) -> dict[str, list[float]]:
    """Noise attention-structure lists; ``shift`` is added to h_s_layers[1]."""
    h_s = rng.normal(size=LAYERS)
    h_s[1] += shift
    return {"h_s_layers": h_s.tolist(), "c_k_dbscan_layers": rng.integers(0, 4, LAYERS).tolist(),
            "c_k_components_layers": rng.integers(0, 4, LAYERS).tolist(),
            "delta_h_s_layers": rng.normal(size=LAYERS - 1).tolist()}


def planted_records(shift: float, per_task: int = 100, seed: int = 0) -> tuple[list[dict], list[str], list[str]]:
    """Three tasks of different accuracy; h_s_layers[1] is shifted by ``shift`` for the correct samples."""
    rng = np.random.default_rng(seed)
    records, tasks = [], []
    for task, accuracy in (("a", 0.8), ("b", 0.55), ("c", 0.3)):
        for doc_id in range(per_task):
            right = bool(rng.random() < accuracy)
            records.append({"doc_id": doc_id, "correct": right, "error": None,
                            "signals": structure_signals(rng, shift * right)})
            tasks.append(task)
    return records, tasks, [f"{t}/{r['doc_id']}" for t, r in zip(tasks, records)]


def test_planted_attention_feature_is_found_held_out() -> None:
    records, tasks, keys = planted_records(shift=1.2)
    section = attention_classifiers(records, tasks, keys, {}, FAST)
    features = section["features"]
    assert features["signals"] == ["h_s_layers", "c_k_dbscan_layers", "c_k_components_layers", "delta_h_s_layers"]
    assert features["names"][:4] == ["h_s_layers[0]", "h_s_layers[1]", "h_s_layers[2]", "c_k_dbscan_layers[0]"]
    assert features["count"] == 4 * LAYERS - 1 and set(features["left_out"]) == {"grounding_mass_layers"}
    structure = section["structure"]
    assert structure["kind"] == "logistic" and structure["n"] == 300 and structure["n_dropped"] == 0
    heldout = structure["heldout"]
    assert heldout["auroc"]["value"] > 0.7 and heldout["auroc"]["ci"][0] > 0.6
    assert heldout["permutation_test"]["p_value"] == pytest.approx(1 / 20) and heldout["repeats"] == 2
    assert structure["score"]["statistics"]["auroc"]["value"] == pytest.approx(heldout["auroc"]["repeats"][0])
    assert "brier" in structure["score"]["statistics"]  # scored as a probability
    assert section["ensemble_probe"]["reason"].startswith(f"no {ENSEMBLE_MAP} maps")
    gbt = attention_classifiers(records, tasks, keys, {}, ScoringSettings(n_resamples=200, repeats=1, permutations=0,
                                                                         attention_classifier="gbt"))["structure"]
    assert gbt["kind"] == "gbt" and gbt["params"] == GBT_PARAMS
    assert gbt["heldout"]["auroc"]["value"] > 0.6 and gbt["heldout"]["auroc"]["ci"][0] > 0.5


def test_attention_that_knows_nothing_stays_at_chance() -> None:
    records, tasks, keys = planted_records(shift=0.0, seed=1)
    heldout = attention_classifiers(records, tasks, keys, {}, FAST)["structure"]["heldout"]
    low, high = heldout["auroc"]["ci"]
    assert 0.4 < heldout["auroc"]["value"] < 0.6 and low < 0.5 < high
    assert heldout["permutation_test"]["p_value"] > 0.1


def features_and_labels(seed: int = 3, n: int = 240, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    features = rng.normal(size=(n, d)) * rng.uniform(0.5, 20, d) + rng.uniform(-5, 5, d)
    features[:, 0] += 0.8 * labels * features[:, 0].std()
    return features, labels


def sklearn_logistic(features: np.ndarray, labels: np.ndarray, seed: int, global_scaler: bool = False) -> np.ndarray:
    """Out-of-fold P(correct) of sklearn's LogisticRegression (C = 1), z-scored in fold (or on all rows: leaky)."""
    predictions = np.empty(len(labels))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(features, labels):
        scaler = StandardScaler().fit(features if global_scaler else features[train])
        model = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(scaler.transform(features[train]),
                                                                         labels[train])
        predictions[test] = model.predict_proba(scaler.transform(features[test]))[:, 1]
    return predictions


def test_logistic_and_gbt_equal_sklearn_on_the_same_folds() -> None:
    features, labels = features_and_labels()
    for seed in (0, 7):
        ours = classifier_pipeline(features, "logistic", 5)(labels, seed)
        assert np.abs(ours - sklearn_logistic(features, labels, seed)).max() < 1e-6
        reference = np.empty(len(labels))
        for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(features, labels):
            model = HistGradientBoostingClassifier(random_state=seed, **GBT_PARAMS).fit(features[train], labels[train])
            reference[test] = model.predict_proba(features[test])[:, 1]
        assert np.array_equal(classifier_pipeline(features, "gbt", 5)(labels, seed), reference)
    with pytest.raises(ValueError, match="not one of logistic, gbt"):
        classifier_pipeline(features, "svm", 5)


@pytest.mark.parametrize("kind", ["logistic", "gbt"])
def test_a_held_out_prediction_never_depends_on_other_held_out_samples(kind: str) -> None:
    """Moving one test sample far away changes nothing else in its fold's predictions; a scaler (or bins) fitted
    on every row would move them all (shown on sklearn's logistic with a global scaler)."""
    features, labels = features_and_labels()
    test = next(iter(StratifiedKFold(5, shuffle=True, random_state=0).split(features, labels)))[1]
    moved = features.copy()
    moved[test[0]] += 1000.0 * features.std(axis=0)
    before = classifier_pipeline(features, kind, 5)(labels, 0)
    after = classifier_pipeline(moved, kind, 5)(labels, 0)
    assert np.abs(after[test[1:]] - before[test[1:]]).max() < 1e-6
    leaky = sklearn_logistic(moved, labels, 0, global_scaler=True) - sklearn_logistic(features, labels, 0, True)
    assert np.abs(leaky[test[1:]]).max() > 1e-2


def grounding_records(tasks: dict[str, int], seed: int = 0) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """Noise attention structure, and grounding mass that reads the answer on "bound" (a box only when the
    answer is yes: answer-dependent boxes) and is noise on "free"."""
    rng = np.random.default_rng(seed)
    samples = {}
    for task, n in tasks.items():
        records = []
        for doc_id in range(n):
            right = bool(rng.random() < 0.6)
            grounding = rng.random(LAYERS) + (3.0 * right if task == "bound" else 0.0)
            records.append({"doc_id": doc_id, "correct": right, "error": None, "signals": {
                **structure_signals(rng), "grounding_mass_layers": grounding.tolist(),
                "p_tok": float(rng.normal() + right), "h_s": float(rng.normal())}})
        samples[task] = records
    return samples, {"free": {"boxes_answer_independent": True}, "bound": {"boxes_answer_independent": False}}


def planted_maps(keys: list[str], correct: list[bool], seed: int = 0) -> dict[str, np.ndarray]:
    """[LAYERS, GRID, GRID] maps at a random overall scale; correct samples look more at the top-left quadrant
    in layer 1."""
    rng = np.random.default_rng(seed)
    maps = {}
    for key, right in zip(keys, correct):
        m = rng.random((LAYERS, GRID, GRID))
        m[1, : GRID // 2, : GRID // 2] += 0.6 * right
        maps[key] = (m * rng.uniform(0.01, 1.0)).astype(np.float32)
    return maps


@pytest.fixture(scope="module")
def scored() -> dict:
    """``score_sections`` on the grounding run (half its samples on "bound") with planted maps."""
    samples, metadata = grounding_records({"free": 100, "bound": 100})
    keys = [f"{task}/{r['doc_id']}" for task, records in samples.items() for r in records]
    correct = [r["correct"] for records in samples.values() for r in records]
    sections, _ = score_sections(samples, {ENSEMBLE_MAP: planted_maps(keys, correct)}, FAST, metadata)
    return sections


def test_grounding_never_enters_where_it_reads_the_answer(scored: dict) -> None:
    section = scored["attention_classifiers"]
    assert "grounding_mass_layers" not in section["features"]["signals"]
    assert section["features"]["left_out"]["grounding_mass_layers"].startswith("complete (and a reliability signal) "
                                                                               "on 50% of the samples")
    heldout = section["structure"]["heldout"]  # with the grounding of "bound", within-task AUROC would be ~0.75
    assert heldout["auroc"]["ci"][0] < 0.5 < heldout["auroc"]["ci"][1]
    samples, metadata = grounding_records({"free": 150, "bound": 10}, seed=1)  # 94% covered: "bound" is dropped
    view = reliability_view(samples, metadata)
    records = [r for task_records in view.values() for r in task_records]
    tasks = [task for task, task_records in view.items() for _ in task_records]
    assert "grounding_mass_layers" in feature_table(records).signals
    structure = attention_classifiers(records, tasks, [], {}, NO_TEST)["structure"]
    assert structure["n"] == 150 and structure["n_dropped"] == 10
    assert structure["heldout"]["auroc"]["value"] < 0.65 and structure["heldout"]["auroc"]["ci"][0] < 0.5


def test_ensemble_probe_finds_the_quadrant_correct_samples_look_at(scored: dict) -> None:
    probe = scored["attention_classifiers"]["ensemble_probe"]
    assert probe["grid"] == [LAYERS, GRID, GRID] and probe["n_features"] == LAYERS * GRID * GRID
    assert probe["n"] == 200 and probe["n_left_out"] == 0 and probe["kind"] == "logistic"
    assert probe["heldout"]["auroc"]["value"] > 0.8 and probe["heldout"]["auroc"]["ci"][0] > 0.7
    assert probe["heldout"]["permutation_test"]["p_value"] == pytest.approx(1 / 20)


def test_ensemble_probe_leaves_out_other_grids_and_maps_without_mass() -> None:
    records, tasks, keys = planted_records(shift=0.0, per_task=40)
    maps = planted_maps(keys, [r["correct"] for r in records])
    maps[keys[0]] = np.ones((LAYERS, 4, 4), np.float32)  # another grid
    maps[keys[1]][2] = 0.0  # a layer with no mass on the image
    del maps[keys[2]]
    assert np.allclose(normalised_maps(maps[keys[3]]).sum(axis=(1, 2)), 1.0)
    assert np.allclose(normalised_maps(5 * maps[keys[3]]), normalised_maps(maps[keys[3]]))
    probe = attention_classifiers(records, tasks, keys, maps, NO_TEST)["ensemble_probe"]
    assert probe["grid"] == [LAYERS, GRID, GRID] and probe["n"] == 117 and probe["n_left_out"] == 3
    assert probe["heldout"]["auroc"]["value"] > 0.7


def test_the_section_validates_and_is_shown_beside_the_best_signals(scored: dict) -> None:
    records, tasks, keys = planted_records(shift=0.0, per_task=3)
    unscorable = attention_classifiers([{**r, "signals": {}} for r in records], tasks, keys, {}, FAST)
    assert unscorable["structure"]["reason"].startswith("no attention-structure features")
    gbt = attention_classifiers(*planted_records(shift=1.0, per_task=20)[:3], {},
                                ScoringSettings(n_resamples=100, repeats=1, permutations=0, attention_classifier="gbt"))
    for section in (scored["attention_classifiers"], unscorable, gbt):
        assert [p for p in schema_problems({"attention_classifiers": section})
                if p.startswith("$.attention_classifiers")] == []
    broken = {**gbt, "structure": {**gbt["structure"], "kind": "svm"}}
    problems = schema_problems({"attention_classifiers": broken})
    assert any(p.startswith("$.attention_classifiers.structure") for p in problems)
    lines = [block for block in signals_table(scored) if isinstance(block, str)]
    fusion = next(i for i, line in enumerate(lines) if line.startswith("fusion of"))
    assert lines[fusion + 1].startswith("attention-only classifier (logistic, 11 attention-structure features): "
                                        "within-task AUROC ")
    assert lines[fusion + 2].startswith(f"ensemble attention probe (logistic, normalised {ENSEMBLE_MAP} maps, "
                                        f"{LAYERS} x {GRID} x {GRID}): within-task AUROC ")
    assert "p = 0.050 (19 within-task permutations" in lines[fusion + 2]


def test_saved_traces_give_the_ensemble_probe_the_maps_a_run_scores() -> None:
    records, tasks, keys = planted_records(shift=0.0, per_task=30)
    maps = planted_maps(keys, [r["correct"] for r in records])
    results = {}
    for task in ("a", "b", "c"):
        kept = [(r, key) for r, t, key in zip(records, tasks, keys) if t == task]
        results[task] = TaskResult(SimpleNamespace(name=task), len(kept), [
            SampleRecord(r["doc_id"], correct=r["correct"], attention_maps={ENSEMBLE_MAP: maps[key]},
                         hidden_states={"hidden_last_prompt": np.zeros((LAYERS + 1, 4), np.float16)})
            for r, key in kept])
    live = trace_arrays(SimpleNamespace(results=results))
    files = RunFiles(Path("run"), "stem")
    saved = read_traces({files.traces(task): traces_npz(result) for task, result in results.items()})
    assert set(live) == set(saved) and sorted(saved[ENSEMBLE_MAP]) == sorted(keys)
    for name in live:
        assert all(np.array_equal(live[name][key], saved[name][key]) for key in live[name])
    assert (attention_classifiers(records, tasks, keys, live[ENSEMBLE_MAP], NO_TEST)
            == attention_classifiers(records, tasks, keys, saved[ENSEMBLE_MAP], NO_TEST))
