"""vrp_shapes: a deterministic, seeded synthetic grounded VQA generator.

Each scene holds 1-4 non-overlapping flat shapes on a white canvas. Scenes are laid out on an
integer ``GRID`` x ``GRID`` canvas and rendered at any ``image_size >= GRID``, so the same seed
gives the same scenes, questions and answers at every size. Every doc carries the pixel boxes of
the objects its answer depends on (the ground-truth region for attention-grounding metrics).

Boxes are ``[x0, y0, x1, y1]`` integer pixel coordinates with exclusive ``x1``/``y1`` (PIL's crop
convention: ``image.crop(box)`` is exactly the object's bounding square). Rendering is integer
arithmetic on numpy arrays, so images are bit-identical across platforms and Pillow versions.

Questions are lower-case words separated by single spaces and end with " ?"; answers are one word,
except the ``caption`` set's: every object's "colour shape", left to right (``caption``), 2-8 words.
Every word of every question and answer is in ``VOCABULARY``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

SHAPES = ("circle", "square", "triangle", "diamond")
COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
QUESTION_SETS = (
    "exists_random",
    "exists_popular",
    "exists_adversarial",
    "color",
    "count",
    "spatial",
    "caption",
)
"""Question sets, in seed-stream order (``QUESTION_SETS.index`` seeds each set's docs: append only)."""
SPLITS = ("test", "train")

RGB = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 170),
    "orange": (250, 130, 10),
}
BACKGROUND = (255, 255, 255)

EXISTS_TEMPLATE = "is there a {color} {shape} in the image ?"
COLOR_TEMPLATE = "what color is the {shape} ?"
COUNT_TEMPLATE = "how many {shape}s are there ?"
SPATIAL_TEMPLATE = "where is the {color} {shape} relative to the {other_color} {other_shape} ?"
CAPTION_QUESTION = "what is in the image ?"
"""The caption set's question (also the tiny zoo's auxiliary training task, ``vrp_bench.zoo.train``)."""

RELATIONS = ("left", "right", "above", "below")
COUNTS = ("1", "2", "3", "4")
ANSWERS = {
    "exists": ("yes", "no"),
    "color": COLORS,
    "count": COUNTS,
    "spatial": RELATIONS,
}
"""Every possible answer, per question type; the caption type is left out (its answers: ``caption``)."""

QUESTION_TYPES = {
    "exists_random": "exists",
    "exists_popular": "exists",
    "exists_adversarial": "exists",
    "color": "color",
    "count": "count",
    "spatial": "spatial",
    "caption": "caption",
}
"""Question type asked by each question set."""

DEFAULT_N = 300
DEFAULT_SEED = 0
GRID = 64
"""Scene layout resolution: object geometry is integers on a GRID x GRID canvas (1 unit = 1 px at 64 px)."""
MIN_SIDE, MAX_SIDE = 11, 18
EDGE = 2
"""Minimum distance, in grid units, from an object to the canvas border."""
GAP = 3
"""Minimum distance, in grid units, between two objects."""
MAX_OBJECTS = 4
SIGNATURE_CELL = 4
"""Grid units per cell when quantising object centres for scene signatures (16 cells per axis)."""
ZIPF_EXPONENT = 1.0
PLACEMENT_TRIES = 50

COMBOS = tuple((color, shape) for color in COLORS for shape in SHAPES)
"""Every (colour, shape) object kind, indexed as in ``PRIOR``."""
POPULARITY_RANK = tuple((7 * index) % len(COMBOS) for index in range(len(COMBOS)))
"""Zipf rank of each combination (0 = most frequent), scrambled to follow neither colour nor shape order."""
PRIOR = np.array([1.0 / (rank + 1) ** ZIPF_EXPONENT for rank in POPULARITY_RANK])
PRIOR /= PRIOR.sum()
"""Probability of each combination in ``COMBOS`` when an object is drawn from the scene prior."""


def _vocabulary() -> tuple[str, ...]:
    """Every word that can appear in a question or an answer, sorted."""
    templates = (EXISTS_TEMPLATE, COLOR_TEMPLATE, COUNT_TEMPLATE, SPATIAL_TEMPLATE, CAPTION_QUESTION)
    template_words = {word for template in templates for word in template.split() if "{" not in word}
    plurals = {f"{shape}s" for shape in SHAPES}
    answers = {answer for choices in ANSWERS.values() for answer in choices}
    return tuple(sorted(template_words | set(COLORS) | set(SHAPES) | plurals | answers))


VOCABULARY = _vocabulary()
"""Every word (whitespace-separated token, including "?") of every question and answer, sorted."""


@dataclass(frozen=True)
class SceneObject:
    """One shape, laid out as an axis-aligned square on the GRID canvas (grid units)."""

    color: str
    shape: str
    x0: int
    y0: int
    side: int

    @property
    def combo(self) -> int:
        """Index of this object's (colour, shape) in ``COMBOS``."""
        return COMBOS.index((self.color, self.shape))

    def too_close(self, other: SceneObject) -> bool:
        """Whether the two squares are closer than ``GAP`` on both axes (overlap with margin)."""
        apart_x = self.x0 + self.side + GAP <= other.x0 or other.x0 + other.side + GAP <= self.x0
        apart_y = self.y0 + self.side + GAP <= other.y0 or other.y0 + other.side + GAP <= self.y0
        return not (apart_x or apart_y)


Scene = tuple[SceneObject, ...]


@dataclass(frozen=True)
class QuestionItem:
    """A scene with its question, before rendering; ``targets`` index the answer-relevant objects."""

    scene: Scene
    question: str
    answer: str
    question_type: str
    negative_sampling: str
    targets: tuple[int, ...]


@dataclass(frozen=True)
class _ExistsDraft:
    """An existence scene; ``combo`` is the asked kind, or None for a negative still to be chosen."""

    scene: Scene
    answer: str
    combo: int | None


def generate_docs(
    question_set: str,
    split: str = "test",
    n: int = DEFAULT_N,
    seed: int = DEFAULT_SEED,
    image_size: int = GRID,
) -> list[dict]:
    """The first ``n`` docs of a question set and split, rendered at ``image_size`` px.

    Docs of non-exists sets and of ``exists_random`` are a prefix-stable stream (``n=10`` gives the
    first 10 docs of ``n=300``); popular/adversarial negatives depend on all ``n`` scenes.
    """
    _check_arguments(question_set, split, n, image_size)
    items = _generate_items(question_set, split, n, seed)
    return [
        _render_doc(f"{split}-{question_set}-{index:05d}", item, image_size)
        for index, item in enumerate(items)
    ]


def _generate_items(question_set: str, split: str, n: int, seed: int) -> list[QuestionItem]:
    """Scenes, questions and answers of a question set and split, without rendering."""
    labels_rng, scene_rng, tiebreak_rng = (
        np.random.default_rng(child) for child in _seed_sequence(seed, split, question_set).spawn(3)
    )
    question_type = QUESTION_TYPES[question_set]
    labels = _balanced_labels(COUNTS if question_type == "caption" else ANSWERS[question_type], n, labels_rng)
    excluded = _train_exclusions(question_set, seed) if split == "train" else frozenset()
    if question_type == "exists":
        drafts = [_draw_exists(label, question_set, scene_rng, excluded) for label in labels]
        return _resolve_exists(drafts, question_set, tiebreak_rng)
    draws = {"color": _draw_color, "count": _draw_count, "spatial": _draw_spatial, "caption": _draw_caption}
    draw = draws[question_type]
    return [draw(label, scene_rng, excluded) for label in labels]


def scene_signature(doc: dict) -> tuple:
    """A doc's scene signature: its objects' kinds and quantised centres, order-independent."""
    size = doc["image_size"]
    scene = tuple(
        SceneObject(
            color=obj["color"],
            shape=obj["shape"],
            x0=_to_grid(obj["box"][0], size),
            y0=_to_grid(obj["box"][1], size),
            side=_to_grid(obj["box"][2] - obj["box"][0], size),
        )
        for obj in doc["objects"]
    )
    return _signature(scene)


def _signature(scene: Scene) -> tuple:
    """Order-independent scene signature: (shape, colour, centre cell x, centre cell y) per object."""
    cell = 2 * SIGNATURE_CELL  # centres are compared doubled, to stay integers
    return tuple(
        sorted(
            (obj.shape, obj.color, (2 * obj.x0 + obj.side) // cell, (2 * obj.y0 + obj.side) // cell)
            for obj in scene
        )
    )


def _check_arguments(question_set: str, split: str, n: int, image_size: int) -> None:
    """Raise ValueError for an unknown question set or split, a negative n or a too small image."""
    if question_set not in QUESTION_SETS:
        raise ValueError(f"unknown question set {question_set!r}; expected one of {QUESTION_SETS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if image_size < GRID:
        raise ValueError(f"image_size must be >= {GRID}, got {image_size}")


def _seed_sequence(seed: int, split: str, question_set: str) -> np.random.SeedSequence:
    """The root seed sequence of one (seed, split, question set) stream."""
    return np.random.SeedSequence([seed, SPLITS.index(split), QUESTION_SETS.index(question_set)])


@functools.lru_cache(maxsize=None)
def _train_exclusions(question_set: str, seed: int) -> frozenset[tuple]:
    """Scene signatures of the default-size test split for ``seed`` and for the shipped seed."""
    return frozenset(
        _signature(item.scene)
        for test_seed in {seed, DEFAULT_SEED}
        for item in _generate_items(question_set, "test", DEFAULT_N, test_seed)
    )


def _balanced_labels(choices: tuple[str, ...], n: int, rng: np.random.Generator) -> list[str]:
    """n labels made of consecutive random permutations of ``choices`` (class counts differ by <= 1)."""
    blocks = -(-n // len(choices))
    labels = [choices[int(index)] for _ in range(blocks) for index in rng.permutation(len(choices))]
    return labels[:n]


def _sample_combo(rng: np.random.Generator, allowed: np.ndarray | None = None) -> int:
    """A combination index drawn from ``PRIOR``, restricted to the ``allowed`` mask when given."""
    weights = PRIOR if allowed is None else PRIOR * allowed
    cumulative = np.cumsum(weights)
    return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))


def _sample_combos(rng: np.random.Generator, count: int, allowed: np.ndarray | None = None) -> list[int]:
    """``count`` independent draws of ``_sample_combo``."""
    return [_sample_combo(rng, allowed) for _ in range(count)]


def _kinds_where(predicate: Callable[[str, str], bool]) -> np.ndarray:
    """Boolean mask over ``COMBOS`` of the (colour, shape) pairs satisfying ``predicate``."""
    return np.array([predicate(color, shape) for color, shape in COMBOS])


def _place(scene: Scene, combos: list[int], rng: np.random.Generator) -> Scene | None:
    """``scene`` extended by one randomly placed object per combination, or None if one did not fit."""
    for combo in combos:
        color, shape = COMBOS[combo]
        for _ in range(PLACEMENT_TRIES):
            side = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
            x0, y0 = (int(value) for value in rng.integers(EDGE, GRID - EDGE - side + 1, size=2))
            candidate = SceneObject(color, shape, x0, y0, side)
            if not any(candidate.too_close(other) for other in scene):
                scene = scene + (candidate,)
                break
        else:
            return None
    return scene


def _place_until_accepted(draw_scene, excluded: frozenset[tuple]) -> Scene:
    """Call ``draw_scene()`` until it returns a scene whose signature is not ``excluded``."""
    while True:
        scene = draw_scene()
        if scene is not None and _signature(scene) not in excluded:
            return scene


def _draw_exists(
    label: str, question_set: str, rng: np.random.Generator, excluded: frozenset[tuple]
) -> _ExistsDraft:
    """A scene of 1-4 prior-drawn objects; positives ask a present kind, random negatives an absent one."""

    def draw_scene() -> Scene | None:
        return _place((), _sample_combos(rng, int(rng.integers(1, MAX_OBJECTS + 1))), rng)

    scene = _place_until_accepted(draw_scene, excluded)
    present = sorted({obj.combo for obj in scene})
    if label == "yes":
        return _ExistsDraft(scene, label, present[int(rng.integers(len(present)))])
    if question_set == "exists_random":
        absent = [combo for combo in range(len(COMBOS)) if combo not in present]
        return _ExistsDraft(scene, label, absent[int(rng.integers(len(absent)))])
    return _ExistsDraft(scene, label, None)


def _resolve_exists(
    drafts: list[_ExistsDraft], question_set: str, tiebreak_rng: np.random.Generator
) -> list[QuestionItem]:
    """Existence items; popular/adversarial negatives are chosen from dataset-level statistics.

    Popular: the absent kind present in the most scenes of the set. Adversarial: among absent kinds
    sharing colour or shape with a present object, the one co-occurring most (summed over present
    kinds) with the present kinds. Ties go to the earlier kind in a seeded random order.
    """
    presence = np.zeros((len(drafts), len(COMBOS)), dtype=np.int64)
    for row, draft in enumerate(drafts):
        presence[row, [obj.combo for obj in draft.scene]] = 1
    frequency = presence.sum(axis=0)
    cooccurrence = presence.T @ presence
    tie_rank = tiebreak_rng.permutation(len(COMBOS))
    negative_sampling = question_set.removeprefix("exists_")

    def best(candidates: list[int], score) -> int:
        return max(candidates, key=lambda combo: (score(combo), -tie_rank[combo]))

    items = []
    for draft in drafts:
        present = {obj.combo for obj in draft.scene}
        combo = draft.combo
        if combo is None and question_set == "exists_popular":
            combo = best([c for c in range(len(COMBOS)) if c not in present], lambda c: frequency[c])
        elif combo is None:
            similar = [c for c in range(len(COMBOS)) if c not in present and _shares_attribute(c, present)]
            combo = best(similar, lambda c: sum(cooccurrence[p, c] for p in present))
        color, shape = COMBOS[combo]
        targets = tuple(index for index, obj in enumerate(draft.scene) if obj.combo == combo)
        items.append(
            QuestionItem(
                scene=draft.scene,
                question=EXISTS_TEMPLATE.format(color=color, shape=shape),
                answer=draft.answer,
                question_type="exists",
                negative_sampling=negative_sampling if draft.answer == "no" else "",
                targets=targets,
            )
        )
    return items


def _shares_attribute(combo: int, present: set[int]) -> bool:
    """Whether ``combo`` has the colour or the shape of one of the ``present`` kinds."""
    color, shape = COMBOS[combo]
    return any(COMBOS[other][0] == color or COMBOS[other][1] == shape for other in present)


def _draw_color(label: str, rng: np.random.Generator, excluded: frozenset[tuple]) -> QuestionItem:
    """A scene with exactly one object of the asked shape, coloured ``label``, plus 0-3 distractors."""

    def draw_scene() -> Scene | None:
        target = _sample_combo(rng, _kinds_where(lambda color, shape: color == label))
        other_shapes = _kinds_where(lambda color, shape: shape != COMBOS[target][1])
        distractors = _sample_combos(rng, int(rng.integers(0, MAX_OBJECTS)), other_shapes)
        return _place((), [target, *distractors], rng)

    scene = _place_until_accepted(draw_scene, excluded)
    return QuestionItem(scene, COLOR_TEMPLATE.format(shape=scene[0].shape), label, "color", "", (0,))


def _draw_count(label: str, rng: np.random.Generator, excluded: frozenset[tuple]) -> QuestionItem:
    """A scene with ``label`` objects of the asked shape plus, when room allows, 1+ other shapes."""
    count = int(label)
    room = MAX_OBJECTS - count

    def draw_scene() -> Scene | None:
        target_shape = COMBOS[_sample_combo(rng)][1]
        counted = _sample_combos(rng, count, _kinds_where(lambda color, shape: shape == target_shape))
        other_shapes = _kinds_where(lambda color, shape: shape != target_shape)
        distractors = _sample_combos(rng, int(rng.integers(min(1, room), room + 1)), other_shapes)
        return _place((), [*counted, *distractors], rng)

    scene = _place_until_accepted(draw_scene, excluded)
    question = COUNT_TEMPLATE.format(shape=scene[0].shape)
    return QuestionItem(scene, question, label, "count", "", tuple(range(count)))


def _draw_spatial(label: str, rng: np.random.Generator, excluded: frozenset[tuple]) -> QuestionItem:
    """A scene where the first of two unique objects is unambiguously ``label`` of the second."""

    def draw_scene() -> Scene | None:
        first = _sample_combo(rng)
        second = _sample_combo(rng, _kinds_where(lambda *kind: kind != COMBOS[first]))
        pair = _place((), [first, second], rng)
        if pair is None or _relation(*pair) != label:
            return None
        others = _kinds_where(lambda *kind: kind not in (COMBOS[first], COMBOS[second]))
        return _place(pair, _sample_combos(rng, int(rng.integers(0, MAX_OBJECTS - 1)), others), rng)

    scene = _place_until_accepted(draw_scene, excluded)
    first, second = scene[:2]
    question = SPATIAL_TEMPLATE.format(
        color=first.color, shape=first.shape, other_color=second.color, other_shape=second.shape
    )
    return QuestionItem(scene, question, label, "spatial", "", (0, 1))


def _draw_caption(label: str, rng: np.random.Generator, excluded: frozenset[tuple]) -> QuestionItem:
    """A scene of ``label`` prior-drawn objects, captioned; every object is a target."""
    count = int(label)

    def draw_scene() -> Scene | None:
        return _place((), _sample_combos(rng, count), rng)

    scene = _place_until_accepted(draw_scene, excluded)
    objects = [{"color": obj.color, "shape": obj.shape, "box": _pixel_box(obj, GRID)} for obj in scene]
    return QuestionItem(scene, CAPTION_QUESTION, caption(objects), "caption", "", tuple(range(count)))


def caption(objects: Iterable[dict]) -> str:
    """Every object's "colour shape", left to right: sorted by (x0, y0) of its ``box`` (doc ``objects`` entries).

    Pixel boxes keep the grid's order at every image size, so a doc's answer is ``caption(doc["objects"])``.
    """
    ordered = sorted(objects, key=lambda obj: (obj["box"][0], obj["box"][1]))
    return " ".join(f"{obj['color']} {obj['shape']}" for obj in ordered)


def _relation(first: SceneObject, second: SceneObject) -> str | None:
    """Where ``first`` is relative to ``second``; None unless the centres' separation along one
    axis is at least twice that along the other."""
    dx = (2 * first.x0 + first.side) - (2 * second.x0 + second.side)
    dy = (2 * first.y0 + first.side) - (2 * second.y0 + second.side)
    if abs(dx) >= 2 * abs(dy):
        return "left" if dx < 0 else "right"
    if abs(dy) >= 2 * abs(dx):
        return "above" if dy < 0 else "below"
    return None


def _render_doc(doc_id: str, item: QuestionItem, image_size: int) -> dict:
    """The doc dict of a question item rendered at ``image_size`` px."""
    boxes = [_pixel_box(obj, image_size) for obj in item.scene]
    return {
        "doc_id": doc_id,
        "question": item.question,
        "answer": item.answer,
        "question_type": item.question_type,
        "negative_sampling": item.negative_sampling,
        "image": _render(item.scene, boxes, image_size),
        "image_size": image_size,
        "boxes": [boxes[index] for index in item.targets],
        "objects": [
            {"shape": obj.shape, "color": obj.color, "box": box} for obj, box in zip(item.scene, boxes)
        ],
    }


def _pixel_box(obj: SceneObject, image_size: int) -> list[int]:
    """The object's square pixel box [x0, y0, x1, y1) at ``image_size`` px."""
    x0, y0, side = (_to_pixels(value, image_size) for value in (obj.x0, obj.y0, obj.side))
    return [x0, y0, x0 + side, y0 + side]


def _to_pixels(grid_value: int, image_size: int) -> int:
    """A grid length or coordinate in pixels at ``image_size``, rounded half up."""
    return (2 * grid_value * image_size + GRID) // (2 * GRID)


def _to_grid(pixel_value: int, image_size: int) -> int:
    """Inverse of ``_to_pixels``; exact for ``image_size >= GRID``."""
    return (2 * pixel_value * GRID + image_size) // (2 * image_size)


def _render(scene: Scene, boxes: list[list[int]], image_size: int) -> Image.Image:
    """The RGB image of a scene: each shape filled flat, without anti-aliasing, on a white canvas."""
    canvas = np.full((image_size, image_size, 3), BACKGROUND, dtype=np.uint8)
    for obj, (x0, y0, x1, y1) in zip(scene, boxes):
        canvas[y0:y1, x0:x1][_shape_mask(obj.shape, x1 - x0)] = RGB[obj.color]
    return Image.fromarray(canvas, mode="RGB")


def _shape_mask(shape: str, side: int) -> np.ndarray:
    """Pixels of a shape filling a side x side box; the shape touches all four box edges.

    Tested at pixel centres in doubled integer coordinates (u, v in [-side+1, side-1]), so it is exact.
    """
    doubled = 2 * np.arange(side, dtype=np.int64) + 1 - side
    u, v = doubled[None, :], doubled[:, None]
    if shape == "square":
        return np.ones((side, side), dtype=bool)
    if shape == "circle":
        return u * u + v * v <= side * side
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= side
    row_from_top = np.arange(side, dtype=np.int64)[:, None]
    return np.abs(u) <= row_from_top + 1  # triangle: apex top-centre, base along the bottom edge
