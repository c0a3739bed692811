"""The scored report end to end: a model whose signals are planted, the schema, and re-scoring from files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vrp_bench.api.instance import Request, Response
from vrp_bench.api.model import MODELS, VLM
from vrp_bench.api.traces import Traces

N_LAYERS, HIDDEN, GRID = 3, 16, 8


class PlantedModel(VLM):
    """Test double: right with probability 0.6; its token log-prob and layer-1 hidden state know whether it
    is right, its attention maps do not (random). Everything is seeded by the request."""

    name = "planted"

    def __init__(self, sc_samples: int = 0) -> None:
        self.sc_samples = sc_samples

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        responses = []
        for request in requests:
            rng = np.random.default_rng(request.seed)
            target = request.target if isinstance(request.target, str) else request.target[0]
            right = rng.random() < 0.6
            hidden = rng.normal(size=(N_LAYERS, HIDDEN)).astype(np.float16)
            hidden[1, 0] += 2.0 if right else -2.0
            last = np.random.default_rng([request.seed, 1]).normal(size=(1, HIDDEN)).astype(np.float16)
            hidden = np.vstack([hidden, last])  # hidden states 0..L (the last drawn apart: the stream stays as it was)
            attention = rng.random((N_LAYERS, GRID, GRID))
            responses.append(Response(
                text=target if right else "wrong",
                traces=Traces(
                    answer_attention_mean=attention, answer_attention_first=attention,
                    token_logprobs=np.array([rng.normal(-0.5 if right else -1.5, 0.5)]),
                    token_entropies=np.array([rng.random()]), token_margins=np.array([rng.random()]),
                    hidden_last_prompt=hidden,
                ),
            ))
        return responses


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory) -> Path:
    from vrp_bench.cli import main

    out = tmp_path_factory.mktemp("planted")
    with MODELS.registered("planted", PlantedModel):
        code = main(["--model", "planted", "--tasks", "vrp_shapes", "--limit", "60", "--output_path", str(out),
                     "--log_samples", "--save_traces", "--bootstrap_resamples", "300", "--permutations", "19",
                     "--cv_repeats", "2"])
    assert code == 0
    return out / "planted"


def results_of(folder: Path) -> dict:
    return json.loads(next(folder.glob("*_results.json")).read_text())


def test_planted_relations_are_recovered_out_of_fold(planted_run: Path) -> None:
    report = results_of(planted_run)
    within = report["signals"]["within_task"]
    assert within["n"] == 420
    p_tok = within["signals"]["p_tok"]["statistics"]["auroc"]
    assert p_tok["ci"][0] > 0.75 and within["signals"]["p_tok"]["n_strata"] == 7
    h_s = within["signals"]["h_s"]["statistics"]["r_pb"]
    assert h_s["ci"][0] < 0 < h_s["ci"][1]
    probe = report["probes"]["hidden_last_prompt"]
    assert probe["nested"]["auroc"]["value"] > 0.8
    assert probe["nested"]["chosen_layers"] == [1] * 5
    assert probe["nested"]["permutation_test"]["p_value"] == pytest.approx(1 / 20)
    assert 0.4 <= probe["nested"]["permutation_test"]["null_mean"] <= 0.6
    assert report["probes"]["hidden_first_answer"]["reason"].startswith("no hidden states")
    best = report["summary"]["best_signal"]
    assert {best["name"], *best["same_ranking_as"]} == {"p_tok", "p_tok_prob", "min_logprob", "perplexity"}
    assert best["n"] == 210 and best["ci"][0] > 0.7  # chosen on one half, reported on the other
    assert report["verdicts"]["cluster_failure"]["status"] != "does_not_hold"
    assert report["layers"]["h_s_layers"][0]["correct"]["n"] + report["layers"]["h_s_layers"][0]["incorrect"]["n"] == 420
    for name in ("structure", "ensemble_probe"):  # the stress test: random attention carries nothing
        attention = report["attention_classifiers"][name]["heldout"]
        assert attention["auroc"]["ci"][0] < 0.5 < attention["auroc"]["ci"][1], name


def test_trained_probes_are_saved_with_fold_provenance(planted_run: Path) -> None:
    meta = json.loads(next(planted_run.glob("*_probes_hidden_last_prompt.json")).read_text())
    folds = [f for f in meta["folds"] if f["pipeline"] == "nested"]
    assert len(folds) == 5
    for fold in folds:
        assert not set(fold["train_doc_ids"]) & set(fold["test_doc_ids"])
    assert next(planted_run.glob("*_probes_hidden_last_prompt.npz")).stat().st_size > 0


def test_score_reproduces_the_run_exactly(planted_run: Path, cli, tmp_path: Path) -> None:
    code, out, err = cli("score", planted_run, "--output", tmp_path / "rescored.json")
    assert code == 0, err
    original, rescored = results_of(planted_run), json.loads((tmp_path / "rescored.json").read_text())
    for section in ("signals", "diagnostics", "fusion", "attention_classifiers", "probes", "layers", "verdicts",
                    "summary"):
        assert rescored[section] == original[section], section
    assert original["attention_classifiers"]["ensemble_probe"]["heldout"] is not None  # the maps of --save_traces
    assert "Reliability signals" in out


def test_validate_accepts_runs_and_names_the_broken_path(planted_run: Path, cli, tmp_path: Path) -> None:
    path = next(planted_run.glob("*_results.json"))
    code, out, _ = cli("validate", path)
    assert code == 0 and "valid vrp-report/3" in out
    broken = json.loads(path.read_text())
    broken["signals"]["within_task"]["signals"]["p_tok"]["statistics"]["auroc"]["value"] = "high"
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    code, _, err = cli("validate", tmp_path / "broken.json")
    assert code == 2
    assert "$.signals.within_task.signals.p_tok.statistics.auroc.value" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "not.json").write_text("{oops")
    code, _, err = cli("validate", tmp_path / "not.json")
    assert code == 2 and "not JSON" in err


def test_show_prints_the_summary_again(planted_run: Path, cli) -> None:
    code, out, _ = cli("show", next(planted_run.glob("*_results.json")))
    assert code == 0 and "AUROC within [95% CI]" in out and "vrp_shapes_color" in out


def test_score_needs_the_sample_files(cli, tmp_path: Path) -> None:
    code, _, _ = cli("--model", "constant", "--tasks", "vrp_shapes_color", "--limit", "5", "--output_path", tmp_path,
                     "--bootstrap_resamples", "100")
    assert code == 0
    code, _, err = cli("score", tmp_path / "constant")
    assert code == 2 and "run with --log_samples" in err


class DegenerateModel(PlantedModel):
    """PlantedModel whose doc 0 of every task brings a zero-mass attention map and NaN token log-probs, and doc 1
    an empty answer (no answer token)."""

    name = "degenerate"

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        responses = super().generate(requests)
        for request, response in zip(requests, responses):
            if request.doc_id == 0:
                response.traces = replace(response.traces, answer_attention_mean=np.zeros((N_LAYERS, GRID, GRID)),
                                          token_logprobs=np.array([np.nan]))
            if request.doc_id == 1:
                empty = np.array([])
                response.text = ""
                response.traces = replace(response.traces, token_logprobs=empty, token_entropies=empty,
                                          token_margins=empty)
        return responses


def test_a_degenerate_sample_nulls_its_failed_signals_with_reasons_and_the_run_completes(cli, tmp_path) -> None:
    with MODELS.registered("degenerate", DegenerateModel):
        code, out, err = cli("--model", "degenerate", "--tasks", "vrp_shapes_color,vrp_shapes_spatial", "--limit", 30,
                             "--output_path", tmp_path, "--log_samples", "--bootstrap_resamples", 100,
                             "--permutations", 0, "--cv_repeats", 1)
    assert code == 0, err
    assert "degenerate" not in MODELS  # the test's registration is gone
    folder = tmp_path / "degenerate"
    first = json.loads(next(folder.glob("*_samples_vrp_shapes_color.jsonl")).read_text().splitlines()[0])
    assert first["error"] is None and first["correct"] is not None  # the sample itself is still scored
    assert first["signals"]["h_s"] is None and "zero total mass" in first["signal_errors"]["h_s"]
    assert first["signals"]["p_tok"] is None and "finite" in first["signal_errors"]["p_tok"]
    assert first["signals"]["mean_entropy"] is not None
    empty = json.loads(next(folder.glob("*_samples_vrp_shapes_color.jsonl")).read_text().splitlines()[1])
    assert empty["error"] is None and empty["prediction"] == "" and empty["correct"] is False  # scored: wrong
    assert empty["signals"]["p_tok"] is None and "p_tok" not in empty.get("signal_errors", {})  # inapplicable
    assert empty["signals"]["h_s"] is not None
    report = results_of(folder)
    failures = report["signal_failures"]["vrp_shapes_color"]
    assert failures["h_s"] == {"n": 1, "first_doc_id": 0, "first_reason": first["signal_errors"]["h_s"]}
    assert report["signals"]["tasks"]["vrp_shapes_color"]["signals"]["h_s"]["n"] == 29
    assert report["signals"]["tasks"]["vrp_shapes_color"]["signals"]["p_tok"]["n"] == 28
    assert "signal h_s failed on 1 sample(s)" in out


def test_the_writer_keeps_numpy_numbers_exact_and_refuses_anything_else() -> None:
    from vrp_bench.report.writer import json_text, jsonl_text

    data = {"f32": np.float32(0.25), "i64": np.int64(3), "flag": np.bool_(True), "nan": np.float32("nan")}
    assert json.loads(json_text(data)) == {"f32": 0.25, "i64": 3, "flag": True, "nan": None}
    assert json.loads(jsonl_text([data])) == json.loads(json_text(data))
    for bad in (np.zeros(2), object(), Path("x")):
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            json_text({"value": bad})
