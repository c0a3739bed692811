"""Building the leaderboard: ranks with intervals, bands the data supports, figures read from the reports, runs
that are not comparable or not readable listed with their reason, and the Markdown and site written at once."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import pytest

import vrp_bench
from test_report_scoring import PlantedModel
from vrp_bench.api.files import content_hash
from vrp_bench.api.instance import Request, Response
from vrp_bench.api.model import MODELS
from vrp_bench.interventions import AblationSettings, ablation_section, build_conditions
from vrp_bench.leaderboard.build import build_leaderboard
from vrp_bench.leaderboard.markdown import md
from vrp_bench.leaderboard.ranking import (
    bands,
    rank_intervals,
    robustness_curve,
    signal_entry,
)
from vrp_bench.leaderboard.submissions import slug
from vrp_bench.report.run_files import RunFiles
from vrp_bench.report.schema import schema_problems
from vrp_bench.report.writer import json_text, jsonl_text
from vrp_bench.scoring.settings import ScoringSettings

TASKS = "vrp_shapes_color,vrp_shapes_exists_random"
SC_SAMPLES = 5


class SelfConsistentModel(PlantedModel):
    """The planted test double with self-consistency samples whose agreement knows correctness. With probability
    ``noise`` a sample's planted signals (token log-prob, hidden state, agreement) carry nothing: a weaker model."""

    noise = 0.0

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        responses = super().generate(requests)
        for request, response in zip(requests, responses):
            rng = np.random.default_rng([request.seed, 7])
            right = response.text != "wrong"
            traces = response.traces
            if rng.random() < self.noise:  # the planted signals of this sample carry nothing
                hidden = traces.hidden_last_prompt.copy()
                hidden[1, 0] = rng.normal(0.0, 2.0)
                traces = dataclasses.replace(traces, hidden_last_prompt=hidden,
                                             token_logprobs=np.array([rng.normal(-1.0, 0.7)]))
                agreeing = rng.binomial(SC_SAMPLES, 0.7)
            else:
                agreeing = rng.binomial(SC_SAMPLES, 0.95 if right else 0.5)
            others = ["red", "blue", "green", "yes", "no"]
            answers = [response.text] * agreeing + [others[i] for i in rng.integers(0, 5, SC_SAMPLES - agreeing)]
            response.traces = dataclasses.replace(traces, sc_answers=answers)
        return responses


class WeakModel(SelfConsistentModel):
    noise = 0.6


def planted_run(model: str, cls: type, out: Path, seed: int = 0, limit: int = 40) -> Path:
    """A genuine run of ``cls`` registered as ``model`` (its report names the model so); the results file."""
    scoring = ScoringSettings(seed=seed, n_resamples=200, repeats=1, permutations=0)
    with MODELS.registered(model, cls):
        result = vrp_bench.evaluate(model, TASKS, limit=limit, seed=seed, scoring=scoring, output_path=out,
                                    log_samples=True, save_traces=True)
    return result.files.results


def add_ablation(results: Path, loss: float, seed: int = 0) -> None:
    """Give a run an ablation of its probe's layer as the runner records it (per-condition JSONL, the report's
    section computed by ``ablation_section``, file hashes updated): destroying a fraction p of the units turns a
    right answer wrong with probability ``loss`` x p (planted models have no layers to ablate)."""
    files = RunFiles.of(results)
    report = json.loads(results.read_text())
    samples = {task: [json.loads(line) for line in files.samples(task).read_text().splitlines()]
               for task in report["results"]}
    chosen = report["probes"]["hidden_last_prompt"]["nested"]["chosen_layers"]
    settings = AblationSettings(fractions=(0.0, 0.5, 1.0), seeds=2, patch_fraction=0.0)
    conditions = build_conditions(settings, [max(set(chosen), key=chosen.count)])
    rng = np.random.default_rng(seed)
    records: dict[str, list[dict[str, Any]]] = {}
    for task, task_samples in samples.items():
        records[task] = []
        for condition in conditions:
            for sample in task_samples:
                broken = bool(sample["correct"]) and rng.random() < loss * condition.fraction
                records[task].append({
                    "condition": condition.id, "doc_id": sample["doc_id"],
                    "prediction": "wrong" if broken else sample["prediction"],
                    "correct": bool(sample["correct"]) and not broken, "flipped": broken,
                    "first_token_kl": float(condition.fraction), "signals": {}, "signal_errors": {},
                    "probe_probability": None, "error": None})
    context = {"settings": settings.to_json(), "layers": [conditions[0].layer], "probe_chosen_layers": chosen,
               "conditions": [c.to_json() for c in conditions], "tracked_signals": [],
               "calibration": {"docs": 8, "tokens": 80}, "reference_mismatches": 0, "hooks_removed": True}
    report["ablation"] = ablation_section(samples, records, context, ScoringSettings(**report["config"]["scoring"]))
    for task, task_records in records.items():
        text = jsonl_text(task_records)
        files.ablation(task).write_text(text, encoding="utf-8")
        report["files"][files.ablation(task).name] = content_hash(text)
    assert schema_problems(report) == []
    results.write_text(json_text(report), encoding="utf-8")


def place(results: Path, root: Path, folder: str) -> Path:
    """Copy a run's files into ``<root>/submissions/<folder>/`` (as ``leaderboard submit`` places them)."""
    target = root / "submissions" / folder
    target.mkdir(parents=True, exist_ok=True)
    for path in results.parent.glob(f"{RunFiles.of(results).stem}_*"):
        shutil.copy(path, target / path.name)
    return target / results.name


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("runs")
    found = {"strong_s0": planted_run("strong", SelfConsistentModel, out / "a"),
             "strong_s1": planted_run("strong", SelfConsistentModel, out / "b", seed=1),
             "weak": planted_run("weak", WeakModel, out / "c"),
             "fewer_docs": planted_run("strong", SelfConsistentModel, out / "d", limit=30)}
    add_ablation(found["strong_s0"], 0.3)
    add_ablation(found["strong_s1"], 0.3, seed=1)
    add_ablation(found["weak"], 0.9)
    return found


@pytest.fixture(scope="module")
def board_root(runs, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("leaderboard")
    place(runs["strong_s0"], root, "strong")
    place(runs["strong_s1"], root, "strong")
    place(runs["weak"], root, "weak")
    place(runs["fewer_docs"], root, "strong-limit30")
    return root


@pytest.fixture(scope="module")
def built(board_root):
    return build_leaderboard(board_root, resamples=300)


def test_two_seeds_of_one_model_share_a_band_and_a_weaker_model_ranks_below(built) -> None:
    board, _ = built
    assert board.primary == "sc_auroc"
    labels = [(e.submission.name, e.submission.seed) for e in board.entries]
    assert labels[-1] == ("weak", 0) and sorted(labels[:2]) == [("strong", 0), ("strong", 1)]
    for key in ("sc_auroc", "signal_auroc", "probe_auroc", "robustness_auc"):
        figures = [e.figures[key] for e in board.entries]
        by_name = {(e.submission.name, e.submission.seed): e.figures[key] for e in board.entries}
        assert by_name[("strong", 0)].band == by_name[("strong", 1)].band, key  # the data cannot tell them apart
        assert by_name[("weak", 0)].band == "3", key
        for figure in figures:  # a band covers the positions its members' rank intervals reach
            low, high = (int(v) for v in (figure.band.split("-") * 2)[:2])
            assert low <= figure.rank[1] and figure.rank[0] <= high and figure.rank[0] <= figure.rank[1]


def test_every_figure_is_the_reports_own(built) -> None:
    board, _ = built
    for entry in board.entries:
        report = entry.submission.report
        summary = report["summary"]
        assert entry.figures["sc_auroc"].value == signal_entry(summary, "sc_agreement")["value"]
        assert entry.figures["sc_auroc"].ci == signal_entry(summary, "sc_agreement")["ci"]
        assert entry.figures["signal_auroc"].value == signal_entry(summary, "p_tok")["value"]
        assert entry.figures["probe_auroc"].value == summary["probe_auroc"]["value"]
        assert entry.figures["probe_gain"].ci == summary["probe_auroc"]["gain_over_task_only"]["ci"]
        assert entry.figures["fusion_auroc"].value == summary["fusion_auroc"]["value"]
        curve = robustness_curve(report)
        assert curve["selection"] == "random" and curve["layer"] == entry.most_predictive_layer
        assert entry.figures["robustness_auc"].value == curve["robustness_auc"]
        assert entry.figures["breaking_point"].value == curve["breaking_point"]
        assert entry.figures["fusion_auroc"].rank is None and entry.figures["fusion_auroc"].band is None


def test_a_run_with_other_docs_is_listed_apart_with_its_reason(built) -> None:
    board, _ = built
    ((submission, reasons),) = board.not_comparable
    assert submission.folder.name == "strong-limit30"
    assert any("different doc set" in reason for reason in reasons)
    assert board.not_on_board == []


def test_markdown_and_site_are_written(built, board_root) -> None:
    board, written = built
    markdown = (board_root / "LEADERBOARD.md").read_text()
    assert written[0] == board_root / "LEADERBOARD.md"
    assert "| 1-2 | strong (seed 0) |" in markdown or "| 1-2 | strong (seed 1) |" in markdown
    assert "| 3 | weak |" in markdown and "## Not comparable with the board" in markdown
    assert "strong\\-limit30" not in markdown and "submissions/strong-limit30/" in markdown
    index = (board_root / "site" / "index.html").read_text()
    assert index.count('<tr><td data-value="') == 3 and "different doc set" in index
    for entry in board.entries:
        page = board_root / "site" / "models" / f"{entry.submission.slug}.html"
        assert f'href="models/{entry.submission.slug}.html"' in index and page.is_file()
        images = sorted((page.parent / entry.submission.slug).glob("*.svg"))
        assert {"ablation_layer1.svg", "probe_per_layer.svg"} <= {p.name for p in images}
        for image in images:
            assert ElementTree.parse(image).getroot().tag == "{http://www.w3.org/2000/svg}svg"
            assert f'src="{entry.submission.slug}/{image.name}"' in page.read_text()
    assert (board_root / "site" / "models" / "strong-limit30.html").is_file()  # listed apart, with its page


def test_a_rebuild_changes_nothing_and_removes_a_dropped_runs_pages(board_root, tmp_path) -> None:
    root = Path(shutil.copytree(board_root, tmp_path / "board"))
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "submissions" not in p.parts}
    build_leaderboard(root, resamples=300)
    assert {p: p.read_bytes() for p in before} == before
    shutil.rmtree(root / "submissions" / "weak")
    build_leaderboard(root, resamples=300)
    assert not (root / "site" / "models" / "weak.html").exists()
    assert not (root / "site" / "models" / "weak").exists()


def test_edited_files_and_edited_figures_are_taken_off_the_board(runs, tmp_path) -> None:
    root = tmp_path / "board"
    place(runs["strong_s0"], root, "strong")
    edited_samples = place(runs["strong_s1"], root, "edited_samples")
    samples = next(edited_samples.parent.glob("*_samples_vrp_shapes_color.jsonl"))
    samples.write_text(samples.read_text().replace('"correct": false', '"correct": true', 1))
    edited_report = place(runs["weak"], root, "edited_report")
    report = json.loads(edited_report.read_text())
    signal_entry(report["summary"], "sc_agreement")["value"] += 0.2
    edited_report.write_text(json_text(report))
    (root / "submissions" / "empty").mkdir()
    board, _ = build_leaderboard(root, resamples=100)
    assert [e.submission.folder.name for e in board.entries] == ["strong"]
    problems = {s.folder.name: problem for s, problem in board.not_on_board}
    assert "content differs from its sha256" in problems["edited_samples"]
    assert "SC AUROC" in problems["edited_report"] and "edited after the run" in problems["edited_report"]
    assert "holds no" in problems["empty"]
    assert str(tmp_path) not in (root / "LEADERBOARD.md").read_text()  # paths relative to the board


def test_empty_or_missing_submissions_build_an_empty_board(cli, tmp_path) -> None:
    code, out, err = cli("leaderboard", "build", "--root", tmp_path)
    assert code == 0, err
    assert "no submissions" in out and "No submissions yet" in (tmp_path / "LEADERBOARD.md").read_text()
    assert "No submissions yet" in (tmp_path / "site" / "index.html").read_text()
    code, _, err = cli("leaderboard", "build", "--root", tmp_path / "absent")
    assert code == 2 and "is not a folder" in err


def test_cli_build(cli, board_root, tmp_path) -> None:
    root = Path(shutil.copytree(board_root, tmp_path / "board"))
    code, out, err = cli("leaderboard", "build", "--root", root, "--resamples", 100)
    assert code == 0, err
    assert "ranked 3 run(s); 1 not comparable" in out


def test_rank_intervals_and_bands() -> None:
    rng = np.random.default_rng(0)
    replicates = np.vstack([0.9 + 0.01 * rng.normal(size=500), 0.9 + 0.01 * rng.normal(size=500),
                            0.7 + 0.01 * rng.normal(size=500), np.full(500, np.nan)])
    intervals = rank_intervals(replicates)
    assert intervals[:2] == [(1, 2), (1, 2)] and intervals[2] == (3, 3) and intervals[3] == (4, 4)
    assert bands(intervals) == ["1-2", "1-2", "3", "4"]
    assert bands([(1, 2), (2, 3), (3, 4), (5, 5)]) == ["1-3", "1-3", "1-3", "4"]  # overlaps chain
    assert bands([]) == []


def test_names_are_escaped_and_slugged() -> None:
    name = "<img src=x onerror=alert(1)> a_b|c"
    assert md(name) == "&lt;img src=x onerror=alert(1)&gt; a\\_b\\|c"
    assert slug(name) == "img-src-x-onerror-alert-1-a_b-c" and slug("../..") == "run" and slug(".x") == "x"
