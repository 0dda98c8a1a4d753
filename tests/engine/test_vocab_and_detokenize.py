"""Word-boundary masks and incremental detokenization."""

from __future__ import annotations

import pytest

from baco_integrations import BacoEngine
from baco_integrations.detokenize import IncrementalDetokenizer
from baco_integrations.vocab import classify_token


@pytest.mark.parametrize(
    ("raw", "text", "special", "expected"),
    [
        ("Ġthe", " the", False, (True, False, True)),
        ("the", "the", False, (False, False, True)),
        ("ing", "ing", False, (False, False, False)),
        ("▁Hello", "Hello", False, (True, False, False)),
        ("Ċ", "\n", False, (True, True, False)),
        (",", ",", False, (False, True, False)),
        ("'s", "'s", False, (False, True, False)),
        ("Ġ!", " !", False, (True, True, False)),
        ("<0x0A>", "\n", False, (True, True, False)),
        ("<0xE2>", "\ufffd", False, (False, False, False)),
        ("<|im_end|>", "<|im_end|>", True, (False, True, False)),
    ],
)
def test_classify_token(
    raw: str, text: str, special: bool, expected: tuple[bool, bool, bool]
) -> None:
    assert classify_token(raw, text, special=special) == expected


def test_engine_masks_follow_the_tokenizer(engine: BacoEngine) -> None:
    tok = engine.aligned_tokenizer
    masks = engine.pair.aligned.masks
    (the,) = tok(" the", add_special_tokens=False)["input_ids"]
    assert masks.word_start[the] and masks.function_word[the] and not masks.continuation[the]
    newline = tok("\n", add_special_tokens=False)["input_ids"][0]
    assert masks.punctuation[newline]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert masks.special[im_end] and not masks.continuation[im_end]
    # a token without a space marker that spells letters continues a word
    continuing = [i for t, i in tok.get_vocab().items() if t.isascii() and t.isalpha()]
    assert continuing and all(masks.continuation[i] for i in continuing)
    assert masks.vocab_size == engine.pair.aligned.vocab_size


def test_incremental_detokenizer_never_splits_characters(engine: BacoEngine) -> None:
    tok = engine.aligned_tokenizer
    text = "café 🎉 naïve — 東京\nthe end"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # multi-byte characters span several tokens
    detok = IncrementalDetokenizer(tok)
    deltas = [detok.push(i) for i in ids]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) + detok.flush() == text


def test_incremental_detokenizer_skips_special_tokens(engine: BacoEngine) -> None:
    tok = engine.aligned_tokenizer
    ids = tok("hello", add_special_tokens=False)["input_ids"] + [
        tok.convert_tokens_to_ids("<|im_end|>")
    ]
    detok = IncrementalDetokenizer(tok)
    assert "".join(detok.push(i) for i in ids) + detok.flush() == "hello"


def test_bytes_of_an_unfinished_character_continue_it(engine) -> None:
    """A byte-level piece inside a multi-byte character never starts a word, so a character
    is never split between the two models."""
    tokenizer, masks = engine.aligned_tokenizer, engine.pair.aligned.masks
    ids = tokenizer(" 😀🎉", add_special_tokens=False)["input_ids"]
    pieces = [tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(i)]) for i in ids]
    partial = [i for i, text in zip(ids, pieces, strict=True) if text == "\ufffd"]
    assert partial, pieces  # the emoji is spelled with several byte pieces
    assert all(bool(masks.continuation[i]) for i in partial)
    assert not any(bool(masks.punctuation[i]) for i in partial)
