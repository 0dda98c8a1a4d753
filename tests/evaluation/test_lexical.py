"""Lexical diversity metrics against values computed by hand (the arithmetic is in comments)."""

from __future__ import annotations

import math

import pytest

from baco_integrations.evaluation import (
    compression_ratio,
    distinct_1,
    distinct_2,
    distinct_3,
    distinct_n,
    lexical_diversity,
    self_bleu,
    self_rouge_l,
    tokenize,
)

ALL_METRICS = [distinct_1, distinct_2, distinct_3, self_bleu, self_rouge_l, compression_ratio]


def test_tokenize_lowercases_and_splits_punctuation() -> None:
    assert tokenize("Hello, World!") == ["hello", ",", "world", "!"]
    assert tokenize("Don't  stop\n") == ["don", "'", "t", "stop"]
    assert tokenize("Café naïve") == ["café", "naïve"]
    assert tokenize("") == []


def test_distinct_n_pools_ngrams_over_responses() -> None:
    # tokens: [the, cat, sat, .] and [the, cat, ran, !]
    responses = ["The cat sat.", "the cat ran!"]
    # unigrams: 8 in total; unique {the, cat, sat, ., ran, !} = 6 -> 6/8
    assert distinct_1(responses) == pytest.approx(6 / 8)
    # bigrams: (the cat) (cat sat) (sat .) (the cat) (cat ran) (ran !) = 6; unique 5 -> 5/6
    assert distinct_2(responses) == pytest.approx(5 / 6)
    # trigrams: (the cat sat) (cat sat .) (the cat ran) (cat ran !) = 4, all unique -> 1
    assert distinct_3(responses) == pytest.approx(1.0)


def test_distinct_n_does_not_span_responses() -> None:
    # Each response is one token: no bigram exists -> 0.0. Spanning the boundary would
    # have produced the bigram (a a) and 1.0.
    assert distinct_2(["a", "a"]) == 0.0
    # (a b) only: 1/1
    assert distinct_2(["a b", "c"]) == 1.0


def test_distinct_n_edge_cases() -> None:
    # one response: within-response ratio; tokens [a, a, b] -> 2 unique / 3
    assert distinct_1(["a a b"]) == pytest.approx(2 / 3)
    # identical responses: [x y] twice -> 2 unique / 4 unigrams
    assert distinct_1(["x y", "x y"]) == pytest.approx(0.5)
    # no n-grams at all -> 0.0 rather than 0/0
    assert distinct_1(["", "  "]) == 0.0
    assert distinct_3(["a b", "c"]) == 0.0
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


def test_self_bleu_two_responses_with_smoothing() -> None:
    # hyp [a b c], ref [a b d]; effective order 3 (3 tokens), weights 1/3.
    # p1 = 2/3, p2 = 1/2 (ab), p3 = 0/1 -> method1 epsilon: 0.1/1; BP = 1 (equal lengths).
    # BLEU = (2/3 * 1/2 * 0.1)^(1/3) = (1/30)^(1/3); the other direction is symmetric.
    expected = 1 - (1 / 30) ** (1 / 3)
    assert self_bleu(["a b c", "a b d"]) == pytest.approx(expected)
    # max_order=2: (2/3 * 1/2)^(1/2) = (1/3)^(1/2)
    assert self_bleu(["a b c", "a b d"], max_order=2) == pytest.approx(1 - (1 / 3) ** 0.5)


def test_self_bleu_full_order_four() -> None:
    # hyp [the cat sat on the mat] vs ref [the cat sat on a mat] (6 tokens each, BP = 1)
    # p1: clipped the 1 + cat + sat + on + mat = 5/6
    # p2: (the cat)(cat sat)(sat on) of 5 bigrams = 3/5
    # p3: (the cat sat)(cat sat on) of 4 = 2/4
    # p4: (the cat sat on) of 3 = 1/3
    # BLEU = (5/6 * 3/5 * 2/4 * 1/3)^(1/4) = (1/12)^(1/4); the reverse direction is the same.
    responses = ["The cat sat on the mat", "the cat sat on a mat"]
    assert self_bleu(responses) == pytest.approx(1 - (1 / 12) ** 0.25)


def test_self_bleu_brevity_penalty() -> None:
    # hyp [a] vs ref [a b]: p1 = 1, order 1, BP = exp(1 - 2/1) = e^-1
    # hyp [a b] vs ref [a]: p1 = 1/2, p2 = 0/1 -> 0.1; BP = 1 (hyp longer)
    #   BLEU = (1/2 * 0.1)^(1/2)
    expected = 1 - (math.exp(-1) + math.sqrt(0.05)) / 2
    assert self_bleu(["a", "a b"]) == pytest.approx(expected)


def test_self_bleu_multi_reference() -> None:
    # hyp [a b] refs {[a b], [c]}: exact match -> 1 (twice); hyp [c] refs {[a b],[a b]}: no
    # unigram match -> 0. Mean 2/3 -> diversity 1/3.
    assert self_bleu(["a b", "a b", "c"]) == pytest.approx(1 / 3)


def test_self_bleu_edge_cases() -> None:
    assert self_bleu(["only one response here"]) == 0.0
    # identical responses, even shorter than 4 tokens (effective order) -> 0
    assert self_bleu(["hi", "hi", "hi"]) == pytest.approx(0.0)
    assert self_bleu(["the same words", "The same words"]) == pytest.approx(0.0)
    # all empty: identical -> 0.0, not "maximally diverse"
    assert self_bleu(["", "", ""]) == 0.0
    # empty vs non-empty: both directions score 0 -> 1.0
    assert self_bleu(["", "a"]) == 1.0
    # two empty and one "a": hyps "" score 1 (an empty ref exists), hyp "a" scores 0 -> 1/3
    assert self_bleu(["", "", "a"]) == pytest.approx(1 / 3)


def test_self_rouge_l_pairs() -> None:
    # LCS([a b c d], [a c d e]) = [a c d] = 3 -> P = R = 3/4, F1 = 3/4
    # pairs with [x y]: LCS 0 -> F1 0.  Mean over 3 pairs = 1/4 -> diversity 3/4
    assert self_rouge_l(["a b c d", "a c d e", "x y"]) == pytest.approx(0.75)
    # LCS([a b], [a b c d]) = 2: P = 1, R = 1/2, F1 = 2/3 -> 1/3
    assert self_rouge_l(["a b", "a b c d"]) == pytest.approx(1 / 3)
    # our tokenizer (not rouge_score's ASCII-only one): [café olé] vs [café]: F1 = 2/3
    assert self_rouge_l(["café olé", "Café"]) == pytest.approx(1 / 3)


def test_self_rouge_l_edge_cases() -> None:
    assert self_rouge_l(["one response"]) == 0.0
    assert self_rouge_l(["The Cat.", "the cat ."]) == pytest.approx(0.0)
    assert self_rouge_l(["", ""]) == 0.0
    assert self_rouge_l(["", "a"]) == 1.0


def test_compression_ratio_hand_computed() -> None:
    # gzip = 10-byte header + deflate + 8-byte trailer (CRC32, size).
    # "a": one fixed-Huffman block = 3 header bits + 8-bit literal + 7-bit end = 18 bits
    #   -> 3 bytes; 21 / 1 byte
    assert compression_ratio(["a"]) == pytest.approx(21.0)
    # "a a" (joined with one space, 3 bytes; too short for an LZ77 match):
    #   3 + 3 * 8 + 7 = 34 bits -> 5 bytes; 23 / 3
    assert compression_ratio(["a", "a"]) == pytest.approx(23 / 3)
    # "é" is 2 UTF-8 bytes (0xC3 0xA9, literals >= 144 take 9 bits): 3 + 9 + 9 + 7 = 28 bits
    #   -> 4 bytes; 22 / 2
    assert compression_ratio(["é"]) == pytest.approx(11.0)


def test_compression_ratio_orders_redundancy() -> None:
    same = ["The quick brown fox jumps over the lazy dog near the river bank."] * 10
    varied = [
        "The quick brown fox jumps over the lazy dog near the river bank.",
        "A violinist played Bach partitas in the empty subway station at dawn.",
        "Quantum error correction protects fragile qubits from decoherence.",
        "My grandmother's soup recipe needs saffron, leeks and patience.",
        "Glaciers carve U-shaped valleys over thousands of years.",
        "The committee postponed the vote until the audit was complete.",
        "Seven orange kayaks drifted past the lighthouse before noon.",
        "Compilers translate high-level code into machine instructions.",
        "She knitted a scarf long enough to wrap around the statue twice.",
        "Thunder rolled across the desert but no rain ever arrived.",
    ]
    assert compression_ratio(varied) > compression_ratio(same)


def test_compression_ratio_empty() -> None:
    assert compression_ratio([""]) == 0.0
    assert compression_ratio(["", " \n"]) == 0.0


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_no_responses_or_bare_string_rejected(metric) -> None:
    with pytest.raises(ValueError):
        metric([])
    with pytest.raises(TypeError):
        metric("a string is not a list of responses")


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_edge_inputs_give_finite_values(metric) -> None:
    for responses in (["x"], [""], ["", ""], ["same", "same"], ["a b", "", "c d e f g"]):
        value = metric(responses)
        assert isinstance(value, float)
        assert math.isfinite(value)


def test_lexical_diversity_bundle() -> None:
    responses = ["a b c", "a b d"]
    bundle = lexical_diversity(responses)
    assert bundle == {
        "distinct_1": distinct_1(responses),
        "distinct_2": distinct_2(responses),
        "distinct_3": distinct_3(responses),
        "self_bleu": self_bleu(responses),
        "self_rouge_l": self_rouge_l(responses),
        "compression_ratio": compression_ratio(responses),
    }
    # unigrams a b c a b d: 4 unique / 6
    assert bundle["distinct_1"] == pytest.approx(4 / 6)
