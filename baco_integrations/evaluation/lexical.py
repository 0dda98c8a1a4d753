"""Lexical diversity of the n responses to ONE prompt.

Every metric maps ``responses: Sequence[str]`` to a float oriented so that HIGHER means MORE
DIVERSE (docs/algorithm.md, Evaluation protocol: diversity across the n responses of a prompt).

Tokenisation (shared by distinct-n, self-BLEU and self-ROUGE-L, so the three agree on what a
"word" is): the text is lowercased (``str.lower``) and split with the regular expression
``\\w+|[^\\w\\s]`` (Unicode-aware): runs of letters/digits/underscore are words and every other
non-space character is a token of its own. ``"Hello, World!"`` -> ``["hello", ",", "world", "!"]``.

Edge cases (all documented per function, all tested):

* zero responses: ``ValueError`` (a caller bug, not a data edge case);
* one response: distinct-n and compression are computed on it as usual; the pairwise metrics
  (self-BLEU, self-ROUGE-L) have no pair to compare and return ``0.0``, the value they give a set
  of identical responses: one sample shows no diversity across samples;
* empty / whitespace-only responses are kept (an empty generation is a real outcome): they
  contribute no n-grams, two empty responses count as identical, an empty and a non-empty one
  as completely different;
* identical responses give ``0.0`` on the pairwise metrics.

No metric ever returns NaN.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from itertools import combinations

from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_score import rouge_scorer

from ..ngrams import check_responses, distinct_n, tokenize

#: BLEU's usual maximum n-gram order (Papineni et al. 2002).
DEFAULT_BLEU_ORDER = 4

#: The 1-based orders of the distinct-n metrics exported by the registry.
DISTINCT_ORDERS: tuple[int, ...] = (1, 2, 3)


def distinct_1(responses: Sequence[str]) -> float:
    """Distinct-1: :func:`distinct_n` with ``n = 1``."""
    return distinct_n(responses, 1)


def distinct_2(responses: Sequence[str]) -> float:
    """Distinct-2: :func:`distinct_n` with ``n = 2``."""
    return distinct_n(responses, 2)


def distinct_3(responses: Sequence[str]) -> float:
    """Distinct-3: :func:`distinct_n` with ``n = 3``."""
    return distinct_n(responses, 3)


def _bleu_against_others(
    hypothesis: list[str], references: list[list[str]], max_order: int
) -> float:
    if not hypothesis:
        # nltk scores an empty hypothesis 0 whatever the references; we call it identical to
        # an empty reference, so that a set of empty responses is not "maximally diverse".
        return 1.0 if any(not ref for ref in references) else 0.0
    # Effective order (as sacrebleu's ``use_effective_order`` and Chen & Cherry 2014): only
    # orders the hypothesis has n-grams for, so identical short responses score exactly 1.
    order = min(max_order, len(hypothesis))
    return float(
        sentence_bleu(
            references,
            hypothesis,
            weights=(1.0 / order,) * order,
            smoothing_function=SmoothingFunction().method1,
            auto_reweigh=False,
        )
    )


def self_bleu(responses: Sequence[str], max_order: int = DEFAULT_BLEU_ORDER) -> float:
    """Self-BLEU diversity: ``1 - mean_i BLEU(r_i; {r_j : j != i})``.

    Self-BLEU: Zhu et al. 2018, "Texygen: A Benchmarking Platform for Text Generation Models"
    (SIGIR): every response is the hypothesis once, the other n-1 responses are its references
    (multi-reference clipping, closest-reference brevity penalty), and the scores are averaged.
    We report ``1 - self-BLEU`` so that higher = more diverse.

    BLEU is ``nltk.translate.bleu_score.sentence_bleu`` (Papineni et al. 2002) with uniform
    weights over orders ``1..min(max_order, len(hypothesis))`` (effective order) and nltk's
    ``SmoothingFunction().method1`` (Chen & Cherry 2014, method 1: a precision whose clipped
    count is 0 gets numerator ``epsilon = 0.1``). Texygen also used nltk with method1.

    Edge cases: one response -> ``0.0``; an empty hypothesis scores BLEU 1 when some reference
    is also empty, else 0; all responses identical (empty included) -> ``0.0``.
    """
    check_responses(responses)
    if max_order < 1:
        raise ValueError(f"max_order must be >= 1, got {max_order}")
    if len(responses) < 2:
        return 0.0
    tokens = [tokenize(text) for text in responses]
    scores = [
        _bleu_against_others(hyp, tokens[:i] + tokens[i + 1 :], max_order)
        for i, hyp in enumerate(tokens)
    ]
    return 1.0 - sum(scores) / len(scores)


class _RegexTokenizer:
    """Adapter so that rouge_score uses :func:`tokenize` (its own drops non-ASCII text)."""

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text)


def self_rouge_l(responses: Sequence[str]) -> float:
    """Self-ROUGE-L diversity: ``1 - mean_{i<j} ROUGE-L-F1(r_i, r_j)``.

    ROUGE-L (Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries"): with
    ``L = LCS(a, b)`` in tokens, ``P = L/|b|``, ``R = L/|a|``, ``F1 = 2PR/(P+R)``; F1 is
    symmetric, so each unordered pair is scored once (``rouge_score.rouge_scorer`` with
    ``rougeL``, no stemming, our tokeniser). The self-metric construction is Texygen's
    (Zhu et al. 2018) applied to ROUGE-L; higher = more diverse.

    Edge cases: one response -> ``0.0``; two empty responses have F1 = 1 (identical), an empty
    and a non-empty one F1 = 0; identical responses -> ``0.0``.
    """
    check_responses(responses)
    if len(responses) < 2:
        return 0.0
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=_RegexTokenizer())
    empty = [not tokenize(text) for text in responses]
    f1s: list[float] = []
    for i, j in combinations(range(len(responses)), 2):
        if empty[i] and empty[j]:
            # rouge_score returns 0 for two empty texts; they are identical.
            f1s.append(1.0)
        else:
            f1s.append(scorer.score(responses[i], responses[j])["rougeL"].fmeasure)
    return 1.0 - sum(f1s) / len(f1s)


def compression_ratio(responses: Sequence[str]) -> float:
    """Compression-ratio diversity: ``gzip size / raw size`` of the joined responses.

    Shaib et al. 2024, "Standardizing the Measurement of Text Diversity: A Tool and a
    Comparative Analysis of Scores" define the compression ratio ``CR = raw / compressed`` of
    the texts joined with single spaces (high CR = redundant = low diversity). We return its
    inverse, ``1 / CR``, so that higher = more diverse. Exactly::

        data = " ".join(responses).encode("utf-8")
        len(gzip.compress(data, compresslevel=9, mtime=0)) / len(data)

    The size includes gzip's fixed 18-byte framing (as the file size measured by Shaib et al.
    does), so very short texts exceed 1 (``"a"`` -> 21/1). Responses are not tokenised or
    lowercased. When the joined text has no non-whitespace character (all responses empty)
    the value is ``0.0``.
    """
    check_responses(responses)
    joined = " ".join(responses)
    if not joined.strip():
        return 0.0
    data = joined.encode("utf-8")
    # mtime=0 makes the header, hence the size, deterministic.
    return len(gzip.compress(data, compresslevel=9, mtime=0)) / len(data)


def lexical_diversity(responses: Sequence[str]) -> dict[str, float]:
    """All lexical metrics of the registry, keyed by their registry names."""
    return {
        "distinct_1": distinct_1(responses),
        "distinct_2": distinct_2(responses),
        "distinct_3": distinct_3(responses),
        "self_bleu": self_bleu(responses),
        "self_rouge_l": self_rouge_l(responses),
        "compression_ratio": compression_ratio(responses),
    }
