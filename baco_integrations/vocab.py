"""Per-vocabulary boolean masks that the word-boundary rule and the content routers read.

They are computed once per tokenizer (a pass over the vocabulary in Python) and kept on the
decoding device, so the decoding loop only indexes them.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

# Markers that tokenizers put in front of a token that starts with a space or newline:
# byte-level BPE (GPT-2, Llama-3, Qwen) uses Ġ/Ċ/ĉ, SentencePiece (Llama-2, Gemma) uses ▁.
_SPACE_MARKERS = ("Ġ", "▁", "Ċ", "ĉ", " ", "\n", "\t", "\r")
_BYTE_FALLBACK_PREFIX = "<0x"

#: English function words (articles, pronouns, prepositions, conjunctions, auxiliaries,
#: determiners): the closed-class words that the FC router locks to the aligned model.
FUNCTION_WORDS: frozenset[str] = frozenset(
    """
    a an the this that these those my your his her its our their some any each every no
    i you he she it we they me him us them myself yourself itself ourselves themselves
    who whom whose which what where when why how
    of in on at by for with about against between into through during before after above
    below to from up down out off over under again further then once as than until while
    and but or nor so yet if because although though unless whether both either neither
    not only also just very too
    is am are was were be been being have has had having do does did doing
    will would shall should can could may might must
    there here
    """.split()  # noqa: SIM905 - a word list reads better as text
)


@dataclass(frozen=True)
class VocabMasks:
    """Boolean masks over the vocabulary, shape ``[vocab_size]`` each.

    ``continuation`` marks tokens that continue the current word: no leading space marker,
    not punctuation/formatting, not special. Every other token may start a new word, so a
    switch of model may happen before it.
    """

    word_start: torch.Tensor
    punctuation: torch.Tensor
    function_word: torch.Tensor
    special: torch.Tensor
    continuation: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return int(self.word_start.shape[0])

    def to(self, device: torch.device | str) -> VocabMasks:
        return VocabMasks(
            word_start=self.word_start.to(device),
            punctuation=self.punctuation.to(device),
            function_word=self.function_word.to(device),
            special=self.special.to(device),
            continuation=self.continuation.to(device),
        )


def _is_punctuation_text(text: str) -> bool:
    """True for text made only of punctuation, symbols and white space (formatting)."""
    stripped = text.strip()
    if not stripped:
        return True  # pure white space / newlines are formatting
    return all(unicodedata.category(ch)[0] in "PS" for ch in stripped)


def classify_token(raw: str, text: str, *, special: bool) -> tuple[bool, bool, bool]:
    """Classify one token from its raw vocabulary string and its decoded text.

    Returns ``(word_start, punctuation, function_word)``.
    """
    if special:
        return False, True, False
    if raw.startswith(_BYTE_FALLBACK_PREFIX) and raw.endswith(">"):
        # A SentencePiece byte-fallback piece: part of a multi-byte character unless it is
        # an ASCII white-space or punctuation byte.
        try:
            char = chr(int(raw[3:-1], 16))
        except ValueError:
            char = ""
        is_ascii = len(char) == 1 and ord(char) < 128
        ws = is_ascii and char.isspace()
        punct = is_ascii and (ws or unicodedata.category(char)[0] in "PS")
        return ws, punct, False
    word_start = raw.startswith(_SPACE_MARKERS) or text[:1].isspace()
    if "\ufffd" in text and not text.replace("\ufffd", "").strip():
        # Bytes of an unfinished character (byte-level BPE): the pieces after the first must
        # stay with the model that began the character, so they are not punctuation.
        return word_start, False, False
    punctuation = _is_punctuation_text(text) or (
        # A token whose first visible character is punctuation ("'s", ".\n") cannot
        # continue a word spelled by the other model.
        bool(text.strip()) and unicodedata.category(text.strip()[0])[0] in "PS"
    )
    function_word = text.strip().lower() in FUNCTION_WORDS
    return word_start, punctuation, function_word


def build_vocab_masks(
    tokenizer: PreTrainedTokenizerBase, vocab_size: int, device: torch.device | str = "cpu"
) -> VocabMasks:
    """Compute :class:`VocabMasks` for ``tokenizer``, padded to ``vocab_size`` rows.

    Ids at or beyond ``len(tokenizer)`` (unused rows of a padded embedding matrix) count as
    special, so they never continue a word.
    """
    word_start = torch.zeros(vocab_size, dtype=torch.bool)
    punctuation = torch.zeros(vocab_size, dtype=torch.bool)
    function_word = torch.zeros(vocab_size, dtype=torch.bool)
    special = torch.ones(vocab_size, dtype=torch.bool)
    special_ids = set(tokenizer.all_special_ids)
    # added tokens flagged special (chat markers) are special too
    for token_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            special_ids.add(int(token_id))
    vocab = tokenizer.get_vocab()
    for raw, token_id in vocab.items():
        if token_id >= vocab_size:
            continue
        is_special = token_id in special_ids
        text = tokenizer.convert_tokens_to_string([raw])
        ws, punct, fw = classify_token(raw, text, special=is_special)
        word_start[token_id] = ws
        punctuation[token_id] = punct
        function_word[token_id] = fw
        special[token_id] = is_special
    continuation = ~(word_start | punctuation | special)
    return VocabMasks(word_start, punctuation, function_word, special, continuation).to(device)
