"""End to end on the shipped vrp_shapes tasks with the `constant` baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from conftest import REPO

SHAPES = REPO / "tasks" / "vrp_shapes"
SHAPES_TASKS = ["exists_random", "exists_popular", "exists_adversarial", "color", "count", "spatial", "caption"]


def yes_share(task: str, limit: int) -> float:
    """Share of "yes" answers among the first ``limit`` docs, read straight from the parquet file."""
    answers = pq.read_table(SHAPES / "data" / "64px" / f"{task}-test.parquet", columns=["answer"]).column("answer")
    first = answers.to_pylist()[:limit]
    return sum(a == "yes" for a in first) / len(first)


def test_constant_yes_accuracy_equals_share_of_yes_targets(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = cli("--model", "constant", "--model_args", "answer=yes", "--tasks", "vrp_shapes", "--limit", "20",
                            "--output_path", out, "--log_samples")
    assert code == 0, err
    folder = out / "constant"
    results_files = list(folder.glob("*_results.json"))
    assert len(results_files) == 1
    report = json.loads(results_files[0].read_text())
    for task in SHAPES_TASKS:
        name = f"vrp_shapes_{task}"
        assert report["results"][name]["exact_match,none"] == yes_share(task, 20)
        assert report["n-samples"][name] == {"original": 300, "effective": 20, "scored": 20, "errors": 0}
        samples = list(folder.glob(f"*_samples_{name}.jsonl"))
        assert len(samples) == 1
        lines = [json.loads(line) for line in samples[0].read_text().splitlines()]
        assert [s["doc_id"] for s in lines] == list(range(20))
        assert all(s["prediction"] == "yes" and s["correct"] == (s["target"] == "yes") for s in lines)
    group = report["groups"]["vrp_shapes"]
    assert sum(report["n-samples"][f"vrp_shapes_{t}"]["scored"] for t in SHAPES_TASKS) == 20 * len(SHAPES_TASKS)
    assert abs(group["exact_match,none"] - sum(yes_share(t, 20) for t in SHAPES_TASKS) / len(SHAPES_TASKS)) < 1e-12
    assert report["config"]["model_args"] == {"answer": "yes"} and report["config"]["seed"] == 0
    assert report["environment"]["versions"]["vrp-bench"]
    assert "vrp_shapes_spatial" in stdout and "| vrp_shapes " in stdout


def test_same_seed_same_output(cli, tmp_path: Path) -> None:
    for name in ("a", "b"):
        code, _, err = cli("--model", "constant", "--tasks", "vrp_shapes_count", "--limit", "5", "--seed", "3",
                           "--output_path", tmp_path / name, "--log_samples")
        assert code == 0, err
    a, b = (next((tmp_path / n / "constant").glob("*_samples_*.jsonl")).read_text() for n in ("a", "b"))
    assert a == b


def test_console_script_exit_codes() -> None:
    """The installed entry point: 0 on success, 2 on a usage error with a one-line message."""
    ok = subprocess.run([sys.executable, "-m", "vrp_bench", "--model", "constant", "--tasks", "vrp_shapes_color",
                         "--limit", "3"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "vrp_bench", "--model", "constant", "--tasks", "nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "unknown task 'nope'" in bad.stderr
