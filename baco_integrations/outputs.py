"""What the engine returns: finished samples and streamed chunks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from .config import Source
from .stops import streamable_length

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class BacoOutput:
    """One finished sample.

    ``token_ids`` are the generated ids in the aligned tokenizer's vocabulary, without the
    end-of-sequence token and without tokens that lie wholly after a stop string; ``sources``
    has one entry per id.
    """

    text: str
    token_ids: tuple[int, ...]
    sources: tuple[Source, ...]
    finish_reason: FinishReason
    prompt_index: int = 0
    sample_index: int = 0
    prompt_tokens: int = 0

    @property
    def base_fraction(self) -> float:
        """Share of generated tokens that the base model wrote (0.0 for an empty output)."""
        if not self.sources:
            return 0.0
        return sum(source == "base" for source in self.sources) / len(self.sources)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class BacoChunk:
    """A streamed piece of one sample: new text and the model it came from.

    ``source`` is the model of the chunk's last token; ``sources`` has one entry per token id
    (a token that completed no character yet shares the next chunk). The last chunk of a
    sample has ``finish_reason`` set (its text may be empty).
    """

    text: str
    source: Source | None
    token_ids: tuple[int, ...] = ()
    sources: tuple[Source, ...] = ()
    sample_index: int = 0
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0


@dataclass
class SampleRecord:
    """What one sample accumulates while it is decoded, in either decoding mode: its tokens,
    their sources, where each token's text ends, the text and how it finished."""

    prompt_index: int
    sample_index: int
    prompt_tokens: int
    token_ids: list[int] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: FinishReason | None = None
    #: Tokens already streamed.
    emitted_tokens: int = 0

    def safe_length(self, stops: Sequence[str] | None) -> int:
        """How much text can be streamed: all but a suffix that may begin a stop string."""
        if self.finish_reason is not None:
            return len(self.text)
        return streamable_length(self.text, stops)

    def output(self) -> BacoOutput:
        return BacoOutput(
            text=self.text,
            token_ids=tuple(self.token_ids),
            sources=tuple(self.sources),
            finish_reason=self.finish_reason or "length",
            prompt_index=self.prompt_index,
            sample_index=self.sample_index,
            prompt_tokens=self.prompt_tokens,
        )
