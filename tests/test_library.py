"""``vrp_bench.evaluate``, the library entry point: the same report as the CLI, from a notebook."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

import vrp_bench
from vrp_bench.api.errors import UsageError
from vrp_bench.api.instance import Request, Response
from vrp_bench.api.model import MODELS, VLM
from vrp_bench.report.run_files import RunFiles
from vrp_bench.report.saved_run import load_run
from vrp_bench.scoring.settings import ScoringSettings

TASK = "vrp_shapes_color"
LIMIT = 8
RESAMPLES = 100


class Echo(VLM):
    """A notebook's model: no ``__init__``, answers that vary with the doc (right on some, wrong on others),
    no traces (so no signals: fast)."""

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        return [Response(text=("orange", "green")[request.doc_id % 2]) for request in requests]


def without_run_specifics(report: dict) -> dict:
    """The report less what legitimately differs between two runs: when they ran, how they were called, and the
    time stamp in the names of the files written beside it (their contents, hence hashes, must be equal)."""
    report = json.loads(json.dumps(report))
    for key in ("date", "date_iso", "total_evaluation_time_seconds"):
        del report[key]
    del report["config"]["command_line"]
    report["files"] = sorted((name.split("_", 1)[1], digest) for name, digest in report["files"].items())
    return report


def test_evaluate_from_a_notebook_gives_the_report_of_the_cli(cli, tmp_path: Path) -> None:
    result = vrp_bench.evaluate(Echo(), TASK, limit=LIMIT, seed=0, scoring=ScoringSettings(n_resamples=RESAMPLES),
                                output_path=tmp_path / "library", log_samples=True)
    assert isinstance(result, vrp_bench.Evaluation)
    assert result.report["config"]["model"] == "Echo"  # an unregistered instance is named by its class
    assert result.report["config"]["command_line"].startswith("vrp_bench.evaluate(model=<Echo instance>, tasks=")
    assert result.files is not None and result.files.folder == tmp_path / "library" / "Echo"
    assert result.written[-1] == result.files.results and all(path.is_file() for path in result.written)
    assert json.loads(result.files.results.read_text()) == result.report
    accuracy = result.report["results"][TASK]["exact_match,none"]
    assert 0 < accuracy < 1
    assert [s["prediction"] for s in result.samples[TASK]][:2] == ["orange", "green"]
    assert result.ablation is None and result.ablation_records == {}

    with MODELS.registered("Echo", Echo):
        code, out, err = cli("--model", "Echo", "--tasks", TASK, "--limit", LIMIT, "--bootstrap_resamples", RESAMPLES,
                             "--output_path", tmp_path / "cli", "--log_samples")
    assert code == 0, err
    assert f"wrote 2 file(s) to {tmp_path / 'cli' / 'Echo'}" in out
    (cli_results,) = (tmp_path / "cli" / "Echo").glob("*_results.json")
    cli_report = json.loads(cli_results.read_text())
    assert cli_report["config"]["command_line"].startswith("vrp-bench ")
    assert without_run_specifics(result.report) == without_run_specifics(cli_report)
    assert load_run(result.files.folder).samples == result.samples  # the written run reads back


def test_evaluate_a_registered_name_writes_nothing_without_an_output_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = vrp_bench.evaluate("constant", [TASK, "vrp_shapes_count"], model_args="answer=red", limit=3,
                                scoring=ScoringSettings(n_resamples=RESAMPLES))
    config = result.report["config"]
    assert (config["model"], config["model_args"], config["tasks"]) == ("constant", {"answer": "red"},
                                                                        f"{TASK},vrp_shapes_count")
    assert config["command_line"].startswith(  # each argument not at its default
        "vrp_bench.evaluate(model='constant', tasks='vrp_shapes_color,vrp_shapes_count', model_args='answer=red', "
        "limit=3, scoring=ScoringSettings(seed=0, n_resamples=100, ")
    assert result.files is None and result.written == [] and result.report["files"] == {}
    assert all(s["prediction"] == "red" for records in result.samples.values() for s in records)
    assert not list(tmp_path.iterdir())
    with pytest.raises(UsageError, match="log_samples needs output_path"):
        vrp_bench.evaluate("constant", TASK, log_samples=True)


class Unbuildable(VLM):
    def __init__(self) -> None:
        raise AssertionError("the model was built before the output path was checked")

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        raise AssertionError("unreachable")


def test_an_unwritable_output_path_fails_before_the_model_is_built(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with MODELS.registered("unbuildable", Unbuildable), pytest.raises(UsageError, match="cannot write to output path"):
        vrp_bench.evaluate("unbuildable", TASK, limit=2, output_path=blocker / "out")
    with pytest.raises(UsageError, match="already built: model_args and device"):
        vrp_bench.evaluate(Echo(), TASK, model_args={"answer": "no"})


def test_run_files_written_are_found_again_when_read(tmp_path: Path) -> None:
    files = RunFiles.for_run(tmp_path, "tiny_llava", 0.5)
    stamp = "1970-01-01T00-00-00.500000"  # the names every saved run has: they must keep loading
    assert files == RunFiles(tmp_path / "tiny_llava", stamp)
    tasks = ["vrp_shapes_color", "my_traces_task", "x"]
    expected = {files.results: f"{stamp}_results.json", files.probes("hidden_last_prompt"):
                f"{stamp}_probes_hidden_last_prompt"}
    for task in tasks:
        expected.update({files.samples(task): f"{stamp}_samples_{task}.jsonl",
                         files.ablation(task): f"{stamp}_ablation_{task}.jsonl",
                         files.traces(task): f"{stamp}_traces_{task}.npz"})
    assert {path: path.name for path in expected} == expected
    files.folder.mkdir()
    for path in expected:
        path.write_text("")
    (files.folder / "2000-01-01T00-00-00.000000_traces_other.npz").write_text("")  # another run's
    for found in (RunFiles.find_results(files.folder), RunFiles.find_results(files.results)):
        assert RunFiles.of(found) == files
    assert {RunFiles.traces_task(path) for path in files.saved_traces()} == set(tasks)
    (files.folder / "2000-01-01T00-00-00.000000_results.json").write_text("")
    with pytest.raises(UsageError, match="must hold exactly one"):
        RunFiles.find_results(files.folder)


def test_import_vrp_bench_stays_cheap() -> None:
    code = ("import sys, vrp_bench; assert vrp_bench.__version__; "
            "assert not {'torch', 'numpy', 'vrp_bench.run'} & set(sys.modules), sorted(sys.modules)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


def test_written_files_get_the_permissions_of_a_plain_open(tmp_path: Path) -> None:
    """Atomic writes go through a private temporary file (mkstemp: 0600); the file written is not private."""
    import os
    import stat

    from vrp_bench.api.files import atomic_path, write_files_atomically

    umask = os.umask(0o022)
    try:
        write_files_atomically({tmp_path / "report.json": "{}"})
        with atomic_path(tmp_path / "data.parquet") as temporary:
            temporary.write_bytes(b"x")
    finally:
        os.umask(umask)
    for name in ("report.json", "data.parquet"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
