"""The decoding loop: one step written once for every pair.

* :mod:`.pair` — the two models and the facts about each (vocabulary, masks, EOS ids, pad id).
* :mod:`.request` — a validated call: settings, prompt ids, samples, stats.
* :mod:`.samples` — what a sample accumulates (tokens, sources, text), per kind of pair.
* :mod:`.token_state` / :mod:`.text_state` — one model's KV cache over the rows, for a shared
  tokenizer (tensorised) or across tokenizers (re-tokenized text, longest-common-prefix reuse).
* :mod:`.bridge` — how the two models share a row's text (tokens or text): the one thing that
  differs between the kinds of pair.
* :mod:`.step` — one decoding step: propose, find word boundaries, route, hand over, draw.
* :mod:`.batch` — the running batch: rows of the live requests, commit, finish, leave.
* :mod:`.randomness` — per-row random numbers (seeded requests are reproducible per row).
* :mod:`.chunks` — stream chunking.
"""

from .batch import RunningBatch
from .chunks import new_chunks
from .pair import ALIGNED, BASE, NO_SOURCE, SOURCE_NAMES, Pair, PairMember
from .request import DecodeStats, DecodingCancelled, Request
from .samples import SampleRecord, TextSample, TokenSample, make_samples
from .text_state import TextModelState, encode_text
from .token_state import CACHE_IMPLEMENTATIONS, CacheImplementation, TokenModelState

__all__ = [
    "ALIGNED",
    "BASE",
    "CACHE_IMPLEMENTATIONS",
    "NO_SOURCE",
    "SOURCE_NAMES",
    "CacheImplementation",
    "DecodeStats",
    "DecodingCancelled",
    "Pair",
    "PairMember",
    "Request",
    "RunningBatch",
    "SampleRecord",
    "TextModelState",
    "TextSample",
    "TokenModelState",
    "TokenSample",
    "encode_text",
    "make_samples",
    "new_chunks",
]
