"""Self-consistency over K sampled answers, compared after ``normalize_answer``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from scipy import stats

from vrp_bench.api.metrics import normalize_answer


def _answer_counts(answers: Sequence[str]) -> Counter[str]:
    """Counts of the normalised answers, in first-seen order; no answers: ValueError."""
    if not answers:
        raise ValueError("self-consistency needs at least one sampled answer")
    return Counter(normalize_answer(answer) for answer in answers)


def majority_answer(answers: Sequence[str]) -> str:
    """The most frequent normalised answer (the SC prediction); ties go to the first seen."""
    return _answer_counts(answers).most_common(1)[0][0]


def sc_agreement(answers: Sequence[str]) -> float:
    """S_SC = count(majority) / K, in [1/K, 1]."""
    return _answer_counts(answers).most_common(1)[0][1] / len(answers)


def sc_entropy(answers: Sequence[str]) -> float:
    """-sum_a p_a ln p_a over the normalised answers a, p_a = count(a) / K (nats; 0 when all agree)."""
    return float(stats.entropy(list(_answer_counts(answers).values())))
