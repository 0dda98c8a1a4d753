"""How the two models share a row's text: the one thing that differs between a pair with a
shared tokenizer and a cross-family pair.

* :class:`TokenBridge`: one vocabulary, so committing a token pushes the same id to both
  models, and every row of a model catches up in one tensorised forward.
* :class:`TextBridge`: two vocabularies, so the writer appends its own tokens and the other
  model re-tokenizes the committed text when it is next needed, keeping its KV cache up to the
  longest common token prefix (transformers' assisted decoding across tokenizers re-encodes
  the same way).

Both give the step loop (:mod:`.step`) the same view: per source, next-token logits
``[rows, width]`` that are up to date for the rows asked for, and a way to commit the chosen
tokens to the samples and the caches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch

from ..detokenize import IncrementalDetokenizer
from .pair import BASE, SOURCE_IDS, Pair, PairMember
from .request import DecodeStats, Request
from .samples import SampleRecord, TextSample, TokenSample
from .text_state import TextModelState, encode_text
from .token_state import CacheImplementation, TokenModelState

#: Tokens of recent context a writer's detokenizer keeps after a switch (spacing rules of
#: SentencePiece-style decoders look back only a token or two).
_DETOKENIZER_CONTEXT = 6


class Bridge(ABC):
    """What the step loop needs from the two models, whichever kind of pair it decodes.

    ``states[source]`` is each model's KV cache over the batch's rows; joining, leaving,
    releasing and counting work are the same for both kinds of pair and live here.
    """

    def __init__(self, pair: Pair, states: tuple[Any, Any]) -> None:
        self.pair = pair
        self.states = states

    @abstractmethod
    def _new_state(self, member: PairMember) -> Any:
        """An empty state of this bridge's kind for ``member``, to prefill joining rows."""

    @abstractmethod
    def before_step(self, writers: Sequence[int]) -> None:
        """Bring rows up to date before a step reads any distribution."""

    @abstractmethod
    def logits(self, source: int, rows: Sequence[int]) -> torch.Tensor:
        """``[rows, width]`` next-token logits of ``source``, up to date for ``rows``."""

    @abstractmethod
    def view(self, source: int, row: int, sample: SampleRecord) -> Sequence[int]:
        """The row's response as ``source`` sees it (its own token ids)."""

    @abstractmethod
    def commit(
        self,
        rows: Sequence[SampleRecord],
        tokens: list[int],
        sources: list[int],
        writers: list[int],
    ) -> list[str | None]:
        """Commit each row's token to its sample; a row's text delta, or None for an
        end-of-sequence token (which is not written)."""

    @abstractmethod
    def after_step(self, tokens: torch.Tensor, lock_step: bool) -> None:
        """Hand the step's tokens (of the rows that go on) to the models."""

    def version(self, source: int) -> int:
        """Forwards run by ``source`` so far: a change means its logits changed."""
        return int(self.states[source].forward_passes)

    def join(self, requests: Sequence[Request]) -> None:
        """Prefill the requests' prompts, one forward per model, into the running rows'
        caches if there are any. Both prefills come first, so a failure there leaves the
        running rows as they were."""
        repeats = [r.n for r in requests for _ in r.prompts]
        capacity = max(r.max_steps for r in requests)

        def prompts(member: PairMember) -> list[list[int]]:
            return [ids for r in requests for ids in r.prompt_ids[member.source]]

        if self.states[0].cache is None:
            for state in self.states:
                state.prefill(prompts(state.member), repeats, capacity)
            return
        joining = [self._new_state(state.member) for state in self.states]
        for state in joining:
            state.prefill(prompts(state.member), repeats, capacity)
        for state, new in zip(self.states, joining, strict=True):
            state.merge(new, spare=capacity)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the rows ``keep`` (indices, in order)."""
        for state in self.states:
            state.select(keep)

    def release(self) -> None:
        """Free every cache now rather than when the states are collected."""
        for state in self.states:
            state.release()

    def counters(self) -> DecodeStats:
        """Work done so far by each model (forwards, tokens; re-tokenization across
        families)."""
        stats = DecodeStats()
        for source, state in zip(SOURCE_IDS, self.states, strict=True):
            name = "base" if source == BASE else "aligned"
            setattr(stats, f"{name}_forward_passes", state.forward_passes)
            setattr(stats, f"{name}_forward_tokens", state.forward_tokens)
            if isinstance(state, TextModelState):
                setattr(stats, f"{name}_synced_tokens", state.synced_tokens)
                setattr(stats, f"{name}_reused_tokens", state.reused_tokens)
        return stats


class TokenBridge(Bridge):
    """A shared tokenizer: tokens are the shared currency (the fast path)."""

    def __init__(
        self, pair: Pair, cache_implementation: CacheImplementation, compiled: bool
    ) -> None:
        states = tuple(
            TokenModelState(member, pair.device, cache_implementation, compiled)
            for member in pair.members
        )
        super().__init__(pair, (states[0], states[1]))

    def _new_state(self, member: PairMember) -> TokenModelState:
        return TokenModelState(member, self.pair.device)

    def before_step(self, writers: Sequence[int]) -> None:
        """Nothing to bring up to date: both models see every committed token."""

    def logits(self, source: int, rows: Sequence[int]) -> torch.Tensor:
        return self.states[source].logits()

    def view(self, source: int, row: int, sample: SampleRecord) -> Sequence[int]:
        """The row's response as ``source`` sees it: every committed id."""
        return sample.token_ids

    def commit(
        self,
        rows: Sequence[SampleRecord],
        tokens: list[int],
        sources: list[int],
        writers: list[int],
    ) -> list[str | None]:
        deltas: list[str | None] = []
        for sample, token, source in zip(rows, tokens, sources, strict=True):
            assert isinstance(sample, TokenSample)
            eos = token in self.pair.members[source].eos_ids
            deltas.append(None if eos else sample.append(token, source))
        return deltas

    def after_step(self, tokens: torch.Tensor, lock_step: bool) -> None:
        for state in self.states:
            state.push(tokens)
            if lock_step:
                state.logits()  # lock-step: every model runs every step


class TextBridge(Bridge):
    """Different tokenizers: text is the shared currency (cross-family pairs)."""

    def __init__(self, pair: Pair) -> None:
        states = tuple(TextModelState(member, pair.device) for member in pair.members)
        super().__init__(pair, (states[0], states[1]))
        self.width = pair.width
        self.writers: list[int] = []
        self.samples: list[TextSample] = []
        # Looked up per row and token on the host: a list made once per vocabulary, not a
        # device read (or a tensor index) per token.
        self.continuation = [member.masks.continuation.tolist() for member in pair.members]

    def _new_state(self, member: PairMember) -> TextModelState:
        return TextModelState(member, self.pair.device)

    def join(self, requests: Sequence[Request]) -> None:
        super().join(requests)
        self.samples.extend(s for r in requests for s in r.samples if isinstance(s, TextSample))

    def _sync(self, source: int, rows: Sequence[int], writers: Sequence[int]) -> None:
        state = self.states[source]
        for row in rows:
            if writers[row] != source:  # the writer's own tokens already spell the text
                state.sync(row, encode_text(state.tokenizer, self.samples[row].text))

    def before_step(self, writers: Sequence[int]) -> None:
        """A model about to run for its own rows' proposals brings the other rows up to date in
        the same forward: a boundary syncs to the committed text, which this step's proposals
        do not change, so a row reaching a boundary, or handed to this model, costs no second
        pass. Extra rows in a forward are cheap; another forward is not."""
        self.writers = list(writers)
        for source in SOURCE_IDS:
            if source in writers:
                self._sync(
                    source, [r for r, w in enumerate(writers) if w not in (-1, source)], writers
                )

    def logits(self, source: int, rows: Sequence[int]) -> torch.Tensor:
        self._sync(source, rows, self.writers)
        logits = self.states[source].logits(rows)
        if logits.shape[1] == self.width:
            return logits
        return torch.nn.functional.pad(
            logits, (0, self.width - logits.shape[1]), value=float("-inf")
        )

    def view(self, source: int, row: int, sample: SampleRecord) -> Sequence[int]:
        """The row's response as ``source`` sees it: its own tokens of the text so far."""
        return self.states[source].view(row)

    def commit(
        self,
        rows: Sequence[SampleRecord],
        tokens: list[int],
        sources: list[int],
        writers: list[int],
    ) -> list[str | None]:
        deltas: list[str | None] = []
        for row, (sample, token, source) in enumerate(zip(rows, tokens, sources, strict=True)):
            assert isinstance(sample, TextSample)
            state = self.states[source]
            if source != writers[row]:
                detokenizer = IncrementalDetokenizer(state.tokenizer)
                detokenizer.seed(state.view(row)[-_DETOKENIZER_CONTEXT:])
                sample.switch(source, detokenizer)
            if token in self.pair.members[source].eos_ids:
                deltas.append(None)
                continue
            state.append(row, token)
            continues = token < len(self.continuation[source]) and self.continuation[source][token]
            deltas.append(sample.append(token, starts_word=not continues))
        return deltas

    def after_step(self, tokens: torch.Tensor, lock_step: bool) -> None:
        """Nothing to push: the writers appended their tokens, the others sync when needed."""

    def select(self, keep: torch.Tensor) -> None:
        super().select(keep)
        self.samples = [self.samples[r] for r in keep.tolist()]

    def release(self) -> None:
        super().release()
        self.samples = []
