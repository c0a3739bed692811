"""Where a generated answer ends, as text and as tokens.

Generation stops at an end-of-sequence token (or ``max_new_tokens``); the returned text stops earlier
still, at the first of the task's ``until`` strings, and is stripped. Everything a signal reads per answer
token (log-probabilities, entropies, margins, answer attention, the first answer position's hidden state)
must cover exactly the tokens of that text, so ``answer_token_count`` maps the text's end back to a token
boundary: the shortest prefix of the generated tokens whose text covers the returned answer. A token that
straddles a stop string (``" cat"`` with ``until=["at s"]``: the answer ends in "c") wrote part of the answer,
so it is counted; tokens after it, and trailing whitespace tokens the strip removes, are not.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any ``until`` string."""
    cut = min((text.find(stop) for stop in until if stop and stop in text), default=len(text))
    return text[:cut]


def answer_text(tokenizer: Any, tokens: Sequence[int], until: Sequence[str]) -> str:
    """The answer a request gets: the decoded tokens (special tokens skipped) cut at ``until``, stripped."""
    return cut_at_stop(tokenizer.decode(list(tokens), skip_special_tokens=True), until).strip()


def answer_token_count(tokenizer: Any, tokens: Sequence[int], stop_ids: Collection[int], until: Sequence[str]) -> int:
    """How many of the generated ``tokens`` wrote the returned answer: none from the first ``stop_ids``
    (end-of-sequence / pad) token on, and of the rest the shortest prefix whose text covers the answer's last
    character (the text before the first ``until`` string, trailing whitespace removed).

    Searched back from the end-of-sequence, so an answer that ends where generation ended costs one decode."""
    tokens = list(tokens)
    length = next((i for i, token in enumerate(tokens) if token in stop_ids), len(tokens))
    text = tokenizer.decode(tokens[:length], skip_special_tokens=True)
    answer_part = cut_at_stop(text, until).rstrip()
    while length > 0 and tokenizer.decode(tokens[: length - 1], skip_special_tokens=True).startswith(answer_part):
        length -= 1
    return length
