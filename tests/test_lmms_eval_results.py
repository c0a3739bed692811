"""Result files both ways: a VRP-Bench report prints in lmms-eval's own table printer, and `vrp-bench show` /
`vrp-bench score` read a results folder written by lmms-eval itself (answers and metrics; no signals)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from vrp_bench.cli import main
from vrp_bench.report.schema import schema_problems

DOCS = [{"question": f"question {i}", "answer": "A" if i % 3 == 0 else "B"} for i in range(6)]
"""The tiny lmms-eval task's docs: lmms-eval's `dummy` model answers "A", right on 2 of 6."""


def table_rows(table: str) -> list[list[str]]:
    """The body rows of a Markdown table (cells stripped)."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


@pytest.fixture(scope="module")
def vrp_run(tmp_path_factory) -> Path:
    """The `constant` model on the vrp_shapes group (7 tasks), 4 docs each, with per-sample files."""
    out = tmp_path_factory.mktemp("vrp")
    assert main(["--model", "constant", "--tasks", "vrp_shapes", "--limit", "4", "--output_path", str(out),
                 "--log_samples", "--bootstrap_resamples", "100"]) == 0
    return next((out / "constant").glob("*_results.json"))


def test_lmms_eval_make_table_prints_a_vrp_report(vrp_run: Path) -> None:
    utils = pytest.importorskip("lmms_eval.utils")
    report = json.loads(vrp_run.read_text())
    assert report["n-shot"] == {task: 0 for task in report["results"]}
    assert not schema_problems(report)
    tasks = utils.make_table(copy.deepcopy(report))  # make_table pops each entry's alias
    rows = table_rows(tasks)
    header = [cell.strip() for cell in tasks.splitlines()[0].strip("|").split("|")]
    metric, shots = header.index("Metric"), header.index("n-shot")
    assert sorted(row[0] for row in rows) == sorted(report["results"])  # one row per task: no count rows
    assert {row[metric] for row in rows} == {"exact_match"} and {row[shots] for row in rows} == {"0"}
    groups = table_rows(utils.make_table(copy.deepcopy(report), "groups"))
    assert [(row[0], row[metric]) for row in groups] == [("vrp_shapes", "exact_match")]
    counts = report["n-samples"]["vrp_shapes_color"]
    assert counts == {"original": 300, "effective": 4, "scored": 4, "errors": 0}
    assert all("n" not in entry and "n_errors" not in entry for entry in report["results"].values())


def test_a_report_without_n_shot_breaks_the_schema(vrp_run: Path) -> None:
    """Every vrp-report/3 report has lmms-eval's layout: n-shot, and the sample counts in n-samples only."""
    report = json.loads(vrp_run.read_text())
    del report["n-shot"]
    assert schema_problems(report) == ["$: 'n-shot' is a required property"]
    report = json.loads(vrp_run.read_text())
    report["results"]["vrp_shapes_color"]["n"] = 4  # counts inside results (the layout before n-shot): refused
    assert any(problem.startswith("$.results.vrp_shapes_color") for problem in schema_problems(report))


LMMS_TASK = """\
task: tiny_lmms
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  max_new_tokens: 4
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def lmms_output(tmp_path_factory) -> Path:
    """A real lmms-eval output folder: its evaluator with its `dummy` model on a tiny local task, with
    --log_samples, saved by its EvaluationTracker exactly as its command line saves a run."""
    evaluator = pytest.importorskip("lmms_eval.evaluator")
    from lmms_eval import utils
    from lmms_eval.loggers import EvaluationTracker
    from lmms_eval.tasks import TaskManager

    root = tmp_path_factory.mktemp("lmms")
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "docs.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in DOCS))
    (tasks / "utils.py").write_text("def doc_to_visual(doc):\n    return []\n")
    (tasks / "tiny_lmms.yaml").write_text(LMMS_TASK.format(data=tasks / "docs.jsonl", cache=root / "cache"))
    output = root / "out"
    tracker = EvaluationTracker(output_path=str(output))
    stamp = utils.get_datetime_str()
    results = evaluator.simple_evaluate(model="dummy", model_args="response=A,model_name=dummy", tasks=["tiny_lmms"],
                                        log_samples=True, evaluation_tracker=tracker,
                                        task_manager=TaskManager("WARNING", include_path=str(tasks)),
                                        datetime_str=stamp)
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples, datetime_str=stamp)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    return output


def lmms_results(output: Path) -> tuple[Path, dict[str, Any]]:
    path = next(output.glob("*/*_results.json"))
    return path, json.loads(path.read_text())


def test_show_and_score_read_an_lmms_eval_run(lmms_output: Path, cli, tmp_path: Path) -> None:
    path, saved = lmms_results(lmms_output)
    assert path.parent.name == "dummy" and next(path.parent.glob("*_samples_tiny_lmms.jsonl"))
    accuracy = saved["results"]["tiny_lmms"]["exact_match,none"]
    assert accuracy == pytest.approx(2 / 6)
    for where in (lmms_output, path.parent, path):  # lmms-eval's --output_path, the model's folder, the file
        code, out, err = cli("show", where)
        assert code == 0, err
        assert ["tiny_lmms", "1.0", "6", "0", "exact_match", f"{accuracy:.4f}"] in [r[:6] for r in table_rows(out)]
        assert "lmms-eval records no reliability signals" in out
    code, out, err = cli("score", lmms_output, "--output", tmp_path / "scored.json")
    assert code == 0, err
    assert "No reliability signals in this run: accuracy only (n = 6 scored, accuracy 0.3333)" in out
    scored = json.loads((tmp_path / "scored.json").read_text())
    assert not schema_problems(scored)
    assert scored["results"]["tiny_lmms"]["exact_match,none"] == pytest.approx(accuracy, abs=1e-12)
    assert scored["summary"]["accuracy"] == pytest.approx(accuracy, abs=1e-12) and scored["summary"]["n"] == 6
    assert scored["signals"]["within_task"]["signals"] == {} and scored["summary"]["signal_auroc"] == {}
    assert scored["n-samples"]["tiny_lmms"] == {"original": 6, "effective": 6, "scored": 6, "errors": 0}
    assert scored["converted_from"]["format"] == "lmms-eval" and scored["model"]["name"] == "dummy"


def test_malformed_lmms_eval_files_give_one_line_errors(lmms_output: Path, cli, tmp_path: Path) -> None:
    run = Path(shutil.copytree(lmms_results(lmms_output)[0].parent, tmp_path / "run"))
    results_path = next(run.glob("*_results.json"))
    samples_path = next(run.glob("*_samples_tiny_lmms.jsonl"))

    def refused(command: str, *needles: str) -> None:
        code, out, err = cli(command, run)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (code, out, err)
        assert err.startswith("vrp-bench: error: ") and all(n in err for n in needles), err

    lines = samples_path.read_text().splitlines()
    samples_path.write_text("\n".join([lines[0], "{not json", *lines[2:]]) + "\n")
    refused("score", f"{samples_path.name}:2", "not JSON")
    samples_path.write_text("\n".join([lines[0], json.dumps({"target": "A"}), *lines[2:]]) + "\n")
    refused("score", f"{samples_path.name}:2", "doc_id")
    samples_path.unlink()
    refused("score", "--log_samples")
    text = results_path.read_text()
    results_path.write_text(text[: len(text) // 2])  # cut short
    for command in ("show", "score"):
        refused(command, results_path.name, "not JSON")
    results_path.write_text(json.dumps({"results": {"tiny_lmms": {"alias": "tiny_lmms"}},
                                        "configs": {"tiny_lmms": {"metric_list": "exact_match"}}}))
    for command in ("show", "score"):
        refused(command, "configs.tiny_lmms.metric_list")
    results_path.write_text(json.dumps({"results": [1, 2]}))
    for command in ("show", "score"):
        refused(command, "neither a VRP-Bench report")
