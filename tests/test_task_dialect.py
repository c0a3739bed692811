"""The lmms-eval task dialect: a task folder written for lmms-eval runs here via --include_path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from vrp_bench.api.errors import UsageError
from vrp_bench.api.task_index import TaskIndex
from vrp_bench.api.yaml_dialect import load_task_yaml

UTILS = '''
import os
from PIL import Image

HERE = os.path.dirname(__file__)


def doc_to_visual(doc):
    return [Image.open(os.path.join(HERE, "data", doc["image_path"]))]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    return kwargs.get("pre_prompt", "") + doc["question"] + kwargs.get("post_prompt", "")


def doc_to_target(doc):
    return doc["answer"].upper()


def doc_to_messages(doc, lmms_eval_specific_kwargs=None):
    image = doc_to_visual(doc)[0]
    return [{"role": "user", "content": [{"type": "image", "url": image}, {"type": "text", "text": doc["question"]}]}]


def process_docs(dataset):
    return dataset.filter(lambda doc: not doc["skip"])


def process_results(doc, results):
    return {"hit": float(results[0].strip().lower() == doc["answer"]), "length": float(len(results[0]))}


def largest(values):
    return max(values)


def broken_prompt(doc, lmms_eval_specific_kwargs=None):
    return doc["no_such_field"]


def broken_results(doc, results):
    raise ZeroDivisionError("a bug in the task's scoring")
'''

DOCS = [
    {"question": "what color is the square", "answer": "red", "image_path": "red.png", "skip": False},
    {"question": "what color is the circle", "answer": "blue", "image_path": "blue.png", "skip": False},
    {"question": "is this skipped", "answer": "yes", "image_path": "red.png", "skip": True},
    {"question": "what color is the broken one", "answer": "green", "image_path": "corrupt.png", "skip": False},
]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture
def lmms_folder(tmp_path: Path) -> Path:
    """A task folder in lmms-eval's style: shared template, utils.py, Jinja, local JSON data with images."""
    root = tmp_path / "mytasks"
    data = root / "data"
    data.mkdir(parents=True)
    Image.new("RGB", (16, 16), (255, 0, 0)).save(data / "red.png")
    Image.new("RGB", (16, 16), (0, 0, 255)).save(data / "blue.png")
    (data / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (data / "qa.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (root / "utils.py").write_text(UTILS)
    write(root / "_default_template_yaml", """
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: data/qa.jsonl
        test_split: test
        output_type: generate_until
        doc_to_visual: !function utils.doc_to_visual
        doc_to_target: answer
        process_docs: !function utils.process_docs
        generation_kwargs:
          max_new_tokens: 7
          until: ["\\n\\n"]
        metadata:
          version: 2.5
        """)
    write(root / "my_fn.yaml", """
        include: _default_template_yaml
        task: my_fn
        tag: my_tag
        doc_to_text: !function utils.doc_to_text
        process_results: !function utils.process_results
        metric_list:
          - metric: hit
            aggregation: mean
            higher_is_better: true
          - metric: length
            aggregation: !function utils.largest
            higher_is_better: false
        lmms_eval_specific_kwargs:
          default:
            pre_prompt: "Q: "
            post_prompt: " A:"
          recording:
            post_prompt: " Answer:"
        """)
    write(root / "my_jinja.yaml", """
        include: _default_template_yaml
        task: my_jinja
        tag: [my_tag]
        doc_to_text: "Question: {{ question | upper }}?"
        doc_to_target: "{{ answer }}"
        generation_kwargs:
          max_new_tokens: 3
          temperature: 0.7
          do_sample: true
          top_p: 0.9
        """)
    write(root / "my_column.yaml", """
        include: _default_template_yaml
        task: my_column
        doc_to_text: question
        doc_to_target: !function utils.doc_to_target
        """)
    write(root / "my_messages.yaml", """
        include: _default_template_yaml
        task: my_messages
        doc_to_visual: null
        doc_to_messages: !function utils.doc_to_messages
        test_split: null
        validation_split: test
        """)
    write(root / "_my_group.yaml", """
        group: my_group
        task:
          - my_fn
          - my_jinja
        """)
    return root


def test_task_code_that_fails_on_every_doc_ends_the_run_naming_the_error(cli, recording_model, lmms_folder: Path,
                                                                         tmp_path: Path) -> None:
    write(lmms_folder / "my_broken_prompt.yaml", """
        include: _default_template_yaml
        task: my_broken_prompt
        doc_to_text: !function utils.broken_prompt
        """)
    write(lmms_folder / "my_broken_results.yaml", """
        include: _default_template_yaml
        task: my_broken_results
        doc_to_text: question
        doc_to_visual: null
        process_results: !function utils.broken_results
        metric_list:
          - metric: hit
        """)
    out = tmp_path / "out"
    code, _, err = run_task(cli, lmms_folder, "my_broken_prompt", "--output_path", out)
    assert code == 1 and "my_broken_prompt: 3 of 3 docs failed (every doc)" in err and "KeyError" in err
    code, _, err = run_task(cli, lmms_folder, "my_broken_results", "--output_path", out)
    assert code == 1 and "every doc" in err and "process_results failed: ZeroDivisionError" in err
    assert not [path for path in out.rglob("*") if path.is_file()]  # nothing written


def run_task(cli, folder: Path, task: str, *extra: str) -> tuple[int, str, str]:
    return cli("--model", "recording", "--tasks", task, "--include_path", folder, *extra)


def test_include_merges_template_and_including_file_wins(lmms_folder: Path) -> None:
    raw = load_task_yaml(lmms_folder / "my_jinja.yaml")
    assert raw["dataset_path"] == "json"
    assert raw["generation_kwargs"]["max_new_tokens"] == 3  # the including file wins
    assert raw["metadata"] == {"version": 2.5}


def test_function_task_prompts_kwargs_scores_and_failed_image(cli, recording_model, lmms_folder: Path, tmp_path: Path) -> None:
    code, out, err = run_task(
        cli, lmms_folder, "my_fn", "--model_args", "answer=red", "--output_path", tmp_path / "out", "--log_samples"
    )
    assert code == 0, err
    prompts = [r.prompt for r in recording_model.seen]
    # process_docs dropped the skipped doc; the per-model entry replaces `default` (lmms-eval's rule: no pre_prompt)
    assert prompts == ["what color is the square Answer:", "what color is the circle Answer:"]
    assert recording_model.seen[0].generation.max_new_tokens == 7
    assert recording_model.seen[0].generation.until == ("\n\n",)
    assert recording_model.seen[0].images[0].getpixel((0, 0)) == (255, 0, 0)
    report = json.loads(next((tmp_path / "out" / "recording").glob("*_results.json")).read_text())
    result = report["results"]["my_fn"]
    assert result["hit,none"] == 0.5  # red right, blue wrong; the corrupt doc is not scored
    assert result["length,none"] == 3.0  # custom !function aggregation
    assert report["n-samples"]["my_fn"]["scored"] == 2 and report["n-samples"]["my_fn"]["errors"] == 1
    assert report["versions"]["my_fn"] == 2.5
    assert report["errors"]["my_fn"][0]["doc_id"] == 2
    assert "decode" in report["errors"]["my_fn"][0]["reason"] or "identify" in report["errors"]["my_fn"][0]["reason"]
    samples = [json.loads(line) for line in next((tmp_path / "out" / "recording").glob("*_samples_my_fn.jsonl")).open()]
    assert [s["error"] is not None for s in samples] == [False, False, True]
    assert samples[2]["correct"] is None and "hit" not in samples[2]
    assert "1 sample(s) failed" in out


def test_jinja_prompt_and_generation_kwargs(cli, recording_model, lmms_folder: Path) -> None:
    code, _, err = run_task(cli, lmms_folder, "my_jinja", "--limit", "1")
    assert code == 0, err
    request = recording_model.seen[0]
    assert request.prompt == "Question: WHAT COLOR IS THE SQUARE?"
    assert request.target == "red"
    assert (request.generation.max_new_tokens, request.generation.temperature) == (3, 0.7)
    assert request.generation.do_sample and request.generation.top_p == 0.9


def test_gen_kwargs_override_task_settings(cli, recording_model, lmms_folder: Path) -> None:
    code, _, err = run_task(cli, lmms_folder, "my_jinja", "--limit", "1", "--gen_kwargs", "max_new_tokens=5,do_sample=false")
    assert code == 0, err
    settings = recording_model.seen[0].generation
    assert settings.max_new_tokens == 5 and not settings.do_sample and settings.temperature == 0.7


def test_column_prompt_and_function_target(cli, recording_model, lmms_folder: Path) -> None:
    code, out, err = run_task(cli, lmms_folder, "my_column", "--model_args", "oracle=true", "--limit", "2")
    assert code == 0, err
    assert [r.prompt for r in recording_model.seen] == ["what color is the square", "what color is the circle"]
    assert [r.target for r in recording_model.seen] == ["RED", "BLUE"]
    assert "exact_match" in out  # default metric when metric_list is absent


def test_messages_task_and_validation_split(cli, recording_model, lmms_folder: Path) -> None:
    code, _, err = run_task(cli, lmms_folder, "my_messages", "--limit", "1")
    assert code == 0, err
    request = recording_model.seen[0]
    assert request.messages[0]["content"][1]["text"] == "what color is the square"
    assert len(request.images) == 1 and request.prompt == "what color is the square"


def test_group_and_tag_expand_to_their_tasks(lmms_folder: Path) -> None:
    index = TaskIndex([lmms_folder])
    assert index.select("my_group")[0] == ["my_fn", "my_jinja"]
    assert index.select("my_tag")[0] == ["my_fn", "my_jinja"]
    assert index.select("my_*")[0] == ["my_column", "my_fn", "my_jinja", "my_messages"]
    assert "vrp_shapes_color" in index.select("all")[0]


def test_parquet_with_embedded_images_and_load_from_disk(cli, recording_model, tmp_path: Path) -> None:
    import datasets

    features = datasets.Features({"question": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "image": datasets.Image()})
    rows = {"question": ["q0", "q1"], "answer": ["a", "b"],
            "image": [Image.new("RGB", (8, 8), (0, 255, 0)), Image.new("RGB", (8, 8), (9, 9, 9))]}
    dataset = datasets.Dataset.from_dict(rows, features=features)
    folder = tmp_path / "tasks"
    folder.mkdir()
    dataset.to_parquet(str(folder / "data.parquet"))
    datasets.DatasetDict({"val": dataset}).save_to_disk(str(folder / "saved"))
    common = "doc_to_visual: image\ndoc_to_text: question\ndoc_to_target: answer\n"
    write(folder / "pq.yaml", "task: pq\ndataset_path: parquet\ndataset_kwargs: {data_files: {test: data.parquet}}\n"
          "test_split: test\n" + common)
    write(folder / "disk.yaml", "task: disk\ndataset_path: saved\ndataset_kwargs: {load_from_disk: true}\n"
          "validation_split: val\n" + common)
    code, out, err = cli("--model", "recording", "--model_args", "oracle=true", "--tasks", "pq,disk", "--include_path", folder)
    assert code == 0, err
    assert [r.images[0].getpixel((0, 0)) for r in recording_model.seen] == [(0, 255, 0), (9, 9, 9)] * 2
    assert out.split("\n\n")[0].count("1.0000") == 2  # both tasks right (the results table)


def test_dataset_name_and_kwargs_reach_load_dataset(monkeypatch, tmp_path: Path) -> None:
    import datasets

    seen = {}

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        seen.update(path=path, name=name, split=split, **kwargs)
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    write(tmp_path / "hub.yaml", "task: hub\ndataset_path: org/data\ndataset_name: subset\ndataset_kwargs: {token: true}\n"
          "test_split: test\ndoc_to_text: q\ndoc_to_target: a\n")
    task = TaskIndex([tmp_path]).build("hub")
    with pytest.raises(UsageError, match="cannot load dataset 'org/data': offline"):
        task.load()
    assert seen == {"path": "org/data", "name": "subset", "split": "test", "token": True}


def test_all_skips_unloadable_tasks_but_a_named_one_is_an_error(cli, tmp_path: Path) -> None:
    write(tmp_path / "hub.yaml", "task: zz_hub_task\ndataset_path: org/not-cached\ntest_split: test\n"
          "doc_to_text: q\ndoc_to_target: a\n")
    code, out, err = cli("--model", "constant", "--tasks", "all", "--include_path", tmp_path, "--limit", "2",
                         "--output_path", tmp_path / "out")
    assert code == 0, err
    assert "skipped zz_hub_task: data not on this machine: no (hub dataset); name the task to fetch it" in out
    report = json.loads(next((tmp_path / "out" / "constant").glob("*_results.json")).read_text())
    assert "zz_hub_task" in report["skipped"] and "vrp_shapes_color" in report["results"]
    code, _, err = cli("--model", "constant", "--tasks", "zz_hub_task", "--include_path", tmp_path)
    assert code == 2 and "cannot load dataset" in err


def test_unsupported_output_type_is_named(cli, tmp_path: Path) -> None:
    write(tmp_path / "mc.yaml", "task: mc\noutput_type: loglikelihood_rolling\ndataset_path: json\ntest_split: test\n"
          "doc_to_text: q\ndoc_to_target: a\n")
    code, _, err = cli("--model", "constant", "--tasks", "mc", "--include_path", tmp_path)
    assert code == 2
    assert "output_type 'loglikelihood_rolling' is not supported" in err


def test_list_form_metadata_is_merged_as_lmms_eval_writes_it(tmp_path: Path) -> None:
    base = "output_type: generate_until\ndataset_path: json\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n"
    write(tmp_path / "listed.yaml", "task: listed\n" + base + "metadata:\n  - version: 1.5\n  - note: two\n")
    write(tmp_path / "scalar.yaml", "task: scalar\n" + base + "metadata: 3\n")
    index = TaskIndex([tmp_path])
    config = index.build("listed").config
    assert config.version == 1.5 and config.metadata == {"version": 1.5, "note": "two"}
    with pytest.raises(UsageError, match="scalar.yaml.*metadata must be a mapping or a list of mappings"):
        index.build("scalar")


def test_an_unknown_metric_lists_the_known_ones_instead_of_a_command_that_does_not_exist(cli, tmp_path) -> None:
    write(tmp_path / "typo.yaml", "task: typo\noutput_type: generate_until\ndataset_path: json\ntest_split: test\n"
          "doc_to_text: q\ndoc_to_target: a\nmetric_list:\n  - metric: exact_mach\n")
    code, _, err = cli("--model", "constant", "--tasks", "typo", "--include_path", tmp_path)
    assert code == 2 and "unknown metric 'exact_mach'" in err and "exact_match" in err and "known generate_until metrics:" in err
    assert "vrp-bench metrics" not in err


def test_function_falls_back_to_an_importable_module(tmp_path: Path) -> None:
    from vrp_bench.api.yaml_dialect import FunctionRef

    assert FunctionRef("os.path.basename", tmp_path).resolve()("/a/b") == "b"
    with pytest.raises(UsageError, match="no utils.py beside the YAML and no importable module 'utils'"):
        FunctionRef("utils.fn", tmp_path).resolve()


def test_include_lists_cycles_and_missing_files(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "x: a\ny: a\n")
    write(tmp_path / "b.yaml", "y: b\nz: b\n")
    write(tmp_path / "task.yaml", "include: [a.yaml, b.yaml]\nz: task\n")
    assert load_task_yaml(tmp_path / "task.yaml") == {"x": "a", "y": "a", "z": "task"}  # the first include wins
    lmms_utils = pytest.importorskip("lmms_eval.utils")
    assert lmms_utils.load_yaml_config(str(tmp_path / "task.yaml"), mode="simple") == {"x": "a", "y": "a", "z": "task"}
    write(tmp_path / "loop1.yaml", "include: loop2.yaml\n")
    write(tmp_path / "loop2.yaml", "include: loop1.yaml\n")
    with pytest.raises(UsageError, match="include cycle"):
        load_task_yaml(tmp_path / "loop1.yaml")
    write(tmp_path / "dangling.yaml", "include: nowhere.yaml\n")
    with pytest.raises(UsageError, match="include 'nowhere.yaml' not found"):
        load_task_yaml(tmp_path / "dangling.yaml")


def test_pyyaml_global_loaders_are_untouched(lmms_folder: Path) -> None:
    # in a fresh process: lmms-eval, once imported by another test, registers !function on PyYAML's loaders itself
    check = (f"import yaml\nfrom pathlib import Path\nfrom vrp_bench.api.yaml_dialect import load_task_yaml\n"
             f"load_task_yaml(Path({str(lmms_folder / 'my_fn.yaml')!r}))\n"
             "assert not any('!function' in l.yaml_constructors for l in (yaml.SafeLoader, yaml.FullLoader, yaml.Loader))\n"
             "try:\n    yaml.safe_load('f: !function utils.x')\nexcept yaml.constructor.ConstructorError:\n    pass\n"
             "else:\n    raise AssertionError('safe_load accepted !function')\n")
    completed = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


def test_a_name_defined_twice_keeps_its_first_definition_with_a_warning_naming_both(tmp_path: Path, caplog) -> None:
    body = "task: vrp_shapes_color\ndataset_path: json\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n"
    write(tmp_path / "clash.yaml", body)
    index = TaskIndex([tmp_path])
    assert index.tasks["vrp_shapes_color"].yaml_path.parent.name == "vrp_shapes"  # the shipped one came first
    assert "'vrp_shapes_color' is defined twice" in caplog.text and "clash.yaml" in caplog.text
    assert index.problem_counts() == {"name defined twice": 1}


def test_all_runs_the_tasks_that_suit_the_model_and_naming_one_runs_it_anyway() -> None:
    import vrp_bench

    from vrp_bench.api.model import MODELS

    index = TaskIndex()
    assert index.build("vrp_shapes_count").config.metadata["image_size"] == 64
    assert index.build("vrp_shapes_336_count").config.metadata["image_size"] == 336
    vrp_bench.evaluate("constant", "vrp_shapes_color", limit=1)  # registers the built-in models
    assert MODELS.get("tiny_llava").image_size == 64 and MODELS.get("llava").image_size is None
    tiny = vrp_bench.evaluate("tiny_llava", "vrp_shapes*", model_args={"sc_samples": 0, "capture": False}, limit=1)
    assert sorted(tiny.report["results"]) == sorted(n for n in index.tasks if n.startswith("vrp_shapes_")
                                                    and "_336_" not in n and not n.endswith("_reasoning"))
    skipped = tiny.report["skipped"]
    assert all("its images are 336 px; model tiny_llava suits 64 px" in reason
               for name, reason in skipped.items() if "_336_" in name) and len(skipped) == 7 + 6
    assert all("a reasoning variant" in reason for name, reason in skipped.items() if name.endswith("_reasoning"))
    named = vrp_bench.evaluate("tiny_llava", "vrp_shapes_336_color", model_args={"sc_samples": 0, "capture": False},
                               limit=1)
    assert list(named.report["results"]) == ["vrp_shapes_336_color"]
    floor = vrp_bench.evaluate("constant", "vrp_shapes*", limit=1)  # suits any size
    assert len(floor.report["results"]) == 14 and set(floor.report["skipped"]) == {
        n for n in index.tasks if n.endswith("_reasoning")}  # variants run only when named
