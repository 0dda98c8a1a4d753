"""Token log-probs (``logprobs=True``): read from the scores each token was drawn from.

A step keeps, for the rows of calls that asked, the scores their tokens were drawn from (the
writer's, tempered and truncated, with continuation tokens masked at a hand-over); here they
become one :class:`~baco_integrations.outputs.TokenLogProb` per row, in the writer's own
tokens. No model runs for them (docs/logprobs.md).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from transformers import PreTrainedTokenizerBase
from transformers.convert_slow_tokenizer import bytes_to_unicode

from ..outputs import LOGPROB_FLOOR, TokenLogProb, TopLogProb
from .pair import ALIGNED, BASE, SOURCE_NAMES, Pair

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
    # Log-probs as score - logsumexp, read only where needed: no [rows, vocab] output.
    scores = drawn_from[index].float()
    normaliser = torch.logsumexp(scores, dim=-1, keepdim=True)
    chosen = torch.tensor([tokens[r] for r in rows], device=drawn_from.device)
    drawn = (scores.gather(1, chosen[:, None]) - normaliser)[:, 0].tolist()
    widest = max(top_k)
    top_values: list[list[float]] = [[] for _ in rows]
    top_ids: list[list[int]] = [[] for _ in rows]
    if widest:
        top = scores.topk(widest, dim=-1)
        top_values, top_ids = (top.values - normaliser).tolist(), top.indices.tolist()
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


@dataclass(frozen=True)
class Scored:
    """A response as one model sees it (its token ids) and its log-prob of each token
    (temperature 1, nothing truncated)."""

    ids: list[int]
    logprobs: list[float]

    @property
    def mean(self) -> float | None:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else None


def _char_starts(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[int]:
    """Where each id's text starts in the text the ids spell."""
    return [len(tokenizer.decode(ids[:i], skip_special_tokens=True)) for i in range(len(ids))]


def _summed_by_entry(
    entries: Sequence[TokenLogProb],
    starts: Sequence[int],
    model: Scored,
    tokenizer: PreTrainedTokenizerBase,
    name: str,
) -> list[float | None]:
    """A model's token log-probs summed per entry: the model's own entries are its tokens,
    in order (one each); any other token goes to the entry its text starts in."""
    column: list[float | None] = [0.0] * len(entries)
    own = [i for i, e in enumerate(entries) if e.source == name]
    next_own = 0
    for at, token, value in zip(
        _char_starts(tokenizer, model.ids), model.ids, model.logprobs, strict=True
    ):
        mine = own[next_own] if next_own < len(own) else None
        if mine is not None and entries[mine].token_id == token and at >= starts[mine]:
            index, next_own = mine, next_own + 1
        else:
            index = max(bisect.bisect_right(starts, at) - 1, 0)
        column[index] = (column[index] or 0.0) + value
    return column


def with_model_logprobs(
    entries: Sequence[TokenLogProb],
    starts: Sequence[int] | None,
    scored: Sequence[Scored | None],
    tokenizers: Sequence[PreTrainedTokenizerBase],
) -> list[TokenLogProb]:
    """``entries`` with each model's log-prob of their text (``aligned_logprob``,
    ``base_logprob``). With one tokenizer (``starts`` None) entry ``i`` is token ``i`` of
    both views; across families a model's tokens are summed into the entry their text starts
    in: a base-written word's aligned log-prob is the sum over the aligned tokens of that
    word (docs/logprobs.md)."""
    values: list[list[float | None]] = []
    for source, (model, tokenizer) in enumerate(zip(scored, tokenizers, strict=True)):
        column: list[float | None] = [None] * len(entries)
        if model is not None and starts is None:
            column[: len(model.logprobs)] = model.logprobs[: len(entries)]
        elif model is not None and entries:
            assert starts is not None
            column = _summed_by_entry(entries, starts, model, tokenizer, SOURCE_NAMES[source])
        values.append(column)
    return [
        dataclasses.replace(entry, aligned_logprob=aligned, base_logprob=base)
        for entry, aligned, base in zip(entries, values[ALIGNED], values[BASE], strict=True)
    ]
