"""BacoLLM's async forms: same results as the sync ones, off the event loop, closed early.

No test here reads the clock to decide anything: a test that needs decoding to be under way
(to cancel it, or to see the event loop run during it) observes it through
:class:`DecodingGate`, and one that waits for a stream to wind down joins its worker thread,
so its verdict is the same on a machine ten times faster or slower. :data:`HANG_GUARD_S` only
bounds how long a broken adapter makes a test hang before it fails; no passing run waits for
it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import torch
from llama_index.core.llms import ChatMessage, MessageRole

from baco_integrations import BacoEngine, RouterInputs
from baco_integrations._streaming import THREAD_NAME
from baco_integrations.config import Source
from baco_integrations.llama_index import BacoLLM

MESSAGES = [ChatMessage(role="user", content="Brainstorm names for a boat.")]

#: Upper bound of every wait on something that must happen, so that a bug fails the test
#: rather than hanging it. Passing runs never reach it.
HANG_GUARD_S = 60.0


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


async def stream_threads_finished() -> None:
    """Wait until every stream worker thread has ended (each closes its engine stream on its
    way out). The joins block worker threads, not the event loop, which must stay free to
    finalise dropped streams."""
    for thread in stream_threads():
        await asyncio.to_thread(thread.join, HANG_GUARD_S)
    assert not stream_threads(), "a stream worker thread outlived the hang guard"


class DecodingGate:
    """A router that lets a test see decoding start, and holds decoding there until told.

    On its first call (the first word boundary of the first step: the engine is decoding) it
    sets :attr:`started` on the test's event loop, then waits for :attr:`go`, a
    ``threading.Event`` that the test sets, or replaces with one the code under test sets
    (the cancel event of the call). Later calls return at once. It always picks the base
    model, which rarely ends a sample early, so an unheld run is long.
    """

    needs: frozenset[Source] = frozenset()  # reads no distribution

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.started = asyncio.Event()
        self.go = threading.Event()
        #: Whether :attr:`go` was set while decoding was held (None before the first call).
        self.went: bool | None = None
        self.calls = 0

    def __call__(self, inputs: RouterInputs) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            self._loop.call_soon_threadsafe(self.started.set)
            self.went = self.go.wait(HANG_GUARD_S)
        return torch.ones(inputs.batch_size, dtype=torch.bool, device=inputs.device)

    async def release_once_started(self) -> None:
        """Let decoding go on once it has started. A blocked event loop never gets here while
        the engine decodes, and the gate then reports ``went=False``."""
        await asyncio.wait_for(self.started.wait(), HANG_GUARD_S)
        self.go.set()


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
    await stream_threads_finished()


async def test_async_errors_raise_at_the_call(llm: BacoLLM, engine: BacoEngine) -> None:
    with pytest.raises(ValueError, match="temprature"):
        await llm.acomplete("Hi", temprature=0.5)
    with pytest.raises(ValueError, match="n=3"):
        await llm.astream_complete("Hi", n=3)
    with pytest.raises(ValueError, match="too long"):
        await llm.astream_chat([ChatMessage(role="user", content="word " * 600)])
    await stream_threads_finished()
    assert not engine._lock.locked()


async def test_async_calls_do_not_block_the_loop(llm: BacoLLM) -> None:
    """The loop runs a coroutine while the engine is held mid-decoding; were the engine run on
    the loop, that coroutine could not release it."""
    gate = DecodingGate()
    response, _ = await asyncio.gather(
        llm.acomplete("Tell me a story.", router=gate), gate.release_once_started()
    )
    assert response.text is not None and gate.went

    gate = DecodingGate()

    async def consume() -> str:
        # Nothing here awaits anything but the stream: a blocking stream would decode it all
        # before the gate's releaser could run.
        text = ""
        async for item in await llm.astream_complete("Tell me a story.", router=gate):
            text = item.text
        return text

    streamed, _ = await asyncio.gather(consume(), gate.release_once_started())
    assert streamed == response.text and gate.went


async def test_aclose_stops_the_engine(engine: BacoEngine, engine_calls, long_llm: BacoLLM) -> None:
    llm = long_llm
    stream = await llm.astream_complete("Tell me a story.")
    first = await anext(stream)
    assert first.delta
    await stream.aclose()  # LlamaIndex's wrapper leaves ours to the loop's finaliser
    await stream_threads_finished()
    assert engine_calls.closed_streams == 1
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
    await stream_threads_finished()
    assert engine_calls.closed_streams == 1
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
    await stream_threads_finished()
    assert engine_calls.closed_streams == 1
    assert not engine._lock.locked()
    assert engine.last_stats.steps < llm.max_new_tokens


async def test_cancelled_acomplete_stops_decoding_and_frees_the_engine(
    engine: BacoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled once decoding has started (seen by the gate), the call stops decoding at once.

    The gate holds the first step until the call's cancel event is set, so the cancellation
    reaches a running decode however fast the machine is.
    """
    gate = DecodingGate()
    generate = engine.generate

    def generate_held_until_cancelled(*args: Any, cancel: threading.Event, **kwargs: Any) -> Any:
        gate.go = cancel
        return generate(*args, cancel=cancel, **kwargs)

    monkeypatch.setattr(engine, "generate", generate_held_until_cancelled)
    llm = BacoLLM(engine=engine, router=gate, max_new_tokens=400, seed=0)
    task = asyncio.create_task(llm.acomplete("Ideas for a coffee shop"))
    await asyncio.wait_for(gate.started.wait(), HANG_GUARD_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.went  # the cancel event reached the engine while it was decoding
    # The engine checks it after every step: it stopped after the held one, and the awaited
    # worker has released the engine's lock.
    assert engine.last_stats.steps == 1
    assert not engine._lock.locked()
