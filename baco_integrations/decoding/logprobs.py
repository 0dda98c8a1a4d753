"""Token log-probs (``logprobs=True``): read from the scores each token was drawn from.

A step keeps, for the rows of calls that asked, the scores their tokens were drawn from (the
writer's, tempered and truncated, with continuation tokens masked at a hand-over); here they
become one :class:`~baco_integrations.outputs.TokenLogProb` per row, in the writer's own
tokens. No model runs for them (docs/logprobs.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

import torch
from transformers import PreTrainedTokenizerBase
from transformers.convert_slow_tokenizer import bytes_to_unicode

from ..outputs import LOGPROB_FLOOR, TokenLogProb, TopLogProb
from .pair import SOURCE_NAMES, Pair

#: A token's text and its own bytes.
Spelling = tuple[str, tuple[int, ...]]
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_BYTE_LEVEL = {char: byte for byte, char in bytes_to_unicode().items()}


def _decoder_types(tokenizer: PreTrainedTokenizerBase) -> set[str]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return set()
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    return {d.get("type", "") for d in [decoder, *decoder.get("decoders", [])]}


@lru_cache(maxsize=16)
def token_reader(
    tokenizer: PreTrainedTokenizerBase,
) -> Callable[[int], tuple[str, tuple[int, ...]]]:
    """How to spell a token: its text as the output writes it (special tokens are not
    written: empty) and its own bytes (OpenAI's ``bytes``: a token may hold part of a
    character, which its text shows as U+FFFD). Byte-level BPE maps each character back to
    its byte, SentencePiece spells bytes as ``<0xHH>`` and spaces as U+2581; other tokenizers
    fall back to the text's UTF-8. Memoised: the same tokens come back at every step."""
    special = set(tokenizer.all_special_ids)
    kinds = _decoder_types(tokenizer)

    def own_bytes(token_id: int, text: str) -> bytes:
        if token_id in special:
            return b""
        raw = str(tokenizer.convert_ids_to_tokens(token_id))
        if "ByteLevel" in kinds and all(c in _BYTE_LEVEL for c in raw):
            return bytes(_BYTE_LEVEL[c] for c in raw)
        if "ByteFallback" in kinds and (match := _BYTE_FALLBACK.fullmatch(raw)):
            return bytes([int(match.group(1), 16)])
        if "Replace" in kinds:
            return raw.replace("\u2581", " ").encode("utf-8")
        return text.encode("utf-8")

    @lru_cache(maxsize=1 << 16)
    def read(token_id: int) -> Spelling:
        text = str(tokenizer.decode([token_id], skip_special_tokens=True))
        return text, tuple(own_bytes(token_id, text))

    return read


def _floored(value: float) -> float:
    return max(value, LOGPROB_FLOOR)


def token_logprobs(
    pair: Pair,
    drawn_from: torch.Tensor,
    rows: Sequence[int],
    tokens: Sequence[int],
    sources: Sequence[int],
    top_k: Sequence[int],
) -> dict[int, TokenLogProb]:
    """Each of ``rows``' entry: the log-prob of ``tokens[row]`` under its row of
    ``drawn_from`` (``[batch rows, width]`` scores), with that row's ``top_k[i]`` most likely
    alternatives. One device read for all rows."""
    if not rows:
        return {}
    index = torch.tensor(list(rows), device=drawn_from.device)
    logprobs = torch.log_softmax(drawn_from[index].float(), dim=-1)
    chosen = torch.tensor([tokens[r] for r in rows], device=drawn_from.device)
    drawn = logprobs.gather(1, chosen[:, None])[:, 0].tolist()
    widest = max(top_k)
    top_values: list[list[float]] = [[] for _ in rows]
    top_ids: list[list[int]] = [[] for _ in rows]
    if widest:
        top = logprobs.topk(widest, dim=-1)
        top_values, top_ids = top.values.tolist(), top.indices.tolist()
    entries: dict[int, TokenLogProb] = {}
    for i, row in enumerate(rows):
        source = sources[row]
        spell = token_reader(pair.members[source].tokenizer)
        alternatives = tuple(
            TopLogProb(token=text, token_id=token_id, logprob=value, bytes=spelled)
            for token_id, value in zip(
                top_ids[i][: top_k[i]], top_values[i][: top_k[i]], strict=True
            )
            if value > float("-inf")  # fewer than k tokens survived the truncation
            for text, spelled in [spell(token_id)]
        )
        text, spelled = spell(tokens[row])
        entries[row] = TokenLogProb(
            token=text,
            token_id=tokens[row],
            logprob=_floored(drawn[i]),
            source=SOURCE_NAMES[source],
            bytes=spelled,
            top_logprobs=alternatives,
        )
    return entries
