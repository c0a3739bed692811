"""Re-scoring is verified: results and groups recomputed from the records, records checked against their
metrics, and every file written beside a report checked against the content hash the report recorded."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from test_report_scoring import PlantedModel, results_of
from test_task_dialect import lmms_folder  # noqa: F401  (fixture)
from vrp_bench.api.files import content_hash
from vrp_bench.api.model import MODELS
from vrp_bench.cli import main
from vrp_bench.report.saved_run import load_run, recompute_results

Record = dict[str, Any]


@pytest.fixture(scope="module")
def constant_run(tmp_path_factory) -> Path:
    """The `constant` model (always "yes") on the vrp_shapes group, 8 docs per task, with per-sample files."""
    out = tmp_path_factory.mktemp("constant")
    assert main(["--model", "constant", "--tasks", "vrp_shapes", "--limit", "8", "--output_path", str(out),
                 "--log_samples", "--bootstrap_resamples", "100"]) == 0
    return out / "constant"


@pytest.fixture(scope="module")
def traced_run(tmp_path_factory) -> Path:
    """The `planted` model (signals and hidden states) on one task, with per-sample files, traces and probes."""
    out = tmp_path_factory.mktemp("traced")
    with MODELS.registered("planted", PlantedModel):
        assert main(["--model", "planted", "--tasks", "vrp_shapes_color", "--limit", "20", "--output_path", str(out),
                     "--log_samples", "--save_traces", "--bootstrap_resamples", "100"]) == 0
    return out / "planted"


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def edit_records(path: Path, edit: Callable[[list[Record]], None]) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    edit(records)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def samples_file(run: Path, task: str) -> Path:
    return next(run.glob(f"*_samples_{task}.jsonl"))


def test_the_report_hashes_every_file_written_beside_it(traced_run: Path, cli) -> None:
    report = results_of(traced_run)
    beside = {p.name: content_hash(p.read_bytes()) for p in traced_run.iterdir()
              if not p.name.endswith("_results.json")}
    assert report["files"] == beside
    assert {name.rsplit(".", 1)[1] for name in beside} >= {"jsonl", "npz"}  # samples, traces (and any probes)
    code, out, _ = cli("validate", next(traced_run.glob("*_results.json")))
    assert code == 0 and f"valid vrp-report/3; {len(beside)} of {len(beside)} listed files present and matching" in out


def test_a_run_without_files_beside_its_report_lists_none(cli, tmp_path: Path) -> None:
    assert cli("--model", "constant", "--tasks", "vrp_shapes_color", "--limit", "3", "--output_path", tmp_path,
               "--bootstrap_resamples", "100")[0] == 0
    assert results_of(tmp_path / "constant")["files"] == {}


def test_recomputed_results_and_groups_equal_what_the_run_wrote(constant_run: Path) -> None:
    report = results_of(constant_run)
    assert recompute_results(load_run(constant_run)) == (report["results"], report["groups"], [])
    assert report["configs"]["vrp_shapes_count"]["metric_list"] == [
        {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]


def test_score_from_unmodified_files_reproduces_results_groups_and_hashes(constant_run: Path, cli,
                                                                         tmp_path: Path) -> None:
    code, _, err = cli("score", constant_run, "--output", tmp_path / "rescored.json")
    assert code == 0, err
    original, rescored = results_of(constant_run), json.loads((tmp_path / "rescored.json").read_text())
    for key in ("results", "groups", "files"):
        assert rescored[key] == original[key], key
    code, out, _ = cli("validate", tmp_path / "rescored.json")  # its files are not beside it: not checked
    assert code == 0 and "0 of 7 listed files present and matching their hashes (7 absent: not checked)" in out


def test_an_edited_correct_is_refused_naming_the_file_and_doc(constant_run: Path, cli, tmp_path: Path) -> None:
    run = copy_of(constant_run, tmp_path)
    path = samples_file(run, "vrp_shapes_count")  # the targets are numbers: "yes" is always wrong

    def everything_correct(records: list[Record]) -> None:
        for record in records:
            record["correct"] = True

    edit_records(path, everything_correct)
    code, out, err = cli("score", run, "--output", tmp_path / "rescored.json")
    assert code == 2 and out == "" and not (tmp_path / "rescored.json").exists()
    assert err.strip() == (f"vrp-bench: error: {path.name}: doc 0: correct=true disagrees with exact_match=0.0 "
                           "(records edited after the run?)")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda record: record.pop("exact_match"), "doc 3: scored record has none of the metrics exact_match"),
    (lambda record: record.update(error="out of memory"),
     "doc 3: correct=false on a failed record (error set) must be null"),
])
def test_a_record_that_contradicts_its_metrics_is_refused(constant_run: Path, cli, tmp_path: Path,
                                                          edit: Callable[[Record], Any], message: str) -> None:
    run = copy_of(constant_run, tmp_path)
    path = samples_file(run, "vrp_shapes_count")
    edit_records(path, lambda records: edit(records[3]))
    code, _, err = cli("score", run)
    assert code == 2 and f"{path.name}: {message}" in err and len(err.strip().splitlines()) == 1


def test_a_consistent_edit_is_caught_by_the_hashes(traced_run: Path, cli, tmp_path: Path) -> None:
    run = copy_of(traced_run, tmp_path)
    path = samples_file(run, "vrp_shapes_color")

    def better_signal(records: list[Record]) -> None:
        records[0]["signals"]["p_tok"] = 0.999

    edit_records(path, better_signal)
    for command in ("validate", "score"):
        code, _, err = cli(command, next(run.glob("*_results.json")))
        assert code == 2, command
        assert err.strip() == (f"vrp-bench: error: {path.name}: content differs from its sha256 in "
                               f"{next(run.glob('*_results.json')).name} (edited after the run?)")


def test_traces_are_checked_before_they_are_read(traced_run: Path, cli, tmp_path: Path) -> None:
    run = copy_of(traced_run, tmp_path)
    traces = next(run.glob("*_traces_vrp_shapes_color.npz"))
    shutil.copy(traces, traces.with_name(traces.name.replace("color", "other")))
    code, _, err = cli("score", run)
    assert code == 2 and "_traces_vrp_shapes_other.npz is not among the files" in err
    traces.with_name(traces.name.replace("color", "other")).unlink()
    traces.write_bytes(traces.read_bytes()[:100])  # no longer an npz: refused, not read
    code, _, err = cli("score", run)
    assert code == 2 and f"{traces.name}: content differs from its sha256" in err


def test_custom_aggregations_are_kept_and_failed_docs_counted(cli, recording_model, lmms_folder: Path,  # noqa: F811
                                                             tmp_path: Path) -> None:
    assert cli("--model", "recording", "--model_args", "answer=red", "--tasks", "my_fn", "--include_path", lmms_folder,
               "--output_path", tmp_path, "--log_samples", "--bootstrap_resamples", "100")[0] == 0
    run = tmp_path / "recording"
    report = results_of(run)
    assert report["configs"]["my_fn"]["metric_list"][1]["aggregation"] == "!function utils.largest"
    code, out, err = cli("score", run, "--output", tmp_path / "rescored.json")
    assert code == 0, err
    assert ("kept as saved (custom aggregations are task code, not run again): "
            "my_fn length (!function utils.largest)") in out
    rescored = json.loads((tmp_path / "rescored.json").read_text())
    assert rescored["results"] == report["results"] and rescored["n-samples"]["my_fn"]["errors"] == 1
    edit_records(samples_file(run, "my_fn"), lambda records: records[2].update(correct=False))
    code, _, err = cli("score", run)
    assert code == 2 and "doc 2: correct=false on a failed record" in err
