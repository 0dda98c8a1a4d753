"""BacoLLM's async forms: same results as the sync ones, off the event loop, closed early.

No test here reads the clock to decide anything. One that needs decoding to be under way (to
cancel it, to stop a stream, to see the event loop run during it) holds it at a known step
with a ``DecodingGate`` router; one that waits for decoding to stop waits for the engine to
go idle (``EngineWatch``, both in conftest.py). Each verdict is the same on a machine ten
times faster or slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from llama_index.core.llms import ChatMessage, MessageRole

from baco_integrations.llama_index import BacoLLM

MESSAGES = [ChatMessage(role="user", content="Brainstorm names for a boat.")]

#: Makes a DecodingGate router (conftest.py); ``hold_from_step=`` picks the step it holds.
MakeGate = Callable[..., Any]


async def test_acomplete_and_achat_match_the_sync_calls(llm: BacoLLM, engine_calls) -> None:
    completion = await llm.acomplete("Hi", max_new_tokens=6)
    assert completion.text == llm.complete("Hi", max_new_tokens=6).text
    assert completion.additional_kwargs["completion_tokens"] <= 6
    reply = await llm.achat(MESSAGES)
    assert reply.message.role == MessageRole.ASSISTANT
    assert reply.message.content == llm.chat(MESSAGES).message.content
    assert reply.additional_kwargs["finish_reason"] in {"stop", "length"}
    # The async forms call the engine's own async API: no thread per call, the loop free.
    assert engine_calls.asynchronous == ["agenerate", "agenerate"]


async def test_astream_complete_and_astream_chat(llm: BacoLLM, engine_calls) -> None:
    stream = await llm.astream_complete("Write a poem.")
    responses = [r async for r in stream]
    assert "".join(r.delta for r in responses) == responses[-1].text
    assert responses[-1].text == llm.complete("Write a poem.").text
    assert responses[-1].additional_kwargs["finish_reason"] in {"stop", "length"}
    assert responses[-1].raw["usage"]["completion_tokens"] == len(
        responses[-1].additional_kwargs["sources"]
    )

    chat_stream = await llm.astream_chat(MESSAGES)
    replies = [r async for r in chat_stream]
    assert "".join(r.delta for r in replies) == replies[-1].message.content
    assert replies[-1].message.content == llm.chat(MESSAGES).message.content
    assert engine_calls.asynchronous == ["astream", "astream"]
    assert engine_calls.closed_streams == 2  # both closed when they ended


async def test_async_errors_raise_at_the_call(llm: BacoLLM, watch: Any) -> None:
    with pytest.raises(ValueError, match="temprature"):
        await llm.acomplete("Hi", temprature=0.5)
    with pytest.raises(ValueError, match="n=3"):
        await llm.astream_complete("Hi", n=3)
    with pytest.raises(ValueError, match="too long"):
        await llm.astream_chat([ChatMessage(role="user", content="word " * 600)])
    await watch.idle()
    assert watch.steps == 0  # refused before any decoding


async def test_async_calls_do_not_block_the_loop(llm: BacoLLM, make_gate: MakeGate) -> None:
    """The loop runs a coroutine while the engine is held mid-decoding; were the call made on
    the loop (blocking it), that coroutine could not release the engine."""
    gate = make_gate()
    response, _ = await asyncio.gather(
        llm.acomplete("Tell me a story.", router=gate), gate.release_once_held()
    )
    assert response.text is not None and gate.went

    gate = make_gate()

    async def consume() -> str:
        text = ""
        async for item in await llm.astream_complete("Tell me a story.", router=gate):
            text = item.text
        return text

    streamed, _ = await asyncio.gather(consume(), gate.release_once_held())
    assert streamed == response.text and gate.went


async def test_aclose_stops_the_engine(
    long_llm: BacoLLM, watch: Any, engine_calls: Any, make_gate: MakeGate
) -> None:
    gate = make_gate(hold_from_step=1)
    stream = await long_llm.astream_complete("Tell me a story.", router=gate)
    first = await anext(stream)
    assert first.delta
    await gate.until_held()  # decoding is held at a known step while the consumer stops
    await stream.aclose()
    await watch.closed()  # the engine's stream was closed: the call left the batch
    gate.go.set()
    await watch.idle()
    # decoding ended with the step that was running when the consumer stopped
    assert gate.went and watch.steps == gate.held_at + 1
    assert engine_calls.closed_streams == 1
    # The engine is free for the next call at once.
    assert (await long_llm.acomplete("Hi", max_new_tokens=2)).text is not None


async def test_breaking_out_of_a_chat_stream_stops_the_engine(
    long_llm: BacoLLM, watch: Any, make_gate: MakeGate
) -> None:
    gate = make_gate(hold_from_step=1)
    messages = [ChatMessage(role="user", content="Tell me a story.")]
    stream = await long_llm.astream_chat(messages, router=gate)
    async for _ in stream:
        break
    await gate.until_held()
    del stream  # no aclose(): the loop finalises the dropped generator
    await watch.closed()
    gate.go.set()
    await watch.idle()
    assert gate.went and watch.steps == gate.held_at + 1


async def test_cancelling_a_consumer_stops_the_engine(
    long_llm: BacoLLM, watch: Any, make_gate: MakeGate
) -> None:
    gate = make_gate(hold_from_step=1)
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in await long_llm.astream_complete("Tell me a story.", router=gate):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    await gate.until_held()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await watch.closed()
    gate.go.set()
    await watch.idle()
    assert gate.went and watch.steps == gate.held_at + 1


async def test_cancelled_acomplete_stops_decoding_and_frees_the_engine(
    long_llm: BacoLLM, watch: Any, make_gate: MakeGate
) -> None:
    """Cancelled while decoding is held at its first step, the call leaves the engine's batch
    before the next step, however fast the machine is."""
    gate = make_gate()
    task = asyncio.create_task(long_llm.acomplete("Tell me a story.", router=gate))
    await gate.until_held()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.go.set()
    await watch.idle()
    assert gate.went and watch.steps == gate.held_at + 1 == 1
    assert (await long_llm.acomplete("Hi", max_new_tokens=2)).text is not None
