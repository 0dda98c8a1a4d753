"""Grammar matchers that follow the text each model sees, and the masks they put on its logits.

A constrained call has, per sample, one llguidance matcher per model (one for both when they
share a tokenizer). A matcher is brought to its model's view of the sample lazily, when that
model's distribution is read: it rolls back to the longest common prefix with what it had
consumed and consumes the rest, the way the KV caches of a cross-family pair follow the
committed text. The mask then applies to every distribution the step reads, the routers'
inputs and the drawn tokens alike.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import torch

from ..constraints import Constraint
from .pair import ALIGNED, Pair, PairMember
from .samples import SampleRecord
from .views import common_prefix

#: Per tokenizer, llguidance's view of it, or why llguidance cannot read it (the error is
#: kept too: each constrained call on such a pair fails at once, without a second attempt).
_TOKENIZERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

#: The tokenizers llguidance reads (``llguidance.hf.from_tokenizer``: the decoder type of a
#: fast tokenizer's ``tokenizer.json``).
READABLE_TOKENIZERS = (
    "a fast Hugging Face tokenizer whose decoder is ByteLevel (GPT-2, Llama 3, Qwen, SmolLM) "
    "or holds a ByteFallback (SentencePiece with byte fallback: Llama 2, Mistral, Gemma)"
)


class _Unreadable(str):
    """Why llguidance could not read a tokenizer (llguidance's own message)."""


def _read(member: PairMember) -> Any:
    """llguidance's reading of the member's tokenizer, or why it failed (cached either way)."""
    import llguidance.hf

    cached = _TOKENIZERS.get(member.tokenizer)
    if cached is None:
        try:
            cached = llguidance.hf.from_tokenizer(
                member.tokenizer, n_vocab=member.vocab_size, eos_token=sorted(member.eos_ids)
            )
        except Exception as exc:  # llguidance raises ValueError, or its Rust side's errors
            cached = _Unreadable(str(exc) or type(exc).__name__)
        _TOKENIZERS[member.tokenizer] = cached
    return cached


def unreadable_reason(member: PairMember) -> str | None:
    """Why llguidance cannot read the member's tokenizer (None: it can)."""
    cached = _read(member)
    return str(cached) if isinstance(cached, _Unreadable) else None


def ll_tokenizer(member: PairMember, shared: bool = False) -> Any:
    """llguidance's view of a model's vocabulary (built once per tokenizer: it reads every
    token's bytes).

    Raises ``ValueError`` naming the constraint setting, the model and what to do when
    llguidance cannot read the tokenizer (a Metaspace decoder without byte fallback, as T5's;
    a slow tokenizer); the failure is cached like a success. ``shared``: the pair's two
    models share this vocabulary (the message says so)."""
    cached = _read(member)
    if isinstance(cached, _Unreadable):
        model = member.runner.facts.name or "unnamed"
        whose = "the tokenizer both models share, the" if shared else "the"
        raise ValueError(
            "the constraint setting (constraint=, structured output) is not supported on this "
            f"pair: llguidance, the grammar engine, cannot read {whose} {member.name} model's "
            f"tokenizer ({model}; {type(member.tokenizer).__name__}): {cached}. It reads "
            f"{READABLE_TOKENIZERS}. "
            "Use a pair whose tokenizers llguidance reads, or call without a constraint "
            "(no constraint= or with_structured_output; ask for JSON in the prompt and parse "
            "the reply)"
        )
    return cached


class SampleMatchers:
    """One request's matchers, per sample and model."""

    def __init__(self, constraint: Constraint, pair: Pair, samples: Sequence[SampleRecord]):
        from llguidance import LLExecutor, LLMatcher

        grammar = constraint.grammar()
        self.pair = pair
        self.shared = pair.shares_tokenizer
        self.executor = LLExecutor()
        sources = (ALIGNED,) if self.shared else tuple(m.source for m in pair.members)
        self.tokenizers = {s: ll_tokenizer(pair.members[s], self.shared) for s in sources}
        self.matchers = {
            (id(sample), s): LLMatcher(self.tokenizers[s], grammar)
            for sample in samples
            for s in sources
        }
        self.consumed: dict[tuple[int, int], list[int]] = {key: [] for key in self.matchers}
        #: Per key, how many matcher tokens each consumed view token became (see _spelled).
        self.spent: dict[tuple[int, int], list[int]] = {key: [] for key in self.matchers}
        self._spellings: dict[tuple[int, int], list[int]] = {}

    def _key(self, sample: SampleRecord, source: int) -> tuple[int, int]:
        return id(sample), ALIGNED if self.shared else source

    def _spelled(self, source: int, token: int) -> list[int]:
        """The matcher tokens for one of the model's tokens. llguidance reads every added
        token as special, but some are text (Gemma's ``<h2>``): those are spelled out."""
        key = (source, token)
        if key not in self._spellings:
            tokenizer = self.tokenizers[source]
            member = self.pair.members[source]
            if tokenizer.is_special_token(token) and token not in member.eos_ids:
                # One character at a time, so that the text cannot become the same added
                # token again.
                text = member.tokenizer.decode([token], skip_special_tokens=False)
                self._spellings[key] = [t for c in text for t in tokenizer.tokenize_str(c)]
            else:
                self._spellings[key] = [token]
        return self._spellings[key]

    def _follow(self, key: tuple[int, int], view: Sequence[int]) -> Any:
        """Bring the matcher to ``view``: roll back to the common prefix, consume the rest."""
        matcher, consumed, spent = self.matchers[key], self.consumed[key], self.spent[key]
        common = common_prefix(consumed, view)
        if common < len(consumed):
            matcher.rollback(sum(spent[common:]))
            del consumed[common:], spent[common:]
        for token in view[common:]:
            spelled = self._spelled(key[1], token)
            matcher.consume_tokens(spelled)
            consumed.append(token)
            spent.append(len(spelled))
        if matcher.is_error():
            warnings.warn(f"a grammar matcher failed: {matcher.get_error()}", stacklevel=2)
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
