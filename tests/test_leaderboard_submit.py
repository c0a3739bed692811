"""Submitting to the leaderboard: a genuine run is placed; anything malformed, edited, duplicated, incomparable or
badly named is refused with its reason, and nothing is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import vrp_bench
from test_report_scoring import PlantedModel
from vrp_bench.api.errors import UsageError
from vrp_bench.leaderboard.submission import check_model_name, submit
from vrp_bench.scoring.settings import ScoringSettings


class CheckpointModel(PlantedModel):
    """The planted test double with a fingerprint, as a leaderboard model has."""

    name = "planted_ckpt"

    def describe(self) -> dict[str, Any]:
        return {"fingerprint": "0" * 64}


def planted_run(out: Path, seed: int = 0, limit: int = 30) -> Path:
    scoring = ScoringSettings(seed=seed, n_resamples=100, repeats=1, permutations=0)
    result = vrp_bench.evaluate(CheckpointModel(), "vrp_shapes_color", limit=limit, seed=seed, scoring=scoring,
                                output_path=out, log_samples=True, save_traces=True)
    return result.files.results


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    return {"seed0": planted_run(base / "a"), "seed1": planted_run(base / "b", seed=1),
            "fewer_docs": planted_run(base / "c", limit=20)}


def board_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def copy_run(results: Path, tmp_path: Path) -> Path:
    folder = Path(shutil.copytree(results.parent, tmp_path / "copy" / results.parent.name))
    return folder / results.name


def refused(path: Path, root: Path, reason: str) -> None:
    before = board_files(root)
    with pytest.raises(UsageError, match=reason):
        submit(path, root)
    assert board_files(root) == before  # nothing written


def test_a_genuine_run_is_placed_and_a_second_seed_joins_it_but_a_duplicate_is_refused(runs, tmp_path) -> None:
    root = tmp_path / "leaderboard"
    written = submit(runs["seed0"], root)
    folder = root / "submissions" / "planted_ckpt"
    assert written[-1] == folder / runs["seed0"].name and all(p.parent == folder for p in written)
    assert {p.name for p in folder.iterdir()} == {p.name for p in runs["seed0"].parent.iterdir() if p.is_file()}  # not the cache
    refused(runs["seed0"], root, "duplicate")
    submit(runs["seed1"], root)
    assert len(list(folder.glob("*_results.json"))) == 2
    refused(runs["fewer_docs"], root, "not comparable with the board .*doc set")


def test_edited_nan_schema_missing_file_and_no_fingerprint_are_refused(runs, tmp_path) -> None:
    root = tmp_path / "leaderboard"

    def edited(change) -> Path:
        path = copy_run(runs["seed0"], tmp_path / str(len(list(tmp_path.iterdir()))))
        report = json.loads(path.read_text())
        text = change(report)
        path.write_text(text if isinstance(text, str) else json.dumps(report))
        return path

    def more_accurate(report):
        report["summary"]["accuracy"] += 0.01

    refused(edited(more_accurate), root, r"summary\.accuracy is .* recomputed")
    refused(edited(lambda r: json.dumps(r).replace('"n_resamples": 100', '"n_resamples": NaN')), root, "NaN")
    refused(edited(lambda r: r.pop("results")), root, "breaks vrp-report/3")
    refused(edited(lambda r: r["model"].update(fingerprint=None)), root, "no fingerprint")
    missing = copy_run(runs["seed0"], tmp_path / "missing")
    next(missing.parent.glob("*_samples_*.jsonl")).unlink()
    refused(missing, root, "missing")


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "<img src=x onerror=alert(1)>", "x" * 65, ""])
def test_path_like_and_over_long_names_are_refused(name) -> None:
    with pytest.raises(UsageError, match="model name"):
        check_model_name(name)
    check_model_name("tiny_qwen2.5-vl+lora")  # a plain name


def test_a_path_like_name_in_a_report_is_refused_before_anything_else(runs, tmp_path) -> None:
    path = copy_run(runs["seed0"], tmp_path)
    report = json.loads(path.read_text())
    report["config"]["model"] = "../../etc"
    path.write_text(json.dumps(report))
    refused(path, tmp_path / "leaderboard", "not a plain name")


def test_verify_reruns_a_subset_and_finds_a_changed_answer_signal_or_checkpoint(runs, tmp_path) -> None:
    from vrp_bench.api.model import MODELS
    from vrp_bench.leaderboard.verification import agrees, verify_run

    path = copy_run(runs["seed0"], tmp_path)
    with MODELS.registered("planted_ckpt", CheckpointModel):
        clean = verify_run(path, limit=5)
        assert clean.passed and clean.fingerprint_matches and [t.compared for t in clean.tasks] == [5]
        samples = next(path.parent.glob("*_samples_*.jsonl"))
        records = [json.loads(line) for line in samples.read_text().splitlines()]
        records[1]["prediction"] = "purple"
        records[2]["signals"]["p_tok"] += 0.01
        records[3]["signals"]["p_tok"] += 1e-6  # within tolerance
        samples.write_text("".join(json.dumps(r) + "\n" for r in records))
        edited = verify_run(path, limit=5)
    found = {(doc, what) for doc, what, _, _ in edited.tasks[0].disagreements}
    assert found == {(1, "prediction"), (2, "signal p_tok")} and not edited.passed
    assert agrees([1.0, 2.0], [1.0, 2.00001]) and not agrees([1.0], [1.0, 2.0]) and not agrees(True, 1)


BOARD = Path(__file__).resolve().parents[1] / "leaderboard"


def test_the_cli_refuses_with_one_line_and_verifies_a_seeded_submission(runs, cli, tmp_path) -> None:
    path = copy_run(runs["seed0"], tmp_path)
    next(path.parent.glob("*_samples_*.jsonl")).unlink()
    code, _, err = cli("leaderboard", "submit", path.parent, "--root", tmp_path / "board")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "missing" in err
    assert not (tmp_path / "board").exists()
    code, out, _ = cli("leaderboard", "verify", BOARD / "submissions" / "tiny_llava", "--limit", 2)
    assert code == 0 and "model fingerprint: matches" in out and "verified" in out
