"""Incremental detokenization: text deltas that never split a multi-byte character."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Decode a growing token sequence into text, one delta per token.

    Decodes a short window of recent tokens rather than the whole sequence (the prefix/read
    offset scheme of text-generation-inference), so each step costs O(1) in the sequence
    length. A delta that would end in an incomplete UTF-8 character is held back until the
    character is complete.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.token_ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def seed(self, context: list[int]) -> None:
        """Continue after ``context``, whose text is already committed: the next delta is the
        text that follows it (spacing rules that look back see the context)."""
        self.token_ids = list(context)
        self._prefix_offset = 0
        self._read_offset = len(self.token_ids)

    def decode(self, ids: list[int]) -> str:
        """The whole text of ``ids`` at once (for callers that need no deltas)."""
        return self._decode(ids)

    def push(self, token_id: int) -> str:
        """Append ``token_id`` and return the newly completed text (possibly empty)."""
        self.token_ids.append(token_id)
        prefix_text = self._decode(self.token_ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self.token_ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(_REPLACEMENT):
            delta = new_text[len(prefix_text) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.token_ids)
            return delta
        return ""

    def flush(self) -> str:
        """Text still held back at the end (an incomplete character is emitted as is)."""
        prefix_text = self._decode(self.token_ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self.token_ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self.token_ids)
        return new_text[len(prefix_text) :]
