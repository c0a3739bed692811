"""Hidden-state probes (held-out layer selection, control, provenance) and signal fusion."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vrp_bench.scoring.fusion import fuse_signals
from vrp_bench.scoring.heldout import HeldOutDesign
from vrp_bench.scoring.probes import load_probes, run_probes, save_probes
from vrp_bench.scoring.signal_quality import ScoringOptions, score_signal

N, LAYERS, HIDDEN, PLANTED = 300, 3, 8, 1
FAST = HeldOutDesign(repeats=2, permutations=39)


def probes(features: np.ndarray, y: np.ndarray, ids: list[str], n_resamples: int = 200, **kwargs):
    """``run_probes`` on one task, a quick design (2 repeats, 39 permutations)."""
    return run_probes(features, y, ids, ["vrp_shapes"] * len(y), design=FAST,
                      options=ScoringOptions(seed=0, n_resamples=n_resamples), **kwargs)


def planted_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Correctness readable from layer PLANTED only (one direction, shifted by 1.2 sd)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, N)
    features = rng.normal(size=(N, LAYERS, HIDDEN)).astype(np.float32)
    features[:, PLANTED, 0] += 1.2 * y
    return features, y, [f"vrp_shapes/{i}" for i in range(N)]


@pytest.fixture(scope="module")
def planted():
    features, y, ids = planted_data()
    result, fits = probes(features, y, ids, n_resamples=200, layer_ids=[10, 11, 12], last_k=2)
    return features, y, ids, result, fits


def test_planted_layer_wins_and_nested_selection_finds_it(planted):
    _, _, _, result, _ = planted
    per_layer = {entry["layer"]: entry["auroc"]["value"] for entry in result["per_layer"]}
    assert max(per_layer, key=per_layer.get) == 11 and per_layer[11] > 0.7
    assert result["nested"]["chosen_layers"] == [11] * 5
    assert result["nested"]["auroc"]["value"] > 0.7 and result["nested"]["auroc"]["ci"] is not None
    assert len(result["nested"]["inner_auroc"]) == 5 and all(len(row) == 3 for row in result["nested"]["inner_auroc"])
    test = result["nested"]["permutation_test"]
    assert test["p_value"] == pytest.approx(1 / 40) and test["n_permutations"] == 39 and test["within"] == "task"
    assert 0.4 <= test["null_mean"] <= 0.6 and test["null_band"][1] < result["nested"]["auroc"]["value"]
    assert len(result["nested"]["auroc"]["repeats"]) == 2 and result["nested"]["seeds"] == [0, 1]
    assert result["last_k_combined"]["layers"] == [11, 12] and result["last_k_combined"]["auroc"]["value"] > 0.6
    assert result["reason"] is None and result["n"] == N and result["kind"] == "logistic"
    json.dumps(result)  # JSON-ready


def test_each_prediction_comes_from_a_probe_that_never_saw_the_sample(planted):
    features, y, ids, result, fits = planted
    nested = [probe for probe in fits.folds if probe.pipeline == "nested"]
    assert [probe.fold for probe in nested] == list(range(5))
    held_out = [doc for probe in nested for doc in probe.test_doc_ids]
    assert sorted(held_out) == sorted(ids)  # every doc held out exactly once
    position = {doc: i for i, doc in enumerate(ids)}
    for probe in nested:
        assert not set(probe.train_doc_ids) & set(probe.test_doc_ids)
        assert set(probe.train_doc_ids) | set(probe.test_doc_ids) == set(ids)
        test = [position[doc] for doc in probe.test_doc_ids]
        x = features[test, probe.layers[0] - 10]  # layer ids 10, 11, 12 name slots 0, 1, 2
        z = (x - probe.arrays["scaler_mean"]) / probe.arrays["scaler_scale"]
        recomputed = 1.0 / (1.0 + np.exp(-(z @ probe.arrays["coef"] + probe.arrays["intercept"][0])))
        np.testing.assert_allclose(fits.oof_probability["nested"][test], recomputed, rtol=1e-5)
    assert result["nested"]["auroc"]["repeats"][0] == pytest.approx(roc_auc_score(y, fits.oof_probability["nested"]))


def test_layer_choice_of_a_fold_ignores_that_folds_test_samples(planted):
    features, y, ids, result, fits = planted
    fold0 = next(probe for probe in fits.folds if probe.pipeline == "nested" and probe.fold == 0)
    test = [ids.index(doc) for doc in fold0.test_doc_ids]
    changed = features.copy()
    changed[test] = np.random.default_rng(1).normal(size=changed[test].shape)  # same labels: same splits
    again, _ = probes(changed, y, ids, n_resamples=50, layer_ids=[10, 11, 12], last_k=2)
    assert again["nested"]["inner_auroc"][0] == result["nested"]["inner_auroc"][0]
    assert again["nested"]["inner_auroc"][1:] != result["nested"]["inner_auroc"][1:]


def test_probes_are_seeded_and_round_trip_through_save(planted, tmp_path):
    features, y, ids, result, fits = planted
    again, fits_again = probes(features, y, ids, n_resamples=200, layer_ids=[10, 11, 12], last_k=2)
    assert again == result
    npz_path, json_path = save_probes(fits, tmp_path / "probes" / "llava")
    assert npz_path.name == "llava.npz" and json_path.name == "llava.json"
    assert not [p for p in npz_path.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
    loaded = load_probes(tmp_path / "probes" / "llava")
    assert (loaded.kind, loaded.params, loaded.seed, loaded.doc_ids) == (fits.kind, fits.params, 0, ids)
    for saved, original, repeated in zip(loaded.folds, fits.folds, fits_again.folds):
        assert (saved.pipeline, saved.fold, saved.layers) == (original.pipeline, original.fold, original.layers)
        assert (saved.train_doc_ids, saved.test_doc_ids) == (original.train_doc_ids, original.test_doc_ids)
        assert saved.arrays.keys() == original.arrays.keys()
        for name in saved.arrays:
            np.testing.assert_array_equal(saved.arrays[name], original.arrays[name])
            np.testing.assert_array_equal(repeated.arrays[name], original.arrays[name])
    for pipeline, predictions in fits.oof_probability.items():
        np.testing.assert_array_equal(loaded.oof_probability[pipeline], predictions)
    assert [p.pipeline for p in loaded.folds] == ["nested"] * 5 + ["last_k_combined"] * 5


@pytest.mark.parametrize("kind", ["l1", "mlp"])
def test_other_probe_kinds_find_the_planted_layer(kind):
    features, y, ids = planted_data(seed=3)
    result, fits = run_probes(features, y, ids, ["vrp_shapes"] * N, kind=kind, design=HeldOutDesign(1, 0),
                              options=ScoringOptions(n_resamples=50))
    assert result["kind"] == kind and result["nested"]["chosen_layers"] == [PLANTED] * 5
    assert result["nested"]["auroc"]["value"] > 0.6 and result["nested"]["permutation_test"]["p_value"] is None
    weights = "weights_1" if kind == "mlp" else "coef"
    assert all(weights in probe.arrays for probe in fits.folds)


def test_probes_refuse_data_that_cannot_be_cross_validated():
    features, y, ids = planted_data()
    result, fits = probes(features, np.ones(N, dtype=int), ids)
    assert fits is None and result["nested"] is None and "smaller class has 0" in result["reason"]
    result, fits = probes(features[:8], y[:8], ids[:8])
    assert fits is None and "min_samples" in result["reason"]
    with pytest.raises(ValueError, match="unique"):
        probes(features, y, ["same"] * N)


def test_fusion_is_out_of_fold_and_scores_like_any_signal():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    informative = rng.normal(size=400) - 1.5 * y  # lower means correct: fusion learns the sign
    noise = [None if i % 20 == 0 else float(v) for i, v in enumerate(rng.normal(size=400))]
    fused = fuse_signals({"entropy": list(informative), "noise": noise}, y, seed=0)
    assert fused["reason"] is None and fused["n"] == 380 and fused["n_dropped"] == 20
    assert [p is None for p in fused["oof_probability"]] == [v is None for v in noise]
    complete = np.array([v is not None for v in noise])
    held_out = sorted(i for fold in fused["folds"] for i in fold["test_samples"])
    assert held_out == np.flatnonzero(complete).tolist()
    for fold in fused["folds"]:
        train = complete.copy()
        train[fold["test_samples"]] = False
        assert fold["z_mean"]["entropy"] == pytest.approx(informative[train].mean())
        assert fold["coef"]["entropy"] < 0
        z = (informative[fold["test_samples"]] - fold["z_mean"]["entropy"]) / fold["z_scale"]["entropy"]
        noise_z = (np.array([noise[i] for i in fold["test_samples"]]) - fold["z_mean"]["noise"]) / fold["z_scale"]["noise"]
        logit = fold["intercept"] + fold["coef"]["entropy"] * z + fold["coef"]["noise"] * noise_z
        expected = 1.0 / (1.0 + np.exp(-logit))
        np.testing.assert_allclose([fused["oof_probability"][i] for i in fold["test_samples"]], expected, rtol=1e-9)
    scored = score_signal(fused["oof_probability"], y, 1, probability=True, options=ScoringOptions(n_resamples=100))
    assert scored["n"] == 380 and scored["statistics"]["auroc"]["value"] > 0.8 and "brier" in scored["statistics"]
    json.dumps(fused)
    assert fuse_signals({"entropy": list(informative)}, np.ones(400), seed=0)["reason"] is not None


def test_batched_logistic_fits_match_sklearn():
    """``scoring.logistic``: every fit of one batch (other layers, other training rows, a constant feature, a
    nearly separable problem) reaches sklearn's optimum of the same objective on sklearn-standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from vrp_bench.scoring.logistic import fit_l2_logistic

    rng = np.random.default_rng(3)
    features = rng.normal(size=(240, 3, 16))
    features[:, :, 4] = 2.5  # constant: scale 1, weight 0
    labels = (3.0 * features[:, 2, 0] + 0.3 * rng.normal(size=240) > 0).astype(int)
    problems = [(layer, np.sort(rng.choice(240, size, replace=False))) for layer in range(3) for size in (60, 180)]
    for (layer, train), (scaler, fit) in zip(problems, fit_l2_logistic(features, labels, problems)):
        reference_scaler = StandardScaler().fit(features[train, layer])
        reference = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(
            reference_scaler.transform(features[train, layer]), labels[train])
        assert np.allclose(scaler.mean_, reference_scaler.mean_) and np.allclose(scaler.scale_, reference_scaler.scale_)
        assert np.abs(fit.coef_ - reference.coef_).max() < 1e-5
        assert abs(fit.intercept_[0] - reference.intercept_[0]) < 1e-5
        z = scaler.transform(features[:, layer])
        assert np.abs(fit.predict_proba(z) - reference.predict_proba(z)).max() < 1e-5
