"""Text to a model's token ids, as the model would continue a prompt with it (cross-family
pairs re-tokenize the committed text with these)."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from ..detokenize import IncrementalDetokenizer


def _decode(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids that decode back to ``text``, as the model would continue a prompt with it.

    Tokenizers that prepend a dummy-prefix space (legacy SentencePiece) are handled by
    encoding after a newline anchor and dropping the anchor's tokens.
    """
    if not text:
        return []
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if _decode(tokenizer, ids) == text:
        return ids
    anchor = list(tokenizer("\n", add_special_tokens=False)["input_ids"])
    anchored = list(tokenizer("\n" + text, add_special_tokens=False)["input_ids"])
    if anchored[: len(anchor)] == anchor:
        tail = anchored[len(anchor) :]
        if _decode(tokenizer, tail) == text:
            return tail
    return ids  # best effort: this tokenizer cannot spell the text exactly


def encode_with_ends(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[int]]:
    """``encode_text`` plus, per token, where its text ends in ``text``."""
    ids = encode_text(tokenizer, text)
    detokenizer = IncrementalDetokenizer(tokenizer)
    ends, length = [], 0
    for token_id in ids:
        length += len(detokenizer.push(token_id))
        ends.append(min(length, len(text)))
    if ends:
        ends[-1] = len(text)
    return ids, ends
