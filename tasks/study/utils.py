"""Prompt and scoring functions of the study's real benchmarks (``!function utils.*`` in their YAML).

Images are passed at their own resolution (the model's processor resizes them, as for any real checkpoint).
Correctness is the study's: normalised exact match (``vrp_bench.api.metrics.normalized_exact_match``) against
the reference answer: POPE's yes/no, VQAv2's ``multiple_choice_answer`` (its annotators' most common answer),
TextVQA's most common annotator answer. ``vqa_accuracy`` adds the VQA benchmarks' own soft score.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from itertools import combinations
from typing import Any

from vrp_bench.api.metrics import normalize_answer, normalized_exact_match

VQAV2_SUBSET_MODULUS = 40
"""VQAv2 validation subset: the questions whose sha256(str(question_id)) is 0 modulo this (about 1 in 40, ~5.4k
of 214k): fixed, independent of the dataset's order, and the same on any copy of the data."""


def doc_to_visual(doc: dict[str, Any]) -> list[Any]:
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question'].strip()}{kwargs.get('post_prompt', '')}"


# --- POPE -------------------------------------------------------------------------------------------------

def _yes_no(text: str) -> str:
    """"yes" / "no" when the normalised answer starts with it, else the normalised answer."""
    words = normalize_answer(text).split()
    return words[0] if words and words[0] in ("yes", "no") else " ".join(words)


def pope_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    answer = _yes_no(results[0])
    pair = {"prediction": answer, "answer": normalize_answer(doc["answer"])}
    return {"exact_match": normalized_exact_match(results[0], doc["answer"]), "pope_f1": pair, "pope_yes_ratio": pair}


def pope_f1(pairs: list[dict[str, str]]) -> float:
    """F1 of "yes" as the positive class: 2 TP / (2 TP + FP + FN) (0 when there is no positive at all)."""
    tp = sum(p["prediction"] == "yes" and p["answer"] == "yes" for p in pairs)
    fp = sum(p["prediction"] == "yes" and p["answer"] != "yes" for p in pairs)
    fn = sum(p["prediction"] != "yes" and p["answer"] == "yes" for p in pairs)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def pope_yes_ratio(pairs: list[dict[str, str]]) -> float:
    """Share of answers that are "yes" (POPE's bias indicator; 0.5 for a balanced split)."""
    return sum(p["prediction"] == "yes" for p in pairs) / len(pairs)


# --- VQAv2 and TextVQA ------------------------------------------------------------------------------------

def vqav2_subset(dataset: Any) -> Any:
    """The fixed VQAv2 validation subset (``VQAV2_SUBSET_MODULUS``)."""
    def keep(question_id: Any) -> bool:
        return int(hashlib.sha256(str(question_id).encode()).hexdigest(), 16) % VQAV2_SUBSET_MODULUS == 0

    return dataset.filter(keep, input_columns="question_id")


def _annotator_answers(doc: dict[str, Any]) -> list[str]:
    return [a["answer"] if isinstance(a, dict) else a for a in doc["answers"]]


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """The VQA score: the mean, over the 10 ways of leaving one annotator out, of min(1, matches / 3), answers
    compared after ``normalize_answer``."""
    answer = normalize_answer(prediction)
    normalised = [normalize_answer(a) for a in answers]
    subsets = list(combinations(range(len(normalised)), len(normalised) - 1)) or [()]
    return sum(min(1.0, sum(normalised[i] == answer for i in subset) / 3) for subset in subsets) / len(subsets)


def most_common_answer(doc: dict[str, Any]) -> str:
    """The annotators' most common answer (after normalisation; the first seen among ties)."""
    return Counter(normalize_answer(a) for a in _annotator_answers(doc)).most_common(1)[0][0]


def vqa_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    reference = doc.get("multiple_choice_answer") or most_common_answer(doc)
    return {"exact_match": normalized_exact_match(results[0], reference),
            "vqa_accuracy": vqa_accuracy(results[0], _annotator_answers(doc))}
