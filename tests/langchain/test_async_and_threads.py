"""Event-loop friendliness, early stops and cancellation, and threads sharing one engine.

No test here reads the clock to decide anything: a test that needs decoding to be under way
(to cancel it, or to see the event loop run during it) observes it through
:class:`DecodingGate`, so its verdict is the same on a machine ten times faster or slower.
:data:`HANG_GUARD_S` only bounds how long a broken adapter makes a test hang before it fails;
no passing run waits for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch

from baco_integrations import BacoChunk, BacoEngine, RouterInputs
from baco_integrations._streaming import AHEAD, SourceTracker, iterate_in_thread
from baco_integrations.config import Source
from baco_integrations.langchain import BacoLLM, ChatBaco

STORY = "Tell me a story"

#: Upper bound of every wait on something that must happen, so that a bug fails the test
#: rather than hanging it. Passing runs never reach it.
HANG_GUARD_S = 60.0


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


@pytest.fixture(scope="module")
def long_run(engine: BacoEngine) -> dict[str, Any]:
    """Settings under which ``STORY`` decodes past 100 tokens, as a plain prompt and as a chat
    message: a stop after a few chunks then means something."""
    for seed in range(20):
        settings = {"router": "base", "max_new_tokens": 200, "seed": seed}
        prompts = [STORY, [{"role": "user", "content": STORY}]]
        outputs = BacoEngine.generate(engine, prompts, **settings)
        if all(samples[0].num_tokens > 100 for samples in outputs):
            return settings
    pytest.skip("every seed ended the story early")


async def engine_released(engine: BacoEngine) -> bool:
    """Wait until no call holds the engine's lock (released once the decoding that holds it
    has stopped); False only when the hang guard ran out.

    The wait blocks a worker thread, not the event loop, which must stay free to finalise
    dropped streams.
    """

    def acquire_and_release() -> bool:
        if not engine._lock.acquire(timeout=HANG_GUARD_S):
            return False
        engine._lock.release()
        return True

    return await asyncio.to_thread(acquire_and_release)


# ------------------------------------------------------------------------ async


async def test_ainvoke_and_astream_do_not_block_the_loop(engine: BacoEngine) -> None:
    """The loop runs a coroutine while the engine is held mid-decoding; were the engine run on
    the loop, that coroutine could not release it."""
    llm = BacoLLM(engine=engine, max_new_tokens=12, seed=1)
    gate = DecodingGate()
    text, _ = await asyncio.gather(llm.ainvoke(STORY, router=gate), gate.release_once_started())
    assert text and gate.went

    gate = DecodingGate()

    async def consume() -> list[str]:
        return [p async for p in llm.astream(STORY, router=gate)]

    pieces, _ = await asyncio.gather(consume(), gate.release_once_started())
    assert "".join(pieces) == text and gate.went


@pytest.mark.parametrize("adapter", [BacoLLM, ChatBaco])
async def test_astream_stopped_early_stops_decoding(
    engine: BacoEngine, adapter: type, long_run: dict[str, Any]
) -> None:
    llm = adapter(engine=engine, **long_run)
    stream = llm.astream(STORY)
    async for _ in stream:
        break
    await stream.aclose()
    assert await engine_released(engine)
    # the worker ran at most a few chunks ahead before it saw the stop
    assert engine.last_stats.steps < 20 + AHEAD
    assert await llm.ainvoke("Hi", max_new_tokens=4)  # the engine is usable again


@pytest.mark.parametrize("adapter", [BacoLLM, ChatBaco])
async def test_cancelled_astream_releases_the_engine(
    engine: BacoEngine, adapter: type, long_run: dict[str, Any]
) -> None:
    llm = adapter(engine=engine, **long_run)
    started = asyncio.Event()

    async def stalled_consumer() -> None:
        async for _ in llm.astream(STORY):
            started.set()
            await asyncio.Event().wait()  # never set: stays here until cancelled

    task = asyncio.create_task(stalled_consumer())
    await asyncio.wait_for(started.wait(), HANG_GUARD_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await engine_released(engine)
    # the worker ran at most a few chunks ahead of the stalled consumer
    assert engine.last_stats.steps < 20 + AHEAD
    assert await llm.ainvoke("Hi", max_new_tokens=4)


async def test_astream_error_surfaces(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, max_new_tokens=4)
    too_long = "word " * 2000  # longer than the tiny models' 512-token context
    with pytest.raises(ValueError, match="too long"):
        [c async for c in llm.astream(too_long)]
    assert not engine._lock.locked()  # refused before decoding took the engine


def test_sync_stream_closed_early_releases_the_engine(
    engine: BacoEngine, long_run: dict[str, Any]
) -> None:
    llm = ChatBaco(engine=engine, **long_run)
    stream = llm.stream(STORY)
    next(stream)
    assert engine._lock.locked()
    stream.close()  # closes the generators inside it, the engine's stream among them
    assert not engine._lock.locked()
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


async def test_cancelled_ainvoke_stops_decoding_and_frees_the_engine(
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
    task = asyncio.create_task(llm.ainvoke("Ideas for a coffee shop"))
    await asyncio.wait_for(gate.started.wait(), HANG_GUARD_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.went  # the cancel event reached the engine while it was decoding
    # The engine checks it after every step: it stopped after the held one, and the awaited
    # worker has released the engine's lock.
    assert engine.last_stats.steps == 1
    assert not engine._lock.locked()


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
