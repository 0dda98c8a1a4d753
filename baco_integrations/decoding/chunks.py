"""Stream chunking: the part of a sample's text that is safe to show, as tagged chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..outputs import BacoChunk
from .pair import SOURCE_NAMES
from .samples import SampleRecord


def _names(sources: Sequence[int]) -> tuple:
    return tuple(SOURCE_NAMES[s] for s in sources)


def new_chunks(sample: SampleRecord, stops: Sequence[str] | None) -> Iterator[BacoChunk]:
    """Chunks for the tokens of ``sample`` whose text is now safe to show (not the start of a
    possible stop string), one per token with text; a token with no text of its own yet (half
    a character) joins the next chunk. The last chunk of a finished sample carries its output.
    """
    safe = sample.safe_length(stops)
    start = sample.ends[sample.emitted_tokens - 1] if sample.emitted_tokens else 0
    for i in range(sample.emitted_tokens, len(sample.token_ids)):
        end = sample.ends[i]
        if end > safe:
            break
        if end > start:
            first = sample.emitted_tokens
            yield BacoChunk(
                text=sample.text[start:end],
                source=SOURCE_NAMES[sample.sources[i]],
                token_ids=tuple(sample.token_ids[first : i + 1]),
                sources=_names(sample.sources[first : i + 1]),
                sample_index=sample.sample_index,
                prompt_tokens=sample.prompt_tokens,
                logprobs=sample.chunk_logprobs((first, i + 1), (start, end)),
            )
            sample.emitted_tokens, start = i + 1, end
    if sample.finish_reason is not None:
        rest = sample.text[start:]
        first = sample.emitted_tokens
        yield BacoChunk(
            text=rest,
            source=SOURCE_NAMES[sample.sources[-1]] if rest else None,
            token_ids=tuple(sample.token_ids[first:]),
            sources=_names(sample.sources[first:]),
            sample_index=sample.sample_index,
            finish_reason=sample.finish_reason,
            prompt_tokens=sample.prompt_tokens,
            output=sample.output(),  # consumers need not add the chunks up themselves
            logprobs=sample.chunk_logprobs(
                (first, len(sample.token_ids)), (start, len(sample.text)), last=True
            ),
        )
        sample.emitted_tokens = len(sample.token_ids)
