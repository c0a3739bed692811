"""The report's ``mechanisms`` section on planted per-sample records whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from vrp_bench.scoring.mechanisms import mechanisms, ratio_of_sums
from vrp_bench.scoring.settings import ScoringSettings

SETTINGS = ScoringSettings(n_resamples=200)


def record(correct: bool, attention: list[float], mlp: list[float], image: list[float] | None = None) -> dict:
    signals = {"margin_attention_layers": attention, "margin_mlp_layers": mlp,
               "margin_unattributed_layers": [0.5] * len(attention)}
    if image is not None:
        signals["residual_update_image_layers"] = image
    return {"doc_id": 0, "correct": correct, "signals": signals}


def test_the_mlp_share_is_a_ratio_of_sums_split_by_correctness():
    rng = np.random.default_rng(0)
    records, tasks = [], []
    for i in range(60):
        correct = i % 2 == 0
        # correct samples: the MLPs add 3 of every 4 margin units (share 0.75); incorrect: 1 of 4 (share 0.25)
        scale = rng.uniform(0.5, 2.0)
        mlp_part = 0.75 if correct else 0.25
        records.append(record(correct, [scale * (1 - mlp_part), 0.0, 0.0], [0.0, scale * mlp_part, 0.0]))
        tasks.append("a" if i < 30 else "b")
    section = mechanisms(records, tasks, SETTINGS)["margin_attribution"]
    assert section["mlp_share_of_growth_correct"]["value"] == pytest.approx(0.75)
    assert section["mlp_share_of_growth_incorrect"]["value"] == pytest.approx(0.25)
    scales = np.array([sum(r["signals"]["margin_attention_layers"]) + sum(r["signals"]["margin_mlp_layers"])
                       for r in records])
    mlp = np.array([sum(r["signals"]["margin_mlp_layers"]) for r in records])
    assert section["mlp_share_of_growth"]["value"] == pytest.approx(mlp.sum() / scales.sum())
    low, high = section["mlp_share_of_growth"]["ci"]
    assert 0.25 < low < section["mlp_share_of_growth"]["value"] < high < 0.75
    blocks = np.array([np.add(r["signals"]["margin_attention_layers"], r["signals"]["margin_mlp_layers"])
                       for r in records]).mean(0)
    assert section["peak_layers"] == {"attention": 0, "mlp": 1, "blocks": int(np.argmax(blocks))}
    assert [row["unattributed"] for row in section["per_layer"]] == [0.5, 0.5, 0.5]
    assert section["n"] == 60


def test_no_growth_has_no_share():
    assert ratio_of_sums(np.array([1.0, 2.0]), np.array([-1.0, 0.5]), np.array(["a", "a"]), SETTINGS)["value"] is None
    section = mechanisms([{"doc_id": 0, "correct": True, "signals": {}}], ["a"], SETTINGS)
    assert "reason" in section["margin_attribution"] and section["margin_attribution"]["reason"]
    assert section["forcing"]["image"]["reason"]


def test_forcing_finds_the_planted_late_rise():
    # 4 decoder layers, the update norm rises at layer 3 (the late window: the last ceil(0.25 * 4) = 1 layer)
    records = [record(i % 2 == 0, [0.1] * 4, [0.1] * 4, image=[1.0, 1.1, 1.0, 4.0 + i % 3]) for i in range(30)]
    entry = mechanisms(records, ["a"] * 30, SETTINGS)["forcing"]["image"]
    profile = np.array([r["signals"]["residual_update_image_layers"] for r in records]).mean(0)
    assert entry["mean_profile"] == pytest.approx(profile.tolist())
    assert entry["forcing_layer"] == 3
    assert entry["late_forcing"]["value"] == pytest.approx(profile[3] / profile[:3].mean())
    assert entry["late_forcing"]["ci"][0] > 3
