"""BacoLLM's async forms: same results as the sync ones, off the event loop, closed early."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from llama_index.core.llms import ChatMessage, MessageRole

from baco_integrations import BacoEngine
from baco_integrations._streaming import THREAD_NAME
from baco_integrations.llama_index import BacoLLM

MESSAGES = [ChatMessage(role="user", content="Brainstorm names for a boat.")]


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll without blocking the loop (cleanup of a dropped stream runs in loop callbacks)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_acomplete_and_achat_match_the_sync_calls(llm: BacoLLM, engine_calls) -> None:
    completion = await llm.acomplete("Hi", max_new_tokens=6)
    assert completion.text == llm.complete("Hi", max_new_tokens=6).text
    assert completion.additional_kwargs["completion_tokens"] <= 6
    reply = await llm.achat(MESSAGES)
    assert reply.message.role == MessageRole.ASSISTANT
    assert reply.message.content == llm.chat(MESSAGES).message.content
    assert reply.additional_kwargs["finish_reason"] in {"stop", "length"}
    loop_thread = threading.get_ident()
    async_threads = engine_calls.threads[0], engine_calls.threads[2]
    assert loop_thread not in async_threads  # the engine ran in worker threads


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
    assert threading.get_ident() not in (engine_calls.threads[0], engine_calls.threads[2])
    await wait_until(lambda: not stream_threads())


async def test_async_errors_raise_at_the_call(llm: BacoLLM, engine: BacoEngine) -> None:
    with pytest.raises(ValueError, match="temprature"):
        await llm.acomplete("Hi", temprature=0.5)
    with pytest.raises(ValueError, match="n=3"):
        await llm.astream_complete("Hi", n=3)
    with pytest.raises(ValueError, match="too long"):
        await llm.astream_chat([ChatMessage(role="user", content="word " * 600)])
    await wait_until(lambda: not stream_threads())
    assert not engine._lock.locked()


async def test_async_calls_do_not_block_the_loop(long_llm: BacoLLM) -> None:
    llm = long_llm
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.002)

    beating = asyncio.create_task(heartbeat())
    try:
        await asyncio.sleep(0.01)
        before = ticks
        await llm.acomplete("Tell me a story.")
        during_complete = ticks - before

        before = ticks
        # A blocking stream would run the whole decode between two heartbeats, since the
        # consumer below never awaits anything but the stream.
        async for _ in await llm.astream_complete("Tell me a story."):
            pass
        during_stream = ticks - before
    finally:
        beating.cancel()
    assert during_complete >= 3
    assert during_stream >= 3


async def test_aclose_stops_the_engine(engine: BacoEngine, engine_calls, long_llm: BacoLLM) -> None:
    llm = long_llm
    stream = await llm.astream_complete("Tell me a story.")
    first = await anext(stream)
    assert first.delta
    await stream.aclose()
    await wait_until(lambda: engine_calls.closed_streams == 1 and not stream_threads())
    assert not engine._lock.locked()
    assert engine.last_stats.steps < llm.max_new_tokens
    # The engine is free for the next call at once.
    assert (await llm.acomplete("Hi", max_new_tokens=2)).text is not None


async def test_breaking_out_of_a_chat_stream_stops_the_engine(
    engine: BacoEngine, engine_calls, long_llm: BacoLLM
) -> None:
    llm = long_llm
    stream = await llm.astream_chat([ChatMessage(role="user", content="Tell me a story.")])
    async for _ in stream:
        break
    del stream  # no aclose(): the loop finalises the dropped generator
    await wait_until(lambda: engine_calls.closed_streams == 1 and not stream_threads())
    assert not engine._lock.locked()
    assert engine.last_stats.steps < llm.max_new_tokens


async def test_cancelling_a_consumer_stops_the_engine(
    engine: BacoEngine, engine_calls, long_llm: BacoLLM
) -> None:
    llm = long_llm
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in await llm.astream_complete("Tell me a story."):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: engine_calls.closed_streams == 1 and not stream_threads())
    assert not engine._lock.locked()
    assert engine.last_stats.steps < llm.max_new_tokens


async def test_cancelled_acomplete_stops_decoding_and_frees_the_engine(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, max_new_tokens=400, router="P", seed=0)
    task = asyncio.create_task(llm.acomplete("Ideas for a coffee shop"))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.last_stats.steps < 400
    assert engine._lock.acquire(timeout=5)
    engine._lock.release()
