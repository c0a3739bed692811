"""Self-consistency over K sampled answers: each sample's final answer (for a reasoning path, the answer the task's
filters extract from it; None when they find none), compared after ``normalize_answer`` with the task's rules.

Unparsed samples (None) are left out and counted, never a distinct answer: with K samples of which U are unparsed,
S_SC = count(majority) / (K - U); no parsed sample at all is a ValueError (the signals are null with that reason).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from scipy import stats

from vrp_bench.api.metrics import AnswerNormalization, normalize_answer


def _answer_counts(answers: Sequence[str | None], rules: AnswerNormalization) -> Counter[str]:
    """Counts of the normalised parsed answers, in first-seen order; none parsed: ValueError."""
    parsed = [answer for answer in answers if answer is not None]
    if not parsed:
        raise ValueError(f"self-consistency needs at least one parsed sampled answer ({len(answers)} sampled, "
                         "none parsed)" if answers else "self-consistency needs at least one sampled answer")
    return Counter(normalize_answer(answer, rules) for answer in parsed)


def majority_answer(answers: Sequence[str | None], rules: AnswerNormalization = AnswerNormalization()) -> str:
    """The most frequent normalised parsed answer (the SC prediction); ties go to the first seen."""
    return _answer_counts(answers, rules).most_common(1)[0][0]


def sc_agreement(answers: Sequence[str | None], rules: AnswerNormalization = AnswerNormalization()) -> float:
    """S_SC = count(majority) / (K - U), in [1/(K - U), 1] (U: unparsed samples)."""
    counts = _answer_counts(answers, rules)
    return counts.most_common(1)[0][1] / sum(counts.values())


def sc_entropy(answers: Sequence[str | None], rules: AnswerNormalization = AnswerNormalization()) -> float:
    """-sum_a p_a ln p_a over the normalised parsed answers a, p_a = count(a) / (K - U) (nats; 0 when all agree)."""
    return float(stats.entropy(list(_answer_counts(answers, rules).values())))


def unparsed_count(answers: Sequence[str | None]) -> int:
    """U: the samples whose final answer could not be extracted."""
    return sum(answer is None for answer in answers)
