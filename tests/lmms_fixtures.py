"""Tiny local stand-ins for the hub datasets of five of lmms-eval's own tasks, and a harness that scores
them with lmms-eval's own evaluator.

Each ``write_*`` function lays a folder out like the hub repo (``README.md`` with ``configs:`` and
``dataset_info:`` metadata, parquet shards under the repo's data folder), so that
``datasets.load_dataset(folder, name=<the YAML's dataset_name>, split=<the YAML's split>)`` returns rows with
the real columns and feature types (``datasets.Image`` columns hold small generated PNGs). Content is
deterministic and chosen so a constant answer gets some docs right and some wrong.

``run_lmms_eval`` runs ``lmms_eval.evaluator.simple_evaluate`` in-process, the way ``lmms-eval --model dummy``
does from the command line, on a COPY of the task folders in which only ``dataset_path`` is rewritten to the
local fixture. Nothing here imports lmms_eval at module import time, so the fixtures are usable without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from PIL import Image as PILImage
from PIL import ImageDraw

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

_PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (128, 128, 128),
]


def _image(index: int, size: tuple[int, int] = (24, 24)) -> PILImage.Image:
    """A small deterministic RGB picture: a coloured background with a differently coloured box."""
    width, height = size
    image = PILImage.new("RGB", size, _PALETTE[index % len(_PALETTE)])
    draw = ImageDraw.Draw(image)
    offset = index % 5
    draw.rectangle([2 + offset, 3, width // 2 + offset, height - 4], fill=_PALETTE[(index * 3 + 1) % len(_PALETTE)])
    return image


# --------------------------------------------------------------------------------------------------------
# Hub-repo writer
# --------------------------------------------------------------------------------------------------------


def _write_repo(root: Path, configs: dict[str, dict[str, tuple[str, dict]]], features, card_title: str) -> Path:
    """Write ``root/README.md`` and one parquet shard per (config, split).

    ``configs`` maps a config name to {split: (data folder inside the repo, columns)}; shards are named
    ``<folder>/<split>-00000-of-00001.parquet`` and the README maps each split to ``<folder>/<split>-*``
    exactly as ``push_to_hub`` does.
    """
    import datasets

    root.mkdir(parents=True, exist_ok=True)
    card_configs, card_infos = [], []
    for config_name, splits in configs.items():
        data_files, split_infos, download_size = [], [], 0
        for split, (folder, columns) in splits.items():
            (root / folder).mkdir(parents=True, exist_ok=True)
            dataset = datasets.Dataset.from_dict(columns, features=features)
            shard = root / folder / f"{split}-00000-of-00001.parquet"
            dataset.to_parquet(str(shard))
            download_size += shard.stat().st_size
            data_files.append({"split": split, "path": f"{folder}/{split}-*"})
            split_infos.append({"name": split, "num_bytes": int(dataset.data.nbytes), "num_examples": len(dataset)})
        card_configs.append({"config_name": config_name, "data_files": data_files})
        info = {
            "features": features._to_yaml_list(),
            "splits": split_infos,
            "download_size": download_size,
            "dataset_size": sum(s["num_bytes"] for s in split_infos),
        }
        if len(configs) > 1 or config_name != "default":
            info = {"config_name": config_name, **info}
        card_infos.append(info)
    metadata = {
        "dataset_info": card_infos[0] if len(card_infos) == 1 else card_infos,
        "configs": card_configs,
    }
    readme = "---\n" + yaml.safe_dump(metadata, sort_keys=False) + "---\n\n" + f"# {card_title}\n\nA tiny local test fixture with the schema of the hub dataset.\n"
    (root / "README.md").write_text(readme)
    return root


# --------------------------------------------------------------------------------------------------------
# POPE
# --------------------------------------------------------------------------------------------------------

# (object, answer, category): 7 "yes" and 5 "no" answers over the three POPE sampling strategies.
_POPE_ROWS = [
    ("dog", "yes", "adversarial"),
    ("car", "no", "adversarial"),
    ("person", "yes", "adversarial"),
    ("chair", "no", "adversarial"),
    ("cup", "yes", "popular"),
    ("bottle", "yes", "popular"),
    ("umbrella", "no", "popular"),
    ("bench", "yes", "popular"),
    ("cat", "yes", "random"),
    ("kite", "no", "random"),
    ("clock", "yes", "random"),
    ("surfboard", "no", "random"),
]


def write_pope(root: Path) -> Path:
    """lmms-lab/POPE: default config, split ``test`` (``data/test-*``), and config ``Full`` with the splits
    ``random`` / ``popular`` / ``adversarial`` (``Full/<split>-*``), each the rows of that category."""
    from datasets import Features, Image, Value

    features = Features(
        {
            "id": Value("string"),
            "question_id": Value("string"),
            "question": Value("string"),
            "answer": Value("string"),
            "image_source": Value("string"),
            "image": Image(),
            "category": Value("string"),
        }
    )
    columns = {name: [] for name in features}
    for i, (obj, answer, category) in enumerate(_POPE_ROWS):
        columns["id"].append(str(i))
        columns["question_id"].append(str(i + 1))
        columns["question"].append(f"Is there a {obj} in the image?")
        columns["answer"].append(answer)
        columns["image_source"].append(f"COCO_val2014_{100000 + i * 37:012d}")
        columns["image"].append(_image(i))
        columns["category"].append(category)
    full = {}  # config "Full": one split per sampling strategy (what pope_random / pope_pop / pope_adv load)
    for strategy in ("random", "popular", "adversarial"):
        rows = [i for i, category in enumerate(columns["category"]) if category == strategy]
        full[strategy] = ("Full", {name: [values[i] for i in rows] for name, values in columns.items()})
    return _write_repo(root, {"default": {"test": ("data", columns)}, "Full": full}, features, "POPE")


# --------------------------------------------------------------------------------------------------------
# MME
# --------------------------------------------------------------------------------------------------------

# (category, (answer of question 1, answer of question 2)) per image. Real MME always pairs one "Yes" and
# one "No" question per image; the fixture also has Yes/Yes and No/No pairs so that a constant answer
# reaches acc+ (both questions of an image right) on some images and not on others.
_MME_IMAGES = [
    ("existence", ("Yes", "No")),
    ("existence", ("Yes", "Yes")),
    ("count", ("No", "No")),
    ("color", ("Yes", "No")),
    ("OCR", ("Yes", "Yes")),
    ("commonsense_reasoning", ("Yes", "No")),
    ("commonsense_reasoning", ("No", "No")),
    ("code_reasoning", ("Yes", "Yes")),
]


def write_mme(root: Path) -> Path:
    """lmms-lab/MME, default config, split ``test`` (``data/test-*``); two questions per image, both with
    the image's path as ``question_id`` (the pairing ``mme_aggregate_results`` relies on)."""
    from datasets import Features, Image, Value

    features = Features(
        {
            "question_id": Value("string"),
            "image": Image(),
            "question": Value("string"),
            "answer": Value("string"),
            "category": Value("string"),
        }
    )
    columns = {name: [] for name in features}
    for i, (category, answers) in enumerate(_MME_IMAGES):
        for j, answer in enumerate(answers):
            columns["question_id"].append(f"{category}/{i:04d}.png")
            columns["image"].append(_image(i, (32, 24)))
            columns["question"].append(f"Does the picture match statement {j + 1} about {category}? Please answer yes or no.")
            columns["answer"].append(answer)
            columns["category"].append(category)
    return _write_repo(root, {"default": {"test": ("data", columns)}}, features, "MME")


# --------------------------------------------------------------------------------------------------------
# ScienceQA
# --------------------------------------------------------------------------------------------------------

# (question, choices, answer index, hint): answers spread over A-D, two to five choices, some empty hints.
_SQA_IMG_ROWS = [
    ("Which of these states is farthest north?", ["Kansas", "Maine", "Texas", "Ohio"], 1, ""),
    ("Which animal's feet are also adapted for swimming?", ["duck", "camel"], 0, "Ducks live near water."),
    ("Which solution has a higher concentration of green particles?", ["Solution A", "Solution B", "neither; their concentrations are the same"], 2, "The diagram shows two solutions."),
    ("What is the capital of Utah?", ["Salt Lake City", "Denver", "Boise", "Phoenix"], 0, ""),
    ("Which material is this spoon made of?", ["wood", "metal"], 1, "Select the best answer."),
    ("Which month is the wettest on average in Christchurch?", ["April", "May", "August", "December"], 3, "Use the graph to answer."),
    ("Identify the question that the experiment can best answer.", ["Do more bacteria grow?", "Does temperature matter?"], 1, ""),
    ("Which of the following could Kinsley's test show?", ["how steady a bridge would be", "if the design would work", "how much weight it holds"], 0, "People can use the engineering-design process."),
    ("Will these magnets attract or repel each other?", ["repel", "attract"], 1, "Two magnets are placed as shown."),
    ("Which country is highlighted?", ["Tonga", "Fiji", "Samoa", "Tuvalu", "Nauru"], 4, ""),
    ("Think about the magnetic force between the magnets. Which is true?", ["The force is smaller in Pair 1.", "The force is smaller in Pair 2."], 1, ""),
    ("Which tense does the sentence use?", ["present tense", "future tense", "past tense"], 2, "Mark will carry the box."),
]

_SQA_TEXT_ROWS = [
    ("Which word would you find on a dictionary page with the guide words 'lake' and 'lump'?", ["lever", "lunch"], 0, ""),
    ("Which is a compound sentence?", ["I ran, and she walked.", "I ran fast."], 0, ""),
    ("What does the verbal irony in this text suggest?", ["The day was bad.", "The day was good."], 0, "What a great day, said the soaked hiker."),
]


def _sqa_columns(rows, with_image: bool, first_index: int) -> dict:
    subjects = ["social science", "natural science", "language science"]
    columns = {name: [] for name in ("image", "question", "choices", "answer", "hint", "task", "grade", "subject", "topic", "category", "skill", "lecture", "solution")}
    for k, (question, choices, answer, hint) in enumerate(rows):
        i = first_index + k
        columns["image"].append(_image(i, (28, 20)) if with_image else None)
        columns["question"].append(question)
        columns["choices"].append(list(choices))
        columns["answer"].append(answer)
        columns["hint"].append(hint)
        columns["task"].append("closed choice")
        columns["grade"].append(f"grade{2 + i % 7}")
        columns["subject"].append(subjects[i % 3])
        columns["topic"].append(["geography", "biology", "physics", "grammar"][i % 4])
        columns["category"].append("Geography" if i % 2 == 0 else "Adaptations")
        columns["skill"].append("Read a map" if i % 2 == 0 else "Animal adaptations")
        columns["lecture"].append("A lecture about the topic.")
        columns["solution"].append(f"The answer is {choices[answer]}.")
    return columns


def write_scienceqa(root: Path) -> Path:
    """lmms-lab/ScienceQA with configs ``ScienceQA-IMG`` (every row has an image) and ``ScienceQA-FULL``
    (the same rows plus text-only rows whose image is None), split ``test`` (``<config>/test-*``)."""
    from datasets import Features, Image, List, Value

    features = Features(
        {
            "image": Image(),
            "question": Value("string"),
            "choices": List(Value("string")),
            "answer": Value("int8"),
            "hint": Value("string"),
            "task": Value("string"),
            "grade": Value("string"),
            "subject": Value("string"),
            "topic": Value("string"),
            "category": Value("string"),
            "skill": Value("string"),
            "lecture": Value("string"),
            "solution": Value("string"),
        }
    )
    img = _sqa_columns(_SQA_IMG_ROWS, True, 0)
    text = _sqa_columns(_SQA_TEXT_ROWS, False, len(_SQA_IMG_ROWS))
    full = {name: img[name] + text[name] for name in img}
    configs = {
        "ScienceQA-FULL": {"test": ("ScienceQA-FULL", full)},
        "ScienceQA-IMG": {"test": ("ScienceQA-IMG", img)},
    }
    return _write_repo(root, configs, features, "ScienceQA")


# --------------------------------------------------------------------------------------------------------
# TextVQA
# --------------------------------------------------------------------------------------------------------


def _ten(*groups: tuple[str, int]) -> list[str]:
    answers = [answer for answer, count in groups for _ in range(count)]
    assert len(answers) == 10, answers
    return answers


# (question, ten human answers, ocr tokens). With EvalAI normalisation "two" and "2." count as "2", and
# "Yes" as "yes"; the answer counts give VQA accuracies 1, 0.9, 0.6, 0.3 and 0 for a constant "2" / "yes".
_TEXTVQA_ROWS = [
    ("what number is on the jersey?", _ten(("2", 10)), ["2", "team"]),
    ("how many items are left?", _ten(("2", 3), ("3", 7)), ["3", "items"]),
    ("what number is written on the sign?", _ten(("two", 2), ("12", 8)), ["12"]),
    ("which lane number is shown?", _ten(("2.", 1), ("7", 9)), ["lane", "7"]),
    ("what brand is the phone?", _ten(("nokia", 9), ("nokia phone", 1)), ["nokia"]),
    ("is this a stop sign?", _ten(("yes", 10)), ["stop"]),
    ("does the shirt say open?", _ten(("Yes", 3), ("no", 7)), ["closed"]),
    ("is the word on the bottle coca cola?", _ten(("yes", 2), ("no", 8)), ["pepsi"]),
    ("what is the name of the store?", _ten(("the corner shop", 6), ("corner shop", 4)), ["corner", "shop"]),
    ("what time is shown?", _ten(("10:30", 8), ("10 30", 2)), ["10:30"]),
]


def write_textvqa(root: Path) -> Path:
    """lmms-lab/textvqa, default config, split ``validation`` (``data/validation-*``)."""
    from datasets import Features, Image, List, Value

    features = Features(
        {
            "image_id": Value("string"),
            "question_id": Value("int32"),
            "question": Value("string"),
            "question_tokens": List(Value("string")),
            "image": Image(),
            "image_width": Value("int32"),
            "image_height": Value("int32"),
            "flickr_original_url": Value("string"),
            "flickr_300k_url": Value("string"),
            "answers": List(Value("string")),
            "image_classes": List(Value("string")),
            "set_name": Value("string"),
            "ocr_tokens": List(Value("string")),
        }
    )
    columns = {name: [] for name in features}
    for i, (question, answers, ocr) in enumerate(_TEXTVQA_ROWS):
        size = (20 + 2 * i, 16 + i)
        image_id = f"{0x3A8AE2EF43B901 + i * 7919:016x}"
        columns["image_id"].append(image_id)
        columns["question_id"].append(34602 + i)
        columns["question"].append(question)
        columns["question_tokens"].append(question.rstrip("?").split() + ["?"])
        columns["image"].append(_image(i, size))
        columns["image_width"].append(size[0])
        columns["image_height"].append(size[1])
        columns["flickr_original_url"].append(f"https://farm1.staticflickr.com/{i}/{image_id}_o.jpg")
        columns["flickr_300k_url"].append(f"https://c1.staticflickr.com/1/{i}/{image_id}_z.jpg")
        columns["answers"].append(answers)
        columns["image_classes"].append(["Poster", "Signage"][: 1 + i % 2])
        columns["set_name"].append("val")
        columns["ocr_tokens"].append(ocr)
    return _write_repo(root, {"default": {"validation": ("data", columns)}}, features, "textvqa")


# --------------------------------------------------------------------------------------------------------
# VQAv2
# --------------------------------------------------------------------------------------------------------

# (question, answer_type, question_type, ten human answers). With EvalAI normalisation "two" is "2" and
# "Yes." is "yes"; a constant "yes" / "2" scores 1, 0.9, 0.6, 0.3 or 0 depending on the row.
_VQAV2_ROWS = [
    ("Is the man wearing a hat?", "yes/no", "is the man", _ten(("yes", 10))),
    ("Is the dog asleep?", "yes/no", "is the", _ten(("yes", 3), ("no", 7))),
    ("Is there a clock on the wall?", "yes/no", "is there a", _ten(("Yes.", 2), ("no", 8))),
    ("Are the lights on?", "yes/no", "are the", _ten(("no", 10))),
    ("Does this look tasty?", "yes/no", "does this", _ten(("yes", 1), ("no", 9))),
    ("How many people are there?", "number", "how many", _ten(("2", 10))),
    ("How many birds are on the wire?", "number", "how many", _ten(("two", 3), ("3", 7))),
    ("How many cars are parked?", "number", "how many", _ten(("2", 2), ("4", 8))),
    ("How many slices are left?", "number", "how many", _ten(("1", 10))),
    ("What color is the bus?", "other", "what color is the", _ten(("red", 6), ("orange", 4))),
    ("What is the man holding?", "other", "what is the man", _ten(("an umbrella", 7), ("umbrella", 3))),
    ("What sport is being played?", "other", "what sport is", _ten(("tennis", 10))),
]


def write_vqav2(root: Path, question_ids: list[int] | None = None) -> Path:
    """lmms-lab/VQAv2, default config, split ``validation`` (``data/validation-*``); ``answers`` is a list
    of {answer, answer_confidence, answer_id} structs with distinct ids 1-10."""
    from datasets import Features, Image, List, Value

    features = Features(
        {
            "question_type": Value("string"),
            "multiple_choice_answer": Value("string"),
            "answers": List({"answer": Value("string"), "answer_confidence": Value("string"), "answer_id": Value("int64")}),
            "image_id": Value("int64"),
            "answer_type": Value("string"),
            "question_id": Value("int64"),
            "question": Value("string"),
            "image": Image(),
        }
    )
    confidences = ["yes", "yes", "maybe", "yes", "no", "yes", "yes", "maybe", "yes", "yes"]
    columns = {name: [] for name in features}
    for i, (question, answer_type, question_type, answers) in enumerate(_VQAV2_ROWS):
        image_id = 262148 + i * 11
        columns["question_type"].append(question_type)
        columns["multiple_choice_answer"].append(max(answers, key=answers.count).rstrip(".").lower())
        columns["answers"].append([{"answer": a, "answer_confidence": confidences[k], "answer_id": k + 1} for k, a in enumerate(answers)])
        columns["image_id"].append(image_id)
        columns["answer_type"].append(answer_type)
        columns["question_id"].append(image_id * 1000 + i if question_ids is None else question_ids[i])
        columns["question"].append(question)
        columns["image"].append(_image(i, (26, 22)))
    return _write_repo(root, {"default": {"validation": ("data", columns)}}, features, "VQAv2")


# --------------------------------------------------------------------------------------------------------
# Task table
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LmmsTask:
    """One lmms-eval task: its folder in ``lmms_eval/tasks``, the YAML that holds ``dataset_path``, the
    ``dataset_name``/split it loads, and the writer of its fixture."""

    name: str
    folder: str
    path_yaml: str
    dataset_name: str | None
    split: str
    writer: Callable[[Path], Path]


TASKS: dict[str, LmmsTask] = {
    "pope": LmmsTask("pope", "pope", "pope.yaml", None, "test", write_pope),
    "pope_random": LmmsTask("pope_random", "pope", "pope_random.yaml", "Full", "random", write_pope),
    "pope_pop": LmmsTask("pope_pop", "pope", "pope_pop.yaml", "Full", "popular", write_pope),
    "pope_adv": LmmsTask("pope_adv", "pope", "pope_adv.yaml", "Full", "adversarial", write_pope),
    "mme": LmmsTask("mme", "mme", "mme.yaml", None, "test", write_mme),
    "scienceqa_img": LmmsTask("scienceqa_img", "scienceqa", "scienceqa_img.yaml", "ScienceQA-IMG", "test", write_scienceqa),
    "textvqa_val": LmmsTask("textvqa_val", "textvqa", "_default_template_textvqa_yaml", None, "validation", write_textvqa),
    # vqav2_val scores the validation split locally (vqav2_process_results_val -> exact_match);
    # vqav2_test only produces an EvalAI submission file.
    "vqav2_val": LmmsTask("vqav2_val", "vqav2", "_default_template_vqav2_yaml", None, "validation", write_vqav2),
}

_DATASET_PATH_LINE = re.compile(r"^(dataset_path:[ \t]*)(\S+)[ \t]*$", re.MULTILINE)


def lmms_tasks_dir() -> Path:
    """``site-packages/lmms_eval/tasks`` (found without importing lmms_eval)."""
    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("lmms_eval is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "tasks"


def task_folder(task: str) -> Path:
    """The installed lmms-eval folder of ``task`` (what ``--include_path`` should point at)."""
    return lmms_tasks_dir() / TASKS[task].folder


def hub_id(task: str) -> str:
    """The ``dataset_path`` the installed YAML loads (for example ``lmms-lab/POPE``)."""
    spec = TASKS[task]
    text = (task_folder(task) / spec.path_yaml).read_text()
    match = _DATASET_PATH_LINE.search(text)
    if match is None:
        raise ValueError(f"no dataset_path in {spec.path_yaml}")
    return match.group(2).strip("'\"")


def write_fixture(task: str, folder: Path) -> Path:
    """Write the stand-in of ``task``'s hub dataset into ``folder``."""
    return TASKS[task].writer(Path(folder))


def build_fixtures(tasks: Iterable[str], base: Path) -> dict[str, Path]:
    """Write one fixture per distinct hub dataset under ``base``; returns {hub id: local folder}."""
    paths: dict[str, Path] = {}
    for task in tasks:
        repo = hub_id(task)
        if repo not in paths:
            paths[repo] = write_fixture(task, Path(base) / repo.replace("/", "__"))
    return paths


def load_fixture(task: str, folder: Path):
    """``datasets.load_dataset`` of the fixture exactly as the task's YAML names it."""
    import datasets

    spec = TASKS[task]
    return datasets.load_dataset(str(folder), name=spec.dataset_name, split=spec.split)


# --------------------------------------------------------------------------------------------------------
# lmms-eval harness
# --------------------------------------------------------------------------------------------------------


def copy_task_folders(task_names: Iterable[str], dataset_paths: dict[str, Path | str], dest: Path) -> Path:
    """Copy the installed task folders of ``task_names`` under ``dest`` and rewrite, in every YAML (and
    include-template) of the copy, a ``dataset_path:`` line naming a hub id of ``dataset_paths`` to the
    local folder. Nothing else changes. Returns ``dest``."""
    dest = Path(dest)
    for folder in sorted({TASKS[name].folder for name in task_names}):
        target = dest / folder
        shutil.copytree(task_folder_by_name(folder), target, ignore=shutil.ignore_patterns("__pycache__"))
        for file in target.iterdir():
            if not file.is_file() or file.suffix == ".py":
                continue
            text = file.read_text()

            def swap(match: re.Match) -> str:
                repo = match.group(2).strip("'\"")
                return f"{match.group(1)}{dataset_paths[repo]}" if repo in dataset_paths else match.group(0)

            new = _DATASET_PATH_LINE.sub(swap, text)
            if new != text:
                file.write_text(new)
    return dest


def task_folder_by_name(folder: str) -> Path:
    return lmms_tasks_dir() / folder


@contextlib.contextmanager
def _patched_environ(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _cli_args(argv: list[str]):
    """lmms-eval's own CLI namespace for ``lmms-eval ARGV`` (its parser reads ``sys.argv``)."""
    from lmms_eval.__main__ import parse_eval_args

    saved = sys.argv
    sys.argv = ["lmms-eval", *argv]
    try:
        _, args = parse_eval_args()
    finally:
        sys.argv = saved
    return args


def run_lmms_eval(
    task_names: Iterable[str],
    dataset_paths: dict[str, Path | str],
    response: str,
    workdir: Path,
    *,
    full: bool = False,
) -> dict:
    """Score ``task_names`` with lmms-eval's own evaluator and its ``dummy`` model answering ``response``.

    Mirrors ``lmms-eval --model dummy --model_args response=RESPONSE --tasks T --include_path COPY
    --output_path OUT``: the namespace comes from lmms-eval's own argument parser and is passed as
    ``cli_args`` like ``cli_evaluate_single`` does. That matters: with ``cli_args`` (and no
    ``--process_with_media``) lmms-eval calls ``process_results`` on the docs WITHOUT their image columns
    (``task.eval_docs_no_media``), and aggregations that take ``args`` (textvqa's submission) write under
    ``OUTPUT/submissions`` instead of the current directory.

    The task folders are copies with only ``dataset_path`` rewritten (``copy_task_folders``), indexed with
    ``include_defaults=False`` so the copy is the only definition of each task name (and indexing skips the
    hundreds of stock YAMLs). lmms-eval passes the YAMLs' ``dataset_kwargs`` (``token: True``) to
    ``datasets.load_dataset``; for a local folder with HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set that needs
    nothing else. The datasets cache goes to ``WORKDIR/hf_datasets_cache`` (``LMMS_EVAL_DATASETS_CACHE``).

    Returns lmms-eval's ``results`` dict ({task: {"metric,filter": value, ...}}), or with ``full=True``
    the whole returned dict (``results``, ``n-samples``, ``configs``, ...; ``samples`` removed).
    """
    from lmms_eval import evaluator
    from lmms_eval.tasks import TaskManager

    workdir = Path(workdir)
    task_names = list(task_names)
    tasks_copy = copy_task_folders(task_names, dataset_paths, workdir / "lmms_tasks")
    output = workdir / "lmms_output"
    env = {**OFFLINE_ENV, "LMMS_EVAL_DATASETS_CACHE": str(workdir / "hf_datasets_cache")}
    with _patched_environ(env):
        args = _cli_args(
            [
                "--model", "dummy",
                "--model_args", f"response={response}",
                "--tasks", ",".join(task_names),
                "--include_path", str(tasks_copy),
                "--output_path", str(output),
                "--verbosity", "WARNING",
            ]
        )  # fmt: skip
        task_manager = TaskManager(args.verbosity, include_path=str(tasks_copy), include_defaults=False, model_name=args.model)
        missing = [name for name in task_names if name not in task_manager.all_tasks]
        if missing:
            raise ValueError(f"lmms-eval did not index {missing} from {tasks_copy}")
        out = evaluator.simple_evaluate(
            model=args.model,
            model_args=args.model_args,
            tasks=task_manager.match_tasks(task_names),
            batch_size=args.batch_size,
            device=args.device,
            limit=args.limit,
            log_samples=False,
            task_manager=task_manager,
            verbosity=args.verbosity,
            random_seed=args.seed[0],
            numpy_random_seed=args.seed[1],
            torch_random_seed=args.seed[2],
            fewshot_random_seed=args.seed[3],
            cli_args=args,
        )
    if out is None:
        raise RuntimeError("lmms-eval returned no results")
    out.pop("samples", None)
    return out if full else out["results"]
