"""Words and n-grams of generated text, with no dependency beyond the standard library:
the evaluation metrics and the server's playground count them the same way.

Tokenisation: the text is lowercased and split with ``\\w+|[^\\w\\s]`` (Unicode-aware): runs
of letters/digits/underscore are words and every other non-space character is a token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: Word tokeniser shared by the token-based metrics.
TOKEN_PATTERN: re.Pattern[str] = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and split it with :data:`TOKEN_PATTERN`."""
    return TOKEN_PATTERN.findall(text.lower())


def word_ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    """The n-grams of ``text``'s tokens, in order (none when it has fewer than ``n``)."""
    words = tokenize(text)
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def check_responses(responses: Sequence[str]) -> None:
    if isinstance(responses, str):
        # A bare string would silently be treated as a list of characters.
        raise TypeError("responses must be a sequence of strings, not a single string")
    if len(responses) == 0:
        raise ValueError("diversity needs at least one response")


def distinct_n(responses: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural
    Conversation Models", NAACL).

    ``distinct-n = |unique n-grams| / |n-grams|``, both counted over the pooled n-grams of all
    responses. N-grams never span two responses. A response shorter than ``n`` tokens
    contributes none; when no response has an n-gram at all (e.g. all empty) the value is
    ``0.0``: there is no distinct content.
    """
    check_responses(responses)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    pooled = [gram for text in responses for gram in word_ngrams(text, n)]
    if not pooled:
        return 0.0
    return len(set(pooled)) / len(pooled)
