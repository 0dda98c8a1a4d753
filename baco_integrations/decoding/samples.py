"""What one sample accumulates while it is decoded: tokens, their sources, text.

``TokenSample`` is a sample of a shared-tokenizer pair (one token at a time); ``TextSample``
one of a cross-family pair, whose text is frozen into aligned-tokenizer pieces at word
boundaries. Sources are source ids here and become names only in :meth:`SampleRecord.output`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from ..detokenize import IncrementalDetokenizer
from ..outputs import BacoOutput, FinishReason, TokenLogProb
from ..stops import find_stop, streamable_length
from .encoding import encode_text, encode_with_ends
from .logprobs import Scored, with_model_logprobs
from .pair import ALIGNED, BASE, SOURCE_NAMES, Pair


@dataclass
class SampleRecord:
    """What both kinds of sample share: ids and sources (one per id), where each id's text
    ends, the text, how it finished, and how much of it was streamed."""

    prompt_index: int
    sample_index: int
    prompt_tokens: int
    token_ids: list[int] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: FinishReason | None = None
    #: Tokens already streamed.
    emitted_tokens: int = 0
    #: With ``logprobs``: each written token's log-prob (the writer's tokens) and where in
    #: ``text`` its text starts (for cuts and chunks); None when the call did not ask.
    logprobs: list[TokenLogProb] | None = None
    logprob_starts: list[int] = field(default_factory=list)
    #: Whether a stop string or a limit cut the written text.
    cut: bool = False
    #: With ``logprobs``: each model's mean log-prob of the response, by source (aligned,
    #: base).
    mean_logprobs: tuple[float | None, float | None] = (None, None)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def add_logprob(self, entry: TokenLogProb, start: int) -> None:
        if self.logprobs is None:
            self.logprobs = []
        self.logprobs.append(entry)
        self.logprob_starts.append(start)

    def add_model_scores(
        self, scored: Sequence[Scored | None], tokenizers: Sequence[PreTrainedTokenizerBase]
    ) -> None:
        """At the finish: each model's (by source) view of the kept response, scored; sets
        the means and each entry's ``aligned_logprob`` / ``base_logprob``."""
        first, second = (None if s is None else s.mean for s in scored)
        self.mean_logprobs = (first, second)
        if self.logprobs is not None:
            starts = None if isinstance(self, TokenSample) else self.logprob_starts
            self.logprobs = with_model_logprobs(self.logprobs, starts, scored, tokenizers)

    def chunk_logprobs(
        self, tokens: tuple[int, int], chars: tuple[int, int], last: bool = False
    ) -> tuple[TokenLogProb, ...] | None:
        """The entries of a chunk: ids ``tokens[0]:tokens[1]`` spelling ``text[chars[0]:
        chars[1]]``. A same-tokenizer sample's entries are its ids'; a cross-family one's are
        the writer's tokens whose text starts in the chunk (the ``last`` chunk also takes
        those that spelled nothing, such as half a character, unless a stop string cut the
        text). None when not asked for."""
        if self.logprobs is None:
            return None
        if isinstance(self, TokenSample):
            return tuple(self.logprobs[tokens[0] : tokens[1]])
        end = chars[1] + (1 if last and not self.cut else 0)
        return tuple(
            e
            for e, at in zip(self.logprobs, self.logprob_starts, strict=True)
            if chars[0] <= at < end
        )

    def kept_logprobs(self) -> tuple[TokenLogProb, ...] | None:
        """The entries of what the output kept (a stop string or a limit cut the rest)."""
        return self.chunk_logprobs((0, len(self.token_ids)), (0, len(self.text)), last=True)

    def safe_length(self, stops: Sequence[str] | None) -> int:
        """How much text can be streamed: all but a suffix that may begin a stop string."""
        if self.finish_reason is not None:
            return len(self.text)
        return streamable_length(self.text, stops)

    def keep_tokens(self, limit: int) -> None:
        """Keep at most ``limit`` ids, and the text they spell."""
        if len(self.token_ids) <= limit:
            return
        del self.token_ids[limit:], self.sources[limit:]
        if self.ends:
            del self.ends[limit:]
            # Ids at the cut that complete no character (half a multi-byte one) go too.
            while len(self.ends) > 1 and self.ends[-1] == self.ends[-2]:
                del self.token_ids[-1], self.sources[-1], self.ends[-1]
            self.text = self.text[: self.ends[-1]] if self.ends else ""

    def output(self) -> BacoOutput:
        return BacoOutput(
            text=self.text,
            token_ids=tuple(self.token_ids),
            sources=tuple(SOURCE_NAMES[s] for s in self.sources),
            finish_reason=self.finish_reason or "length",
            prompt_index=self.prompt_index,
            sample_index=self.sample_index,
            prompt_tokens=self.prompt_tokens,
            logprobs=self.kept_logprobs(),
            aligned_mean_logprob=self.mean_logprobs[ALIGNED],
            base_mean_logprob=self.mean_logprobs[BASE],
        )


@dataclass
class TokenSample(SampleRecord):
    """A sample of a same-tokenizer pair: one token at a time.

    Text is decoded token by token only when ``incremental`` (streaming or stop strings);
    otherwise it is decoded once when the sample finishes.
    """

    detokenizer: IncrementalDetokenizer = field(kw_only=True)
    incremental: bool = field(default=True, kw_only=True)

    def reached(self, limit: int) -> bool:
        """Whether the sample holds ``limit`` ids (one per step here)."""
        return len(self.token_ids) >= limit

    def append(self, token_id: int, source: int) -> str:
        self.token_ids.append(token_id)
        self.sources.append(source)
        if not self.incremental:
            return ""
        delta = self.detokenizer.push(token_id)
        self.text += delta
        self.ends.append(len(self.text))
        return delta

    def finish(self, reason: FinishReason, limit: int | None = None) -> None:
        """Decode or flush the rest of the text; with ``limit``, keep at most that many ids."""
        if limit is not None:
            self.keep_tokens(limit)
        if not self.incremental:
            self.text = self.detokenizer.decode(self.token_ids)
        elif tail := self.detokenizer.flush():
            self.text += tail
            self.ends[-1] = len(self.text)
        self.finish_reason = reason

    def check_stop(self, stops: Sequence[str], longest: int, delta: str) -> bool:
        """Cut the text before the first stop string that ``delta`` completed."""
        cut = find_stop(self.text, stops, longest, delta)
        if cut is None:
            return False
        # keep the tokens whose text starts before the cut
        keep = sum(1 for i in range(len(self.ends)) if (self.ends[i - 1] if i else 0) < cut)
        del self.token_ids[keep:], self.sources[keep:], self.ends[keep:]
        self.text = self.text[:cut]
        if self.ends:
            self.ends[-1] = min(self.ends[-1], cut)
        self.finish_reason = "stop"
        return True


@dataclass
class _Piece:
    start: int  # first character in the sample's text
    first_token: int  # index of its first aligned token
    source: int


@dataclass
class TextSample(SampleRecord):
    """One sample's committed text, frozen into aligned-tokenizer pieces at word boundaries
    (``token_ids``, ``sources`` and ``ends`` cover the frozen text).

    The writing model's detokenizer turns its tokens into text; a token that starts a word,
    or a change of writer, freezes the text before it.
    """

    aligned_tokenizer: PreTrainedTokenizerBase = field(kw_only=True)
    frozen: int = 0
    writer: int | None = None
    detokenizer: IncrementalDetokenizer | None = None
    pieces: list[_Piece] = field(default_factory=list)

    def switch(self, source: int, detokenizer: IncrementalDetokenizer) -> None:
        """``source`` takes over, with a detokenizer that has seen its view of the text."""
        self._flush_writer()
        self._freeze(len(self.text))
        self.writer, self.detokenizer = source, detokenizer

    def append(self, token_id: int, starts_word: bool) -> str:
        """The writer's next token; returns its text delta."""
        assert self.detokenizer is not None and self.writer is not None
        if starts_word:
            self._freeze(len(self.text))
        delta = self.detokenizer.push(token_id)
        self.text += delta
        return delta

    def reached(self, limit: int) -> bool:
        """Whether the text so far spells ``limit`` aligned-tokenizer ids (what the output
        reports). Every id covers at least one byte, so the current word is re-tokenized only
        when its bytes could take the count to the limit, not at every step."""
        tail = self.text[self.frozen :]
        if len(self.token_ids) + len(tail.encode("utf-8")) < limit:
            return False
        return len(self.token_ids) + len(encode_text(self.aligned_tokenizer, tail)) >= limit

    def _flush_writer(self) -> None:
        if self.detokenizer is not None and (tail := self.detokenizer.flush()):
            self.text += tail

    def _freeze(self, upto: int) -> None:
        if upto <= self.frozen or self.writer is None:
            return
        ids, ends = encode_with_ends(self.aligned_tokenizer, self.text[self.frozen : upto])
        self.pieces.append(_Piece(self.frozen, len(self.token_ids), self.writer))
        self.token_ids.extend(ids)
        self.sources.extend([self.writer] * len(ids))
        self.ends.extend(self.frozen + end for end in ends)
        self.frozen = upto

    def finish(self, reason: FinishReason, limit: int | None = None) -> None:
        """Freeze the rest; with ``limit``, keep at most that many ids (and their text)."""
        self._flush_writer()
        self._freeze(len(self.text))
        if limit is not None:
            # Re-tokenizing can spell a word with more aligned ids than the writer's tokens:
            # the user's limit is on the reported ids.
            written = len(self.text)
            self.keep_tokens(limit)
            self.cut = self.cut or len(self.text) < written
        self.finish_reason = reason

    def check_stop(self, stops: Sequence[str], longest: int, delta: str) -> bool:
        """Cut the text before the first stop string that ``delta`` completed."""
        cut = find_stop(self.text, stops, longest, delta)
        if cut is None:
            return False
        if cut < self.frozen:
            # Unfreeze the pieces the cut reaches into; the rest is re-tokenized at finish.
            while self.pieces and self.pieces[-1].start >= cut:
                self.pieces.pop()
            piece = self.pieces.pop()
            del self.token_ids[piece.first_token :], self.sources[piece.first_token :]
            del self.ends[piece.first_token :]
            self.frozen, self.writer = piece.start, piece.source
        self.text, self.cut = self.text[:cut], True
        self.detokenizer = None  # the text is final: nothing held back may follow the cut
        self.finish("stop")
        return True


def make_samples(
    pair: Pair, prompt_tokens: Sequence[int], n: int, incremental: bool
) -> list[SampleRecord]:
    """``n`` samples of each prompt (prompt-major: sample j of prompt i is at ``i * n + j``),
    of the kind the pair decodes. ``prompt_tokens``: each prompt's length in aligned ids;
    ``incremental``: text is decoded token by token (streaming, stop strings)."""
    aligned = pair.aligned

    def sample(i: int, j: int) -> SampleRecord:
        if pair.shares_tokenizer:
            return TokenSample(
                i,
                j,
                prompt_tokens[i],
                detokenizer=IncrementalDetokenizer(aligned.tokenizer),
                incremental=incremental,
            )
        return TextSample(i, j, prompt_tokens[i], aligned_tokenizer=aligned.tokenizer)

    return [sample(i, j) for i in range(len(prompt_tokens)) for j in range(n)]
