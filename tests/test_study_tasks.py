"""The study's real benchmarks as VRP tasks (tasks/study): POPE random / popular / adversarial, the VQAv2
validation subset and TextVQA validation, run on local stand-ins of their hub datasets (the real schemas, from
``lmms_fixtures``) through ``--dataset_path_override``; their metrics recomputed here from the fixture rows, and
POPE's accuracy equal to lmms-eval's own pope_random / pope_pop / pope_adv on the same data."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from vrp_bench.api.metrics import normalize_answer

fixtures = pytest.importorskip("lmms_fixtures")

ANSWERS = ("yes", "2")
def in_vqav2_subset(question_id: int) -> bool:
    return int(hashlib.sha256(str(question_id).encode()).hexdigest(), 16) % 40 == 0


# Question ids alternately inside and outside the fixed VQAv2 subset (1 in 40 by hash), so the subset is tested.
_inside = [q for q in range(262148000, 262200000) if in_vqav2_subset(q)][:6]
_outside = [q for q in range(262148000, 262200000) if not in_vqav2_subset(q)][:6]
VQAV2_IDS = [q for pair in zip(_inside, _outside) for q in pair]
HUB = {"pope": "lmms-lab-encoder/POPE", "vqav2": "lmms-lab-encoder/VQAv2", "textvqa": "lmms-lab-encoder/textvqa"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hub")
    return {"pope": fixtures.write_pope(base / "pope"), "vqav2": fixtures.write_vqav2(base / "vqav2", VQAV2_IDS),
            "textvqa": fixtures.write_textvqa(base / "textvqa")}


@pytest.fixture(scope="module")
def runs(hub, tmp_path_factory) -> dict[str, dict]:
    """Per constant answer, the report of one run of every hub task of the vrp_study group."""
    from vrp_bench import evaluate

    overrides = {HUB[name]: str(path) for name, path in hub.items()}
    reports = {}
    for answer in ANSWERS:
        result = evaluate("constant", "vrp_pope,vrp_vqav2_val,vrp_textvqa_val", model_args={"answer": answer},
                          dataset_paths=overrides, output_path=tmp_path_factory.mktemp("out"), log_samples=True)
        reports[answer] = result.report
    return reports


def rows(folder: Path, config: str | None, split: str) -> list[dict]:
    import datasets

    return list(datasets.load_dataset(str(folder), name=config, split=split).remove_columns("image"))


@pytest.mark.parametrize("answer", ANSWERS)
@pytest.mark.parametrize("split", ["random", "popular", "adversarial"])
def test_pope_splits_score_normalised_exact_match_f1_and_yes_ratio(runs, hub, answer, split) -> None:
    docs = rows(hub["pope"], "Full", split)
    truth = [normalize_answer(d["answer"]) for d in docs]
    tp = sum(t == "yes" and answer == "yes" for t in truth)
    fp = sum(t != "yes" and answer == "yes" for t in truth)
    fn = sum(t == "yes" and answer != "yes" for t in truth)
    result = runs[answer]["results"][f"vrp_pope_{split}"]
    assert result["exact_match,none"] == pytest.approx(sum(t == answer for t in truth) / len(truth))
    assert result["pope_f1,none"] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    assert result["pope_yes_ratio,none"] == pytest.approx(float(answer == "yes"))
    assert runs[answer]["n-samples"][f"vrp_pope_{split}"]["effective"] == len(docs)


def test_pope_accuracy_equals_lmms_evals_own_pope_tasks(runs, hub, tmp_path) -> None:
    pytest.importorskip("lmms_eval")
    lmms = fixtures.run_lmms_eval(["pope_random", "pope_pop", "pope_adv"], {HUB["pope"]: hub["pope"]}, "yes", tmp_path)
    for theirs, ours in (("pope_random", "random"), ("pope_pop", "popular"), ("pope_adv", "adversarial")):
        assert lmms[theirs]["pope_accuracy,none"] == pytest.approx(
            runs["yes"]["results"][f"vrp_pope_{ours}"]["exact_match,none"])


def vqa_accuracy(answer: str, humans: list[str]) -> float:
    matches = [sum(normalize_answer(h) == answer for j, h in enumerate(humans) if j != i) for i in range(len(humans))]
    return sum(min(1.0, m / 3) for m in matches) / len(matches)


@pytest.mark.parametrize("answer", ANSWERS)
def test_vqav2_subset_and_textvqa_score_exact_match_and_vqa_accuracy(runs, hub, answer) -> None:
    vqav2 = [d for d in rows(hub["vqav2"], None, "validation") if in_vqav2_subset(d["question_id"])]
    textvqa = rows(hub["textvqa"], None, "validation")
    expected = {
        "vrp_vqav2_val": (vqav2, [normalize_answer(d["multiple_choice_answer"]) for d in vqav2],
                          [[a["answer"] for a in d["answers"]] for d in vqav2]),
        "vrp_textvqa_val": (textvqa, [Counter(map(normalize_answer, d["answers"])).most_common(1)[0][0] for d in textvqa],
                            [d["answers"] for d in textvqa]),
    }
    for task, (docs, references, humans) in expected.items():
        result = runs[answer]["results"][task]
        assert runs[answer]["n-samples"][task]["effective"] == len(docs) == (6 if task == "vrp_vqav2_val" else 10)
        assert result["exact_match,none"] == pytest.approx(sum(r == answer for r in references) / len(docs))
        assert result["vqa_accuracy,none"] == pytest.approx(sum(vqa_accuracy(answer, h) for h in humans) / len(docs))


def test_all_never_downloads_hub_tasks_but_naming_one_requires_its_data(cli, tmp_path) -> None:
    code, out, err = cli("run", "--model", "constant", "--tasks", "vrp_pope_random", "--limit", "2")
    assert code == 2 and "vrp_pope_random" in err and "cannot load dataset" in err
    code, out, err = cli("run", "--model", "constant", "--tasks", "vrp_shapes_color,vrp_pope*", "--limit", "2")
    assert code == 0, err
    assert "vrp_pope_random" in out and "data not on this machine" in out
