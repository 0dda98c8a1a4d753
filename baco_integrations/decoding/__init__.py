"""The decoding loop: one step written once for every pair.

Nothing here runs a model: each model is a runner (:mod:`baco_integrations.runners`) that the
loop asks for next-token distributions.

* :mod:`.pair` — the two models (their runners and tokenizers) and the facts about each
  (vocabulary, masks, EOS ids).
* :mod:`.request` — a validated call: settings, prompt ids, samples, stats.
* :mod:`.samples` — what a sample accumulates (tokens, sources, text), per kind of pair.
* :mod:`.views` — what each model has seen of each row, kept in step with its runner
  (longest-common-prefix sync); :mod:`.encoding` — text to a model's ids.
* :mod:`.bridge` — how the two models share a row's text (tokens or text): the one thing that
  differs between the kinds of pair.
* :mod:`.step` — one decoding step in phases: propose, find word boundaries, route, hand over,
  each phase fetching the distributions it needs from the runners first, then drawing.
* :mod:`.batch` — the running batch: rows of the live requests, commit, finish, leave.
* :mod:`.randomness` — per-row random numbers (seeded requests are reproducible per row).
* :mod:`.chunks` — stream chunking.
"""

from .batch import RunningBatch
from .chunks import new_chunks
from .encoding import encode_text
from .pair import ALIGNED, BASE, NO_SOURCE, SOURCE_NAMES, Pair, PairMember
from .request import DecodeStats, DecodingCancelled, Request
from .samples import SampleRecord, TextSample, TokenSample, make_samples
from .views import ModelView, common_prefix

__all__ = [
    "ALIGNED",
    "BASE",
    "NO_SOURCE",
    "SOURCE_NAMES",
    "DecodeStats",
    "DecodingCancelled",
    "Pair",
    "PairMember",
    "Request",
    "RunningBatch",
    "SampleRecord",
    "ModelView",
    "TextSample",
    "TokenSample",
    "common_prefix",
    "encode_text",
    "make_samples",
    "new_chunks",
]
