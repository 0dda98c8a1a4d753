"""Grammar matchers that follow the text each model sees, and the masks they put on its logits.

A constrained call has, per sample, one llguidance matcher per model (one for both when they
share a tokenizer). A matcher is brought to its model's view of the sample lazily, when that
model's distribution is read: it rolls back to the longest common prefix with what it had
consumed and consumes the rest, the way the KV caches of a cross-family pair follow the
committed text. The mask then applies to every distribution the step reads, the routers'
inputs and the drawn tokens alike.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch

from ..constraints import Constraint
from .pair import ALIGNED, Pair, PairMember
from .samples import SampleRecord

_TOKENIZERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def ll_tokenizer(member: PairMember) -> Any:
    """llguidance's view of a model's vocabulary (built once per tokenizer: it reads every
    token's bytes)."""
    import llguidance.hf

    cached = _TOKENIZERS.get(member.tokenizer)
    if cached is None:
        cached = llguidance.hf.from_tokenizer(
            member.tokenizer, n_vocab=member.vocab_size, eos_token=sorted(member.eos_ids)
        )
        _TOKENIZERS[member.tokenizer] = cached
    return cached


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    common = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        common += 1
    return common


class SampleMatchers:
    """One request's matchers, per sample and model."""

    def __init__(self, constraint: Constraint, pair: Pair, samples: Sequence[SampleRecord]):
        from llguidance import LLExecutor, LLMatcher

        grammar = constraint.grammar()
        self.pair = pair
        self.shared = pair.shares_tokenizer
        self.executor = LLExecutor()
        sources = (ALIGNED,) if self.shared else tuple(m.source for m in pair.members)
        self.tokenizers = {s: ll_tokenizer(pair.members[s]) for s in sources}
        self.matchers = {
            (id(sample), s): LLMatcher(self.tokenizers[s], grammar)
            for sample in samples
            for s in sources
        }
        self.consumed: dict[tuple[int, int], list[int]] = {key: [] for key in self.matchers}

    def _key(self, sample: SampleRecord, source: int) -> tuple[int, int]:
        return id(sample), ALIGNED if self.shared else source

    def _follow(self, key: tuple[int, int], view: Sequence[int]) -> Any:
        """Bring the matcher to ``view``: roll back to the common prefix, consume the rest."""
        matcher, consumed = self.matchers[key], self.consumed[key]
        common = _common_prefix(consumed, view)
        if common < len(consumed):
            matcher.rollback(len(consumed) - common)
            del consumed[common:]
        if common < len(view):
            rest = list(view[common:])
            matcher.consume_tokens(rest)
            consumed.extend(rest)
        return matcher

    def apply(
        self,
        source: int,
        logits: torch.Tensor,
        samples: Sequence[SampleRecord],
        views: Sequence[Sequence[int]],
    ) -> torch.Tensor:
        """``logits`` (``[len(samples), width]``) with the tokens each sample's grammar does
        not allow next set to -inf. A sample whose grammar allows nothing (it has failed)
        may only end."""
        import llguidance.torch as llt

        member = self.pair.members[source]
        matchers = [
            (self._follow(self._key(sample, source), view), row)
            for row, (sample, view) in enumerate(zip(samples, views, strict=True))
        ]
        bitmask = llt.allocate_token_bitmask(len(samples), member.vocab_size)
        llt.fill_next_token_bitmask_par(self.executor, matchers, bitmask)
        masked = logits.clone()
        llt.apply_token_bitmask_inplace(masked[:, : member.vocab_size], bitmask.to(logits.device))
        stuck = torch.isinf(masked).all(dim=-1)
        if bool(stuck.any()):
            eos = torch.tensor(sorted(member.eos_ids), device=logits.device)
            masked[stuck.nonzero().flatten()[:, None], eos] = logits[stuck][:, eos]
        return masked
