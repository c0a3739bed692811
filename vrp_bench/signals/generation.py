"""Generation-dynamics signals from per-token arrays of the generated answer.

``token_logprobs``: log p of each chosen token; ``token_entropies``: entropy (nats) of each
next-token distribution; ``token_margins``: top-1 minus top-2 log-probability at each step.
An empty answer (no tokens) gives None.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_logprob(token_logprobs: Sequence[float]) -> float | None:
    """P_tok = (1/T) sum_t log p(y_t)."""
    return float(np.mean(token_logprobs)) if len(token_logprobs) else None


def geometric_mean_prob(token_logprobs: Sequence[float]) -> float | None:
    """exp(P_tok) = (prod_t p(y_t))^(1/T), a probability in [0, 1]."""
    p_tok = mean_logprob(token_logprobs)
    return None if p_tok is None else float(np.exp(p_tok))


def min_logprob(token_logprobs: Sequence[float]) -> float | None:
    """min_t log p(y_t): the least confident token."""
    return float(np.min(token_logprobs)) if len(token_logprobs) else None


def mean_entropy(token_entropies: Sequence[float]) -> float | None:
    """(1/T) sum_t H(p(. | y_<t)), nats."""
    return float(np.mean(token_entropies)) if len(token_entropies) else None


def first_token_margin(token_margins: Sequence[float]) -> float | None:
    """log p_top1 - log p_top2 at the first generated token."""
    return float(token_margins[0]) if len(token_margins) else None


def perplexity(token_logprobs: Sequence[float]) -> float | None:
    """PPL = exp(-P_tok)."""
    p_tok = mean_logprob(token_logprobs)
    return None if p_tok is None else float(np.exp(-p_tok))
