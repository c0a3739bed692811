"""lmms-eval's own task YAMLs, unchanged, score the same under VRP-Bench as under lmms-eval.

For ``pope``, ``mme``, ``scienceqa_img``, ``textvqa_val`` and ``vqav2_val`` (the folders in
``site-packages/lmms_eval/tasks``), ``lmms_fixtures`` writes a tiny stand-in of the hub dataset with its real
schema. lmms-eval's own evaluator scores its ``dummy`` model on a copy of the task folder whose
``dataset_path`` points at the fixture; VRP-Bench scores its ``constant`` model, giving the same answer, on
the UNCHANGED installed folder with only the dataset path redirected (``--dataset_path_override`` or
``VRP_DATASET_PATH_OVERRIDE``). Every metric lmms-eval reports, and its doc count, must match.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval")

from lmms_fixtures import (
    TASKS,
    build_fixtures,
    hub_id,
    load_fixture,
    run_lmms_eval,
    task_folder,
)

# (task, constant answer, how VRP gets the dataset path: "flag" or "env"). The answers exercise each task's
# normalisation: POPE lower-cases ("No"), MME drops dots ("No."), ScienceQA reads "B. metal" as option B,
# the EvalAI processor maps "Two" to "2".
CASES = [
    ("pope", "yes", "flag"),
    ("pope", "No", "env"),
    ("mme", "yes", "flag"),
    ("mme", "No.", "env"),
    ("scienceqa_img", "A", "flag"),
    ("scienceqa_img", "B. metal", "env"),
    ("textvqa_val", "yes", "flag"),
    ("textvqa_val", "Two", "env"),
    ("vqav2_val", "No", "flag"),
    ("vqav2_val", "Two", "env"),
]

# lmms-eval 0.7.3's metrics on the fixtures (checked by hand against the fixture rows).
EXPECTED_LMMS = {
    ("pope", "yes"): {"pope_accuracy": 7 / 12, "pope_precision": 7 / 12, "pope_recall": 1.0,
                      "pope_f1_score": 14 / 19, "pope_yes_ratio": 7 / 12},
    ("pope", "No"): {"pope_accuracy": 5 / 12, "pope_precision": 0, "pope_recall": 0.0,
                     "pope_f1_score": 0, "pope_yes_ratio": 7 / 12},
    ("mme", "yes"): {"mme_perception_score": 375.0, "mme_cognition_score": 225.0},
    ("mme", "No."): {"mme_perception_score": 275.0, "mme_cognition_score": 125.0},
    ("scienceqa_img", "A"): {"exact_match": 3 / 12},
    ("scienceqa_img", "B. metal"): {"exact_match": 5 / 12},
    ("textvqa_val", "yes"): {"exact_match": 0.25, "submission": None},
    ("textvqa_val", "Two"): {"exact_match": 0.28, "submission": None},
    ("vqav2_val", "No"): {"exact_match": 4 / 12},
    ("vqav2_val", "Two"): {"exact_match": 2.5 / 12},
}

# Columns each task's utils.py reads (doc_to_visual / doc_to_text / doc_to_target / process_results).
READS = {
    "pope": {"image", "question", "answer", "question_id"},
    "mme": {"image", "question", "answer", "category", "question_id"},
    "scienceqa_img": {"image", "hint", "question", "choices", "answer"},
    "textvqa_val": {"image", "question", "answers", "question_id", "ocr_tokens"},
    "vqav2_val": {"image", "question", "answers", "question_id"},
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> dict[str, Path]:
    """{hub id: local folder} for the five fixtures."""
    return build_fixtures(TASKS, tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="module")
def lmms_eval_scores(hub, tmp_path_factory):
    """``get(task, answer)``: lmms-eval's whole output for the dummy model answering ``answer`` (cached)."""
    cache: dict[tuple[str, str], dict] = {}

    def get(task: str, answer: str) -> dict:
        if (task, answer) not in cache:
            workdir = tmp_path_factory.mktemp(f"lmms_{task}")
            cache[task, answer] = run_lmms_eval([task], {hub_id(task): hub[hub_id(task)]}, answer, workdir, full=True)
        return cache[task, answer]

    return get


def reported_metrics(results: dict) -> dict[str, object]:
    """lmms-eval's ``results[task]`` without its alias and standard errors: {"metric,filter": value}."""
    return {key: value for key, value in results.items() if key != "alias" and "_stderr" not in key.split(",")[0]}


@pytest.mark.parametrize("task", list(TASKS))
def test_fixture_loads_with_the_yamls_name_and_split(task, hub):
    import datasets

    dataset = load_fixture(task, hub[hub_id(task)])
    assert 4 <= len(dataset) <= 20
    assert READS[task.split("_")[0] if task.startswith("pope") else task] <= set(dataset.column_names)
    assert isinstance(dataset.features["image"], datasets.Image)
    assert dataset[0]["image"].size[0] > 0


@pytest.mark.parametrize("task,answer", sorted({(task, answer) for task, answer, _ in CASES}))
def test_lmms_eval_scores_the_fixtures(task, answer, hub, lmms_eval_scores):
    out = lmms_eval_scores(task, answer)
    metrics = reported_metrics(out["results"][task])
    expected = EXPECTED_LMMS[task, answer]
    assert set(metrics) == {f"{name},none" for name in expected}
    for name, value in expected.items():
        if value is None:
            assert metrics[f"{name},none"] is None
        else:
            assert metrics[f"{name},none"] == pytest.approx(value, abs=1e-9), name
    assert Path(out["configs"][task]["dataset_path"]) == hub[hub_id(task)]  # the copy loaded the fixture
    n_docs = len(load_fixture(task, hub[hub_id(task)]))
    assert out["n-samples"][task] == {"original": n_docs, "effective": n_docs}


@pytest.mark.parametrize("task,answer,via", CASES)
def test_vrp_matches_lmms_eval_on_the_unchanged_yaml(task, answer, via, hub, lmms_eval_scores, cli, capsys, tmp_path,
                                                     monkeypatch):
    lmms = lmms_eval_scores(task, answer)
    capsys.readouterr()  # drop lmms-eval's progress bars so `err` below is VRP-Bench's alone
    override = f"{hub_id(task)}={hub[hub_id(task)]}"
    args = ["run", "--model", "constant", "--model_args", f"answer={answer}", "--tasks", task,
            "--include_path", task_folder(task), "--output_path", tmp_path / "out", "--seed", "0"]
    if via == "flag":
        args += ["--dataset_path_override", override]
    else:
        monkeypatch.setenv("VRP_DATASET_PATH_OVERRIDE", override)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    code, _, err = cli(*args)
    assert code == 0, err
    reports = sorted((tmp_path / "out").rglob("*_results.json"))
    assert len(reports) == 1, reports
    report = json.loads(reports[0].read_text())

    vrp = report["results"][task]
    expected = reported_metrics(lmms["results"][task])
    assert expected  # lmms-eval reported something to compare
    for key, value in expected.items():
        assert key in vrp, f"{task}: lmms-eval reports {key}, VRP-Bench does not ({sorted(vrp)})"
        if value is None:  # e.g. textvqa's "submission": its aggregation writes a file and returns None
            assert vrp[key] is None, key
        else:
            assert vrp[key] == pytest.approx(value, abs=1e-9), key
    for count in ("original", "effective"):  # VRP-Bench adds "scored" and "errors" beside lmms-eval's two
        assert report["n-samples"][task][count] == lmms["n-samples"][task][count], count
