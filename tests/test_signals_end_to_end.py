"""Every tiny model of every family emits every signal for every sample, through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from vrp_bench.models.families import FAMILIES
from vrp_bench.signals.catalogue import SIGNALS

# Signals that are null by design for some samples: grounding needs a ground-truth box (absent objects have none).
NEEDS_BOX = {name for name, spec in SIGNALS.items() if "boxes" in spec.needs}
# Image tokens of a 64 px image: an 8 x 8 grid in every family (patch 8; Qwen's processor resizes it to 128 px, 2 x 2 merge).
GRID_CELLS = {"llava": 64, "paligemma": 64, "qwen2_vl": 64, "qwen2_5_vl": 64}


def run(cli, out: Path, family: str, *extra: str) -> list[dict]:
    code, _, err = cli("--model", f"tiny_{family}", "--tasks", "vrp_shapes", "--limit", "6", "--batch_size", "4",
                       "--output_path", out, "--log_samples", "--bootstrap_resamples", "100", "--permutations", "5",
                       "--cv_repeats", "1", *extra)
    assert code == 0, err
    return [json.loads(line) for path in sorted((out / f"tiny_{family}").glob("*_samples_*.jsonl"))
            for line in path.read_text().splitlines()]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_signal_for_every_sample(cli, tmp_path: Path, family: str) -> None:
    records = run(cli, tmp_path, family, "--sc_samples", "4")
    report = json.loads(next((tmp_path / f"tiny_{family}").glob("*_results.json")).read_text())
    n_layers = report["model"]["n_layers"]
    assert len(records) == 42
    for record in records:
        signals = record["signals"]
        assert set(signals) == set(SIGNALS), set(SIGNALS) ^ set(signals)
        for name, value in signals.items():
            if name in NEEDS_BOX and not record["doc"]["boxes"]:
                assert value is None, name
            else:
                assert value is not None, (name, record["doc_id"])
        assert len(signals["h_s_layers"]) == n_layers
        assert all(0.0 <= h <= math.log(GRID_CELLS[family]) + 1e-9 for h in signals["h_s_layers"])
        assert len(signals["sc_answers"]) == 4 and 0.25 <= signals["sc_agreement"] <= 1.0


def test_answers_are_identical_with_capture_on_and_off(cli, tmp_path: Path) -> None:
    on = run(cli, tmp_path / "on", "qwen2_5_vl", "--sc_samples", "0", "--save_traces")
    off = run(cli, tmp_path / "off", "qwen2_5_vl", "--model_args", "capture=false")
    assert [r["prediction"] for r in on] == [r["prediction"] for r in off]
    assert all(not r.get("signals") for r in off)
    assert all(r["signals"]["sc_answers"] is None for r in on)
    code, _, err = cli("score", tmp_path / "on" / "tiny_qwen2_5_vl", "--output", tmp_path / "rescored.json")
    assert code == 0, err
    original = json.loads(next((tmp_path / "on" / "tiny_qwen2_5_vl").glob("*_results.json")).read_text())
    rescored = json.loads((tmp_path / "rescored.json").read_text())
    for section in ("signals", "diagnostics", "probes", "layers", "verdicts", "summary"):
        assert rescored[section] == original[section]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_probe_null_is_at_chance_and_scores_are_held_out(cli, tmp_path: Path, family: str) -> None:
    code, _, err = cli("--model", f"tiny_{family}", "--tasks", "vrp_shapes", "--limit", "50", "--batch_size", "8",
                       "--sc_samples", "0", "--output_path", tmp_path, "--bootstrap_resamples", "200",
                       "--permutations", "20", "--cv_repeats", "2")
    assert code == 0, err
    folder = tmp_path / f"tiny_{family}"
    report = json.loads(next(folder.glob("*_results.json")).read_text())
    probe = report["probes"]["hidden_last_prompt"]
    null = probe["nested"]["permutation_test"]
    assert 0.4 <= null["null_mean"] <= 0.6 and null["n_permutations"] == 20 and null["null_band"][0] < 0.5
    assert probe["nested"]["auroc"]["n"] == report["signals"]["within_task"]["n"] == 350
    meta = json.loads(next(folder.glob("*_probes_hidden_last_prompt.json")).read_text())
    nested = [fold for fold in meta["folds"] if fold["pipeline"] == "nested"]
    tested = [doc for fold in nested for doc in fold["test_doc_ids"]]
    assert sorted(tested) == sorted(meta["doc_ids"])  # every sample is scored by exactly one held-out fold
    assert all(not set(fold["train_doc_ids"]) & set(fold["test_doc_ids"]) for fold in nested)
    assert [fold["layers"][0] for fold in nested] == probe["nested"]["chosen_layers"]
