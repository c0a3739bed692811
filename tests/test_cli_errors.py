"""Bad input: one line on stderr, exit 2, and no output files."""

from __future__ import annotations

from pathlib import Path

import pytest


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


GOOD_TASK = "task: {name}\ndataset_path: json\ndataset_kwargs: {{data_files: {{test: d.jsonl}}}}\ntest_split: test\n"


@pytest.fixture
def bad_tasks(tmp_path: Path) -> dict[str, Path]:
    """One folder per kind of broken task YAML."""
    folders = {}
    for kind, body in {
        "malformed": GOOD_TASK.format(name="broken") + "doc_to_text: question\n  doc_to_target: [oops\n",
        "no_text": GOOD_TASK.format(name="no_text") + "doc_to_target: answer\n",
        "bad_function": GOOD_TASK.format(name="bad_function") + "doc_to_text: !function utils.nowhere\ndoc_to_target: a\n",
        "missing_field": GOOD_TASK.format(name="missing_field") + "doc_to_text: '{{ qestion }}'\ndoc_to_target: answer\n",
    }.items():
        folder = tmp_path / kind
        write(folder / "task.yaml", body)
        write(folder / "utils.py", "def somewhere(doc):\n    return ''\n")
        write(folder / "d.jsonl", '{"question": "q", "answer": "a"}\n')
        folders[kind] = folder
    return folders


def assert_usage_error(result: tuple[int, str, str], *fragments: str) -> str:
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("vrp-bench: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def run(cli, out: Path, *args: str) -> tuple[int, str, str]:
    return cli("--output_path", out, "--log_samples", *args)


def test_unknown_task_suggests_close_names(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_usage_error(run(cli, out, "--model", "constant", "--tasks", "vrp_shapes_colour"),
                       "unknown task 'vrp_shapes_colour'", "did you mean vrp_shapes_color")
    assert not out.exists()


def test_unknown_model_suggests_close_names(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_usage_error(run(cli, out, "--model", "constnt", "--tasks", "vrp_shapes"), "unknown model 'constnt'", "constant")
    assert not out.exists()


def test_malformed_yaml_names_file_and_line(cli, tmp_path: Path, bad_tasks, caplog) -> None:
    out = tmp_path / "out"
    line = assert_usage_error(run(cli, out, "--model", "constant", "--tasks", "broken", "--include_path",
                                  bad_tasks["malformed"]), "unknown task 'broken'")
    assert "malformed YAML" in line and f"{bad_tasks['malformed'] / 'task.yaml'}:6:" in line
    assert not out.exists()
    # as in lmms-eval, one bad file does not stop the others from running; it is named in a warning
    code, _, err = cli("run", "--model", "constant", "--tasks", "vrp_shapes_color", "--limit", "2", "--include_path",
                       bad_tasks["malformed"])
    assert code == 0, err
    assert f"{bad_tasks['malformed'] / 'task.yaml'}:6: malformed YAML" in caplog.text


def test_task_without_doc_to_text(cli, tmp_path: Path, bad_tasks) -> None:
    out = tmp_path / "out"
    assert_usage_error(run(cli, out, "--model", "constant", "--tasks", "no_text", "--include_path", bad_tasks["no_text"]),
                       "task 'no_text': no doc_to_text")
    assert not out.exists()


def test_function_pointing_at_nothing(cli, tmp_path: Path, bad_tasks) -> None:
    out = tmp_path / "out"
    assert_usage_error(run(cli, out, "--model", "constant", "--tasks", "bad_function", "--include_path",
                           bad_tasks["bad_function"]), "!function utils.nowhere", "has no function 'nowhere'")
    assert not out.exists()


def test_template_naming_a_missing_dataset_field(cli, tmp_path: Path, bad_tasks) -> None:
    out = tmp_path / "out"
    assert_usage_error(run(cli, out, "--model", "constant", "--tasks", "missing_field", "--include_path",
                           bad_tasks["missing_field"]), "doc_to_text uses field 'qestion'", "'question'")
    assert not out.exists()


@pytest.mark.parametrize("limit", ["-1", "0", "abc", "1.5"])
def test_bad_limit(cli, tmp_path: Path, limit: str) -> None:
    out = tmp_path / "out"
    assert_usage_error(run(cli, out, "--model", "constant", "--tasks", "vrp_shapes", "--limit", limit), "--limit")
    assert not out.exists()


@pytest.mark.parametrize(
    ("model_args", "fragment"),
    [("answer", "expected key=value"), ("=yes", "expected key=value"), ("answer=a,answer=b", "given twice"),
     ("anser=yes", "has no model_arg 'anser' (did you mean answer?)")],
)
def test_malformed_model_args(cli, tmp_path: Path, model_args: str, fragment: str) -> None:
    out = tmp_path / "out"
    assert_usage_error(run(cli, out, "--model", "constant", "--tasks", "vrp_shapes", "--model_args", model_args), fragment)
    assert not out.exists()


def test_log_samples_without_output_path(cli) -> None:
    assert_usage_error(cli("--model", "constant", "--tasks", "vrp_shapes", "--log_samples"), "--log_samples needs --output_path")


def test_unwritable_output_path(cli) -> None:
    # /proc refuses new entries even for root
    assert_usage_error(cli("--model", "constant", "--tasks", "vrp_shapes_color", "--limit", "2", "--output_path",
                           "/proc/vrp-bench-out"), "cannot write to output path /proc/vrp-bench-out")


def test_output_path_under_a_file(cli, tmp_path: Path) -> None:
    blocker = write(tmp_path / "file", "x")
    assert_usage_error(cli("--model", "constant", "--tasks", "vrp_shapes_color", "--limit", "2", "--output_path",
                           blocker / "out"), "cannot write to output path", "Not a directory")


def test_unknown_flag_is_one_line(cli) -> None:
    assert_usage_error(cli("--model", "constant", "--tasks", "vrp_shapes", "--bogus"), "No such option")


def test_signals_command_lists_orientations(cli) -> None:
    code, out, _ = cli("signals")
    assert code == 0
    assert "| sc_agreement" in out and "measured, not scored" in out


def test_a_run_where_every_doc_fails_exits_1_naming_the_error(cli, recording_model, tmp_path) -> None:
    code, _, err = cli("--model", "recording", "--model_args", "fail_doc=0", "--tasks", "vrp_shapes_color",
                       "--limit", "1", "--output_path", tmp_path, "--log_samples")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "vrp_shapes_color: 1 of 1 docs failed (every doc)" in err and "out of memory" in err
    assert not list(tmp_path.rglob("*.json*"))  # nothing written


def test_max_failed_share_ends_a_run_with_too_many_failures(cli, recording_model, tmp_path) -> None:
    assert cli("--model", "recording", "--model_args", "fail_doc=0", "--tasks", "vrp_shapes_color", "--limit", "4",
               "--bootstrap_resamples", "100")[0] == 0  # one failed doc of four: counted, the run goes on
    code, _, err = cli("--model", "recording", "--model_args", "fail_doc=0", "--tasks", "vrp_shapes_color",
                       "--limit", "4", "--max_failed_share", "0.2")
    assert code == 1 and "1 of 4 docs failed (more than 20% of the docs)" in err


def test_a_vlm_subclass_without_its_own_constructor_runs_and_refuses_model_args(cli, tmp_path) -> None:
    from vrp_bench.api.instance import Response
    from vrp_bench.api.model import MODELS, VLM

    class Yes(VLM):
        def generate(self, requests):
            return [Response(text="yes") for _ in requests]

    with MODELS.registered("always_yes", Yes):
        assert cli("--model", "always_yes", "--tasks", "vrp_shapes_exists_random", "--limit", "3")[0] == 0
        code, _, err = cli("--model", "always_yes", "--model_args", "k=1", "--tasks", "vrp_shapes_color")
    assert code == 2 and "has no model_arg 'k'" in err and "accepted: none" in err


@pytest.mark.parametrize(("device", "fragment"), [("cuda:99", "CUDA device(s)"), ("gpu0", "is not a device"),
                                                  ("meta", "VRP-Bench runs on")])
def test_a_device_this_machine_does_not_have_is_a_one_line_error(cli, tmp_path: Path, device: str, fragment: str) -> None:
    out = tmp_path / "out"
    assert_usage_error(run(cli, out, "--model", "tiny_qwen2_vl", "--tasks", "vrp_shapes_color", "--limit", "2",
                           "--device", device), "--device", fragment)
    assert not out.exists()


def test_device_auto_is_resolved_and_recorded(cli, tmp_path: Path) -> None:
    import json

    import torch

    code, _, err = run(cli, tmp_path / "out", "--model", "tiny_qwen2_vl", "--model_args", "sc_samples=0", "--tasks",
                       "vrp_shapes_color", "--limit", "2", "--device", "auto")
    assert code == 0, err
    report = json.loads(next((tmp_path / "out").rglob("*_results.json")).read_text())
    expected = "cuda:0" if torch.cuda.is_available() else "mps:0" if torch.backends.mps.is_available() else "cpu"
    assert report["model"]["device"] == expected and report["model"]["dtype"] == "float32"
