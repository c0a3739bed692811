"""Properties of the vrp_shapes generator and of its shipped test split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest

from vrp_bench.api.task_index import TaskIndex
from vrp_bench.datasets.export import content_hash, read_parquet_docs, verify_split, write_split
from vrp_bench.datasets.vrp_shapes import (
    ANSWERS,
    CAPTION_QUESTION,
    COLORS,
    QUESTION_SETS,
    RGB,
    SHAPES,
    VOCABULARY,
    caption,
    generate_docs,
    scene_signature,
)

DATA_DIR = Path(__file__).parents[1] / "tasks/vrp_shapes/data"
EXISTS_SETS = ("exists_random", "exists_popular", "exists_adversarial")
ONE_WORD_SETS = (*EXISTS_SETS, "color", "count", "spatial")
BACKGROUND = np.array([255, 255, 255], dtype=np.uint8)


@pytest.fixture(scope="module")
def docs64() -> dict[str, list[dict]]:
    """The default test split of every question set at 64 px."""
    return {question_set: generate_docs(question_set) for question_set in QUESTION_SETS}


@pytest.fixture(scope="module")
def docs336() -> dict[str, list[dict]]:
    """The default test split of every question set at 336 px."""
    return {question_set: generate_docs(question_set, image_size=336) for question_set in QUESTION_SETS}


def all_docs(docs_by_set: dict[str, list[dict]]) -> list[dict]:
    return [doc for docs in docs_by_set.values() for doc in docs]


def exists_target(doc: dict) -> tuple[str, str]:
    """(colour, shape) asked by "is there a {colour} {shape} in the image ?"."""
    words = doc["question"].split()
    return words[3], words[4]


def kinds(doc: dict) -> set[tuple[str, str]]:
    return {(obj["color"], obj["shape"]) for obj in doc["objects"]}


def boxes_of(doc: dict, color: str | None, shape: str) -> list[list[int]]:
    return [obj["box"] for obj in doc["objects"] if obj["shape"] == shape and color in (None, obj["color"])]


def centre(box: list[int]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def test_same_seed_same_docs_and_other_seed_differs() -> None:
    for question_set in QUESTION_SETS:
        first = content_hash(generate_docs(question_set, n=24))
        assert content_hash(generate_docs(question_set, n=24)) == first
        assert content_hash(generate_docs(question_set, n=24, seed=1)) != first
        assert content_hash(generate_docs(question_set, "train", n=24)) != first


@pytest.mark.parametrize("question_set", ["spatial", "caption"])
def test_prefix_stable_stream(question_set: str) -> None:
    head = generate_docs(question_set, n=10)
    assert content_hash(head) == content_hash(generate_docs(question_set, n=40)[:10])


def test_question_sets_are_only_appended() -> None:
    """Each set's seed stream is keyed by its index: the first sets keep their place (and their docs)."""
    assert QUESTION_SETS[: len(ONE_WORD_SETS)] == ONE_WORD_SETS and QUESTION_SETS[-1] == "caption"


@pytest.mark.parametrize(
    "arguments",
    [{"question_set": "colour"}, {"question_set": "color", "split": "validation"}, {"question_set": "color", "image_size": 32}],
)
def test_bad_arguments_raise(arguments: dict) -> None:
    with pytest.raises(ValueError):
        generate_docs(**arguments)


@pytest.mark.parametrize("size_fixture", ["docs64", "docs336"])
def test_boxes_are_tight_around_rendered_objects(size_fixture: str, request: pytest.FixtureRequest) -> None:
    for doc in all_docs(request.getfixturevalue(size_fixture))[::3]:
        pixels = np.asarray(doc["image"])
        size = doc["image_size"]
        assert doc["image"].mode == "RGB" and doc["image"].size == (size, size)
        covered = np.zeros((size, size), dtype=bool)
        for obj in doc["objects"]:
            x0, y0, x1, y1 = obj["box"]
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            region = pixels[y0:y1, x0:x1]
            is_object = (region == RGB[obj["color"]]).all(axis=-1)
            assert (is_object | (region == BACKGROUND).all(axis=-1)).all()
            assert is_object.any(axis=0).all() and is_object.any(axis=1).all(), "box not tight"
            covered[y0:y1, x0:x1] = True
        assert (pixels[~covered] == BACKGROUND).all(), "object pixels outside every box"


def test_objects_do_not_overlap(docs64: dict[str, list[dict]]) -> None:
    for doc in all_docs(docs64):
        assert 1 <= len(doc["objects"]) <= 4
        boxes = [obj["box"] for obj in doc["objects"]]
        for index, (ax0, ay0, ax1, ay1) in enumerate(boxes):
            assert 10 <= ax1 - ax0 <= 20
            for bx0, by0, bx1, by1 in boxes[index + 1 :]:
                assert ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0


def test_words_are_in_vocabulary(docs64: dict[str, list[dict]]) -> None:
    used = {word for doc in all_docs(docs64) for word in doc["question"].split() + doc["answer"].split()}
    assert used <= set(VOCABULARY)
    assert set(COLORS) | set(SHAPES) <= set(VOCABULARY)


def test_count_answers(docs64: dict[str, list[dict]]) -> None:
    for doc in docs64["count"]:
        shape = doc["question"].split()[2].removesuffix("s")
        counted = boxes_of(doc, None, shape)
        assert doc["answer"] == str(len(counted))
        assert sorted(doc["boxes"]) == sorted(counted)
    assert sum(len(doc["objects"]) > int(doc["answer"]) for doc in docs64["count"]) > 200, "too few distractors"


def test_color_answers(docs64: dict[str, list[dict]]) -> None:
    for doc in docs64["color"]:
        shape = doc["question"].split()[4]
        [target] = [obj for obj in doc["objects"] if obj["shape"] == shape]
        assert doc["answer"] == target["color"]
        assert doc["boxes"] == [target["box"]]


def test_spatial_answers_follow_box_centres(docs64: dict[str, list[dict]]) -> None:
    for doc in docs64["spatial"]:
        words = doc["question"].split()
        [first] = boxes_of(doc, words[3], words[4])
        [second] = boxes_of(doc, words[8], words[9])
        assert doc["boxes"] == [first, second]
        (x_first, y_first), (x_second, y_second) = centre(first), centre(second)
        dx, dy = x_first - x_second, y_first - y_second
        if abs(dx) > abs(dy):
            expected = "left" if dx < 0 else "right"
        else:
            expected = "above" if dy < 0 else "below"
        assert doc["answer"] == expected
        assert max(abs(dx), abs(dy)) >= 2 * min(abs(dx), abs(dy)), "ambiguous relation"


@pytest.mark.parametrize("question_set", EXISTS_SETS)
def test_exists_positives_present_and_negatives_absent(question_set: str, docs64: dict[str, list[dict]]) -> None:
    for doc in docs64[question_set]:
        color, shape = exists_target(doc)
        instances = boxes_of(doc, color, shape)
        if doc["answer"] == "yes":
            assert instances and doc["boxes"] == instances
            assert doc["negative_sampling"] == ""
        else:
            assert doc["answer"] == "no" and not instances and doc["boxes"] == []
            assert doc["negative_sampling"] == question_set.removeprefix("exists_")


def scene_frequencies(docs: list[dict]) -> Counter:
    """Number of scenes containing each (colour, shape)."""
    return Counter(kind for doc in docs for kind in kinds(doc))


def test_popular_negative_is_most_frequent_absent_kind(docs64: dict[str, list[dict]]) -> None:
    docs = docs64["exists_popular"]
    frequency = scene_frequencies(docs)
    all_kinds = [(color, shape) for color in COLORS for shape in SHAPES]
    for doc in docs:
        if doc["answer"] == "no":
            absent = [kind for kind in all_kinds if kind not in kinds(doc)]
            assert frequency[exists_target(doc)] == max(frequency[kind] for kind in absent)


def test_adversarial_negative_is_similar_and_most_cooccurring(docs64: dict[str, list[dict]]) -> None:
    docs = docs64["exists_adversarial"]
    cooccurrence = Counter((a, b) for doc in docs for a in kinds(doc) for b in kinds(doc))
    all_kinds = [(color, shape) for color in COLORS for shape in SHAPES]
    for doc in docs:
        if doc["answer"] == "no":
            present = kinds(doc)
            similar = [
                kind
                for kind in all_kinds
                if kind not in present and any(kind[0] == p[0] or kind[1] == p[1] for p in present)
            ]
            scores = {kind: sum(cooccurrence[(p, kind)] for p in present) for kind in similar}
            target = exists_target(doc)
            assert target in scores and scores[target] == max(scores.values())


def test_negative_strategies_differ(docs64: dict[str, list[dict]]) -> None:
    negatives = {
        question_set: Counter(exists_target(doc) for doc in docs64[question_set] if doc["answer"] == "no")
        for question_set in EXISTS_SETS
    }
    assert len(negatives["exists_random"]) > 15, "random negatives should spread over many kinds"
    assert negatives["exists_popular"] != negatives["exists_adversarial"]


@pytest.mark.parametrize("question_set", ONE_WORD_SETS)
def test_answers_balanced(question_set: str, docs64: dict[str, list[dict]]) -> None:
    counts = Counter(doc["answer"] for doc in docs64[question_set])
    question_type = docs64[question_set][0]["question_type"]
    assert set(counts) == set(ANSWERS[question_type])
    assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize("size_fixture", ["docs64", "docs336"])
def test_caption_lists_every_object_left_to_right(size_fixture: str, request: pytest.FixtureRequest) -> None:
    for doc in request.getfixturevalue(size_fixture)["caption"]:
        assert doc["question"] == CAPTION_QUESTION and doc["question_type"] == "caption"
        assert doc["negative_sampling"] == "" and doc["boxes"] == [obj["box"] for obj in doc["objects"]]
        words = doc["answer"].split()
        assert len(words) == 2 * len(doc["objects"]) and doc["answer"] == " ".join(words)
        left_to_right = sorted(doc["objects"], key=lambda obj: (obj["box"][0], obj["box"][1]))
        assert list(zip(words[::2], words[1::2])) == [(obj["color"], obj["shape"]) for obj in left_to_right]
        assert caption(doc["objects"]) == doc["answer"]


def test_caption_object_counts_balanced(docs64: dict[str, list[dict]]) -> None:
    counts = Counter(len(doc["objects"]) for doc in docs64["caption"])
    assert set(counts) == {1, 2, 3, 4} and max(counts.values()) - min(counts.values()) <= 1
    crowded = [doc["answer"] for doc in docs64["caption"] if len(doc["objects"]) >= 3]
    assert len(set(crowded)) > 0.9 * len(crowded), "captions of 3-4 objects should rarely repeat"


def test_caption_task_scores_the_whole_caption_by_exact_match() -> None:
    task = TaskIndex().build("vrp_shapes_caption")
    assert task.config.metadata["boxes_answer_independent"] is False
    task.load()
    assert len(task) == 300
    doc = next(doc for doc in map(task.doc, range(len(task))) if len(doc["objects"]) == 4)
    _, request = task.render(0, task.prompt_kwargs(()), {}, 0)
    assert request.prompt.startswith(CAPTION_QUESTION + "\n") and request.generation.max_new_tokens >= 9

    def exact_match(prediction: str) -> float:
        return task.score(doc, prediction)[task.primary_filter]["metrics"]["exact_match"]

    words = doc["answer"].split()
    assert len(words) == 8
    assert exact_match(doc["answer"]) == 1.0
    assert exact_match(doc["answer"].upper().replace(" ", ", ", 1) + ".") == 1.0  # case and punctuation normalised
    wrong = " ".join([*words[:-1], next(shape for shape in SHAPES if shape != words[-1])])
    assert exact_match(wrong) == 0.0
    assert exact_match(" ".join(words[:-2])) == 0.0  # one object left out


def test_kind_frequencies_follow_a_skewed_prior(docs64: dict[str, list[dict]]) -> None:
    frequency = Counter((obj["color"], obj["shape"]) for doc in docs64["exists_random"] for obj in doc["objects"])
    ranked = [count for _, count in frequency.most_common()]
    assert ranked[0] > 4 * ranked[len(ranked) // 2]


def test_sizes_share_questions_and_scale_boxes(docs64: dict[str, list[dict]], docs336: dict[str, list[dict]]) -> None:
    for small, large in zip(all_docs(docs64), all_docs(docs336), strict=True):
        for field in ("doc_id", "question", "answer", "question_type", "negative_sampling"):
            assert small[field] == large[field]
        small_boxes = [obj["box"] for obj in small["objects"]] + small["boxes"]
        large_boxes = [obj["box"] for obj in large["objects"]] + large["boxes"]
        assert np.abs(np.array(small_boxes) / 64 - np.array(large_boxes) / 336).max() < 1 / 64
        assert scene_signature(small) == scene_signature(large)


def test_train_is_disjoint_from_test(docs64: dict[str, list[dict]]) -> None:
    for question_set in QUESTION_SETS:
        test_signatures = {scene_signature(doc) for doc in docs64[question_set]}
        train = generate_docs(question_set, "train", n=600)
        assert not test_signatures & {scene_signature(doc) for doc in train}


def test_write_split_is_deterministic(tmp_path: Path) -> None:
    first = write_split(tmp_path / "a", n_per_set=6, image_sizes=(64,))
    second = write_split(tmp_path / "b", n_per_set=6, image_sizes=(64,))
    assert first == second
    assert json.loads((tmp_path / "a/MANIFEST.json").read_text()) == first
    assert verify_split(tmp_path / "a") == []


def test_verify_split_reports_tampering(tmp_path: Path) -> None:
    write_split(tmp_path, n_per_set=4, image_sizes=(64,))
    manifest_path = tmp_path / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["64px/color-test.parquet"]["content_hash"] = "sha256:0"
    manifest_path.write_text(json.dumps(manifest))
    (tmp_path / "64px/count-test.parquet").unlink()
    problems = verify_split(tmp_path)
    assert any("color-test" in problem and "regenerated" in problem for problem in problems)
    assert any("count-test" in problem and "missing" in problem for problem in problems)


def test_shipped_split_reproduces_manifest() -> None:
    manifest = json.loads((DATA_DIR / "MANIFEST.json").read_text())
    assert len(manifest["files"]) == len(QUESTION_SETS) * 2
    assert verify_split(DATA_DIR) == []


@pytest.mark.parametrize("relative_path", ["64px/exists_popular-test.parquet", "336px/spatial-test.parquet"])
def test_load_dataset_round_trip(relative_path: str, tmp_path: Path) -> None:
    size, name = relative_path.split("/")
    question_set = name.removesuffix("-test.parquet")
    generated = generate_docs(question_set, image_size=int(size.removesuffix("px")))
    loaded = datasets.load_dataset(
        "parquet", data_files=str(DATA_DIR / relative_path), split="train", cache_dir=str(tmp_path)
    )
    assert len(loaded) == len(generated)
    for row, doc in zip(loaded, generated, strict=True):
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(doc["image"]))
        assert {key: value for key, value in row.items() if key != "image"} == {
            key: value for key, value in doc.items() if key != "image"
        }
    assert content_hash(read_parquet_docs(DATA_DIR / relative_path)) == content_hash(generated)
