"""Server-sent events of a streamed request: engine chunks in, OpenAI stream chunks out.

A chat stream opens with the role of every choice (``delta: {"role": "assistant"}``), then
sends each piece of text as the engine delivers it, the choices of ``n`` interleaved by
``index``; a choice's last chunk has its ``finish_reason`` and its provenance. When log-probs
were asked, each chunk's choice carries those of its own tokens (see :mod:`.responses`). With
``stream_options.include_usage`` an extra chunk with no choices carries the usage. The stream
ends with ``data: [DONE]``, or with an error event if decoding failed mid-way.

With tools, a chat choice whose text starts with ``{`` may be a call (with ``tool_choice``
``"required"`` or a tool's name it always is): its pieces are held back until the choice ends.
A call then comes in OpenAI's deltas, ``tool_calls: [{"index": 0, "id", "type": "function",
"function": {"name", "arguments": ""}}]``, then ``[{"index": 0, "function": {"arguments":
<the JSON string>}}]`` (with the call's log-probs), then ``finish_reason: "tool_calls"`` with the
provenance; text that is not a call (cut by the token budget) goes out piece by piece as
usual, only later. A reply of free text streams as it is written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from ..decoding.request import DecodingCancelled
from ..decoding.scheduler import EngineOverloaded
from ..outputs import BacoChunk, BacoOutput, TokenLogProb, Usage
from ..tool_calls import ToolCall, ToolSpec, opens_call, parse_tool_call
from .errors import error_body, logger, overloaded
from .metrics import Metrics
from .responses import (
    SSE_DONE,
    LegacyLogprobs,
    Reply,
    choice_logprobs,
    chunk,
    provenance,
    sse,
    stream_choice,
    tool_call,
)

#: A prompt's index in its request, and one chunk of its stream.
Piece = tuple[int, BacoChunk]


@dataclass(frozen=True)
class StreamContext:
    """What a stream needs besides its chunks."""

    reply: Reply
    n: int
    prompts: int
    include_usage: bool
    tokenizer: PreTrainedTokenizerBase
    metrics: Metrics
    retry_after_s: int
    #: ``time.perf_counter()`` when the request arrived (time to first token).
    started: float
    #: The tools a chat reply may call (empty: every reply is text).
    tools: tuple[ToolSpec, ...] = ()


async def events(context: StreamContext, pieces: AsyncIterator[Piece]) -> AsyncIterator[str]:
    """The SSE events of one request; closing this generator cancels its decoding."""
    reply, include_usage = context.reply, context.include_usage
    #: Each prompt is its own engine call here, so usage is added up per call.
    outputs: dict[int, list[BacoOutput]] = {}
    #: The legacy log-probs of each choice (their text offsets run on across its chunks).
    legacy: dict[int, LegacyLogprobs] = {}
    calls = _CallHold(context.tools if reply.chat else ())
    waiting_first = True

    def text_event(index: int, piece: BacoChunk) -> str:
        if piece.output is not None:
            baco = provenance(piece.output, context.tokenizer)
        else:
            baco = {"source": piece.source}
        if piece.logprobs is not None and not reply.chat and index not in legacy:
            legacy[index] = LegacyLogprobs()
        logprobs = choice_logprobs(reply.chat, piece.logprobs, legacy.get(index))
        choice = stream_choice(
            reply, index, piece.text, piece.finish_reason, baco=baco, logprobs=logprobs
        )
        return sse(chunk(reply, [choice], include_usage=include_usage))

    try:
        if reply.chat:
            for index in range(context.prompts * context.n):
                role = stream_choice(reply, index, "", None, role=True)
                yield sse(chunk(reply, [role], include_usage=include_usage))
        async for prompt_index, piece in pieces:
            if waiting_first and piece.text:
                waiting_first = False
                context.metrics.first_token.observe(time.perf_counter() - context.started)
            index = prompt_index * context.n + piece.sample_index
            if piece.output is not None:
                outputs.setdefault(prompt_index, []).append(piece.output)
            texts, call = calls.push(index, piece)
            for each in texts:
                yield text_event(index, each)
            if call is not None and piece.output is not None:
                logprobs = None if piece.output.logprobs is None else call[1]
                for choice in call_choices(context, index, call[0], piece.output, logprobs):
                    yield sse(chunk(reply, [choice], include_usage=include_usage))
        usage = sum((Usage.of(call) for call in outputs.values()), Usage())
        finished = [output for call in outputs.values() for output in call]
        context.metrics.finished(finished, usage.prompt_tokens)
        if include_usage:
            yield sse(chunk(reply, [], include_usage=True, usage=usage))
        yield SSE_DONE
    except EngineOverloaded as exc:  # the queue filled between our check and the submission
        yield sse(overloaded(exc, context.retry_after_s).body())
    except DecodingCancelled:  # the engine is shutting down
        yield sse(error_body("the request was cancelled", type="server_error", code="cancelled"))
    except Exception:
        logger.exception("a stream failed mid-way")
        yield sse(error_body("decoding failed", type="server_error", code="internal_error"))
    finally:
        await pieces.aclose()  # type: ignore[attr-defined]


class _CallHold:
    """With tools: each choice's pieces held back while it may be a call (a reply that opens
    one), released as text if it ends as anything else."""

    def __init__(self, tools: tuple[ToolSpec, ...]) -> None:
        self.tools = tools
        #: Per choice, its held pieces (None once its text is known not to be a call).
        self.held: dict[int, list[BacoChunk] | None] = {}

    def push(
        self, index: int, piece: BacoChunk
    ) -> tuple[list[BacoChunk], tuple[ToolCall, list[TokenLogProb]] | None]:
        """The pieces to send as text now, and the call (with its tokens' log-probs) when
        the choice has ended as one."""
        if self.tools and index not in self.held and piece.text:
            self.held[index] = [] if opens_call(piece.text) else None
        waiting = self.held.get(index)
        if waiting is None:
            return [piece], None
        waiting.append(piece)
        if piece.output is None:
            return [], None
        del self.held[index]  # the choice has ended
        call = parse_tool_call(piece.output.text, self.tools)
        if call is None:
            return waiting, None
        return [], (call, [e for each in waiting for e in each.logprobs or ()])


def call_choices(
    context: StreamContext,
    index: int,
    call: ToolCall,
    output: BacoOutput,
    logprobs: list[TokenLogProb] | None,
) -> list[dict[str, Any]]:
    """A finished choice that is a call, as OpenAI streams one: the call's id and name, its
    arguments (with the log-probs of the call's tokens), then the finish and provenance."""
    whole = tool_call(call)
    opening = {**whole, "index": 0, "function": {"name": call.name, "arguments": ""}}
    arguments = {"index": 0, "function": {"arguments": whole["function"]["arguments"]}}
    finish = {
        "index": index,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
        "baco": provenance(output, context.tokenizer),
    }
    return [
        {
            "index": index,
            "delta": {"tool_calls": [opening]},
            "logprobs": None,
            "finish_reason": None,
        },
        {
            "index": index,
            "delta": {"tool_calls": [arguments]},
            "logprobs": None if logprobs is None else choice_logprobs(True, logprobs),
            "finish_reason": None,
        },
        finish,
    ]


async def merged(streams: Sequence[AsyncIterator[BacoChunk]]) -> AsyncIterator[Piece]:
    """The chunks of several prompts' streams as they come, each with its prompt's index.

    Closing this generator (or a failing stream) closes every stream, which takes their calls
    out of the engine's batch.
    """
    if len(streams) == 1:
        async for piece in streams[0]:
            yield 0, piece
        return
    queue: asyncio.Queue[tuple[int, BacoChunk | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[BacoChunk]) -> None:
        try:
            async for piece in stream:
                queue.put_nowait((index, piece))
            queue.put_nowait((index, None))
        except Exception as exc:
            queue.put_nowait((index, exc))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
