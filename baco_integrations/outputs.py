"""What the engine returns: finished samples, streamed chunks, and the token usage of both."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .config import Source

FinishReason = Literal["stop", "length"]


def base_fraction(sources: Sequence[Source]) -> float:
    """Share of ``sources`` that are ``"base"`` (0.0 when there are none)."""
    if not sources:
        return 0.0
    return sum(source == "base" for source in sources) / len(sources)


#: The floor of a reported log-prob: a drawn token its distribution gives no mass (a remote
#: engine's draw outside the top-k it returned) reads -9999.0, as OpenAI reports such tokens.
LOGPROB_FLOOR = -9999.0


@dataclass(frozen=True)
class TopLogProb:
    """One of the most likely tokens at a position, with its log-probability."""

    token: str
    token_id: int
    logprob: float
    #: The token's text as UTF-8 bytes.
    bytes: tuple[int, ...] = ()


@dataclass(frozen=True)
class TokenLogProb:
    """A generated token's log-probability (``logprobs=True``; docs/logprobs.md).

    The token is the writing model's own (across families: the writer's tokens, not the
    aligned ids of ``BacoOutput.token_ids``), and ``logprob`` is under the distribution it
    was drawn from: the writer's, after temperature and top-k/top-p/min-p truncation, as the
    draw saw it (vLLM's ``processed_logprobs``, not its default ``raw_logprobs``).
    ``top_logprobs`` are that distribution's most likely tokens, most likely first
    (``top_logprobs=k``).
    """

    token: str
    token_id: int
    logprob: float
    source: Source
    bytes: tuple[int, ...] = ()
    top_logprobs: tuple[TopLogProb, ...] = ()
    #: Each model's own log-prob of this token's text (temperature 1, nothing truncated),
    #: filled when the sample finishes (a finished output and the last streamed chunk);
    #: across families the sum over that model's tokens starting in the text. None where the
    #: model cannot score it (a remote engine) or before the sample finished.
    aligned_logprob: float | None = None
    base_logprob: float | None = None


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
    #: Each generated token's log-prob when the call asked for them (else None).
    logprobs: tuple[TokenLogProb, ...] | None = None
    #: With ``logprobs``: the base and the aligned model's mean log-prob per token of the
    #: response, in each model's own tokens at temperature 1 (a quality signal: how natural
    #: the model finds the text); None where the model cannot score it (a remote engine).
    base_mean_logprob: float | None = None
    aligned_mean_logprob: float | None = None

    @property
    def base_fraction(self) -> float:
        """Share of generated tokens that the base model wrote (0.0 for an empty output)."""
        return base_fraction(self.sources)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class BacoChunk:
    """A streamed piece of one sample: new text and the model it came from.

    ``source`` is the model of the chunk's last token; ``sources`` has one entry per token id
    (a token that completed no character yet shares the next chunk). The last chunk of a
    sample has ``finish_reason`` set (its text may be empty) and carries the finished sample as
    ``output``, so that a consumer needs to add nothing up itself.
    """

    text: str
    source: Source | None
    token_ids: tuple[int, ...] = ()
    sources: tuple[Source, ...] = ()
    sample_index: int = 0
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    output: BacoOutput | None = None
    #: The log-probs of the chunk's tokens (the writer's tokens whose text starts in it) when
    #: the call asked for them (else None).
    logprobs: tuple[TokenLogProb, ...] | None = None


@dataclass(frozen=True)
class Usage:
    """Token counts, as OpenAI-style APIs report them: the one definition the adapters share.

    ``prompt_tokens`` counts each prompt once, however many samples it has: the ``n`` samples
    of a prompt share one prefill. Prompt lengths are the aligned model's (what its chat
    template or plain rendering made of the prompt); ``completion_tokens`` are the generated
    ids of every sample (``BacoOutput.num_tokens``).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def of(cls, outputs: Iterable[BacoOutput]) -> Usage:
        """The usage of samples from ONE engine call (all of it, or any part of it).

        A prompt is identified by ``BacoOutput.prompt_index``, its position in that call's list
        of prompts, so samples of different calls must not be mixed here (their indices
        collide): add the :class:`Usage` of each call instead (``usage + other``).
        """
        prompt_lengths: dict[int, int] = {}
        completion = 0
        for output in outputs:
            known = prompt_lengths.setdefault(output.prompt_index, output.prompt_tokens)
            if known != output.prompt_tokens:
                raise ValueError(
                    f"outputs of different engine calls: prompt_index {output.prompt_index} "
                    f"has {known} and {output.prompt_tokens} prompt tokens; add the Usage of "
                    "each call instead"
                )
            completion += output.num_tokens
        return cls(prompt_tokens=sum(prompt_lengths.values()), completion_tokens=completion)

    @classmethod
    def from_dict(cls, counts: Mapping[str, int]) -> Usage:
        """The inverse of :meth:`as_dict` (``total_tokens`` is derived, so it is not read)."""
        return cls(
            prompt_tokens=int(counts.get("prompt_tokens", 0)),
            completion_tokens=int(counts.get("completion_tokens", 0)),
        )

    def as_dict(self) -> dict[str, int]:
        """``{"prompt_tokens", "completion_tokens", "total_tokens"}``."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

    def __add__(self, other: Usage) -> Usage:
        """The usage of two separate engine calls together."""
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )
