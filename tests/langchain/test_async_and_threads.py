"""Event-loop friendliness, early stops and cancellation, and threads sharing one engine."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from baco_integrations import BacoChunk, BacoEngine
from baco_integrations._streaming import AHEAD, SourceTracker, iterate_in_thread
from baco_integrations.langchain import BacoLLM, ChatBaco

LONG = {"router": "base", "max_new_tokens": 200, "seed": 0}  # the base model rarely stops early


async def wait_until_free(engine: BacoEngine, timeout: float = 20.0) -> bool:
    """True once no call holds the engine's lock; keeps the loop running meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine._lock.acquire(blocking=False):
            engine._lock.release()
            return True
        await asyncio.sleep(0.01)
    return False


class Ticker:
    """Counts how often the event loop got to run a coroutine while something else awaited."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0.001)

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


# ------------------------------------------------------------------------ async


async def test_ainvoke_and_astream_do_not_block_the_loop(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, max_new_tokens=48, router="base", seed=1)
    with Ticker() as ticker:
        text = await llm.ainvoke("Tell me a story")
    assert text and ticker.ticks > 3
    with Ticker() as ticker:
        pieces = [p async for p in llm.astream("Tell me a story")]
    assert "".join(pieces) == text and ticker.ticks > 3


@pytest.mark.parametrize("adapter", [BacoLLM, ChatBaco])
async def test_astream_stopped_early_stops_decoding(engine: BacoEngine, adapter: type) -> None:
    llm = adapter(engine=engine, **LONG)
    full_steps = len(engine.generate("Tell me a story", **LONG)[0][0].token_ids)
    assert full_steps > 100  # precondition: a full run is long

    stream = llm.astream("Tell me a story")
    async for _ in stream:
        break
    await stream.aclose()
    assert await wait_until_free(engine)
    # the worker ran at most a few chunks ahead before it saw the stop
    assert engine.last_stats.steps < 20 + AHEAD
    assert await llm.ainvoke("Hi", max_new_tokens=4)  # the engine is usable again


@pytest.mark.parametrize("adapter", [BacoLLM, ChatBaco])
async def test_cancelled_astream_releases_the_engine(engine: BacoEngine, adapter: type) -> None:
    llm = adapter(engine=engine, **LONG)
    started = asyncio.Event()

    async def slow_consumer() -> None:
        async for _ in llm.astream("Tell me a story"):
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(slow_consumer())
    await asyncio.wait_for(started.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_until_free(engine)
    assert engine.last_stats.steps < 20 + AHEAD
    assert await asyncio.wait_for(llm.ainvoke("Hi", max_new_tokens=4), timeout=30)


async def test_astream_error_surfaces(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, max_new_tokens=4)
    too_long = "word " * 2000  # longer than the tiny models' 512-token context
    with pytest.raises(ValueError, match="too long"):
        [c async for c in llm.astream(too_long)]
    assert await wait_until_free(engine)


def test_sync_stream_closed_early_releases_the_engine(engine: BacoEngine) -> None:
    llm = ChatBaco(engine=engine, **LONG)
    stream = llm.stream("Tell me a story")
    next(stream)
    stream.close()
    assert engine._lock.acquire(timeout=5)
    engine._lock.release()
    assert engine.last_stats.steps < 20


# ------------------------------------------------------------------------ threads


def test_threads_wait_their_turn(engine: BacoEngine) -> None:
    """Concurrent calls from threads give what each call gives alone (same seed)."""
    llm = BacoLLM(engine=engine, max_new_tokens=12, router="P-PUNC", gamma=0.4)
    jobs = [(f"Idea number {i}", i) for i in range(6)]
    alone = [llm.invoke(prompt, seed=seed) for prompt, seed in jobs]
    streamed_alone = "".join(llm.stream("Idea number 0", seed=0))

    def run(job: tuple[str, int]) -> str:
        prompt, seed = job
        if seed % 3 == 0:  # mix streams in with the invokes
            return "".join(llm.stream(prompt, seed=seed))
        return llm.invoke(prompt, seed=seed)

    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(run, jobs))
    assert streamed_alone == alone[0]
    assert together == alone


def test_chat_batch_with_max_concurrency(engine: BacoEngine) -> None:
    """ChatBaco.batch runs invokes in a thread pool; the engine's lock serialises them."""
    chat = ChatBaco(engine=engine, max_new_tokens=10, seed=7)
    prompts = ["Hello", "Hey", "Name a cat", "Ideas for a party"]
    alone = [chat.invoke(p).content for p in prompts]
    together = chat.batch(prompts, config={"max_concurrency": 3})
    assert [m.content for m in together] == alone


def test_llm_batch_with_max_concurrency(engine: BacoEngine) -> None:
    """BaseLLM.batch with max_concurrency decodes sub-batches; greedy rows match solo runs."""
    llm = BacoLLM(engine=engine, max_new_tokens=10, temperature=0, router="P-PUNC")
    prompts = ["Hello", "Hey", "Name a cat", "Ideas for a party", "Why?"]
    assert llm.batch(prompts, config={"max_concurrency": 2}) == [llm.invoke(p) for p in prompts]


# ------------------------------------------------------------------------ helpers


def test_source_tracker_reads_per_token_sources() -> None:
    tracker = SourceTracker()
    chunk = BacoChunk("xy", "base", (1, 2), sources=("aligned", "base"))
    assert tracker.add(chunk) == ["aligned", "base"]
    assert tracker.add(BacoChunk("", None, (3,), sources=("base",), finish_reason="length")) == [
        "base"
    ]
    assert tracker.sources == ["aligned", "base", "base"]
    assert tracker.base_fraction == 2 / 3
    assert SourceTracker().base_fraction == 0.0


async def test_cancelled_ainvoke_stops_decoding_and_frees_the_engine(engine) -> None:
    llm = BacoLLM(engine=engine, max_new_tokens=400, router="P", seed=0)
    task = asyncio.create_task(llm.ainvoke("Ideas for a coffee shop"))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the engine stopped early and its lock is free again
    assert engine.last_stats.steps < 400
    assert engine._lock.acquire(timeout=5)
    engine._lock.release()


async def test_iterate_in_thread_closes_the_iterator_in_its_thread() -> None:
    events: list[str] = []
    loop_thread = threading.get_ident()

    def numbers() -> Iterator[int]:
        try:
            for i in range(1000):
                assert threading.get_ident() != loop_thread
                events.append(f"made {i}")
                yield i
        finally:
            events.append("closed")

    stream = await iterate_in_thread(numbers)
    got = []
    async for item in stream:
        got.append(item)
        if item == 2:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    assert got == [0, 1, 2]
    assert events[-1] == "closed"
    assert len(events) <= 3 + AHEAD + 2  # stopped within a few items


async def test_iterate_in_thread_passes_errors_and_items() -> None:
    def failing() -> Iterator[BacoChunk]:
        yield BacoChunk(text="a", source="base")
        raise RuntimeError("boom")

    got = []
    with pytest.raises(RuntimeError, match="boom"):
        async for chunk in await iterate_in_thread(failing):
            got.append(chunk.text)
    assert got == ["a"]
