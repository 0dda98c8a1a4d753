"""Event-loop friendliness, early stops and cancellation, and threads sharing one engine.

No test here reads the clock to decide anything. One that needs decoding to be under way (to
cancel it, to stop a stream, to see the event loop run during it) holds it at a known step
with a ``DecodingGate`` router; one that waits for decoding to stop waits for the engine to
go idle (``EngineWatch``, both in conftest.py). Each verdict is the same on a machine ten
times faster or slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from baco_integrations import BacoEngine
from baco_integrations.langchain import BacoLLM, ChatBaco

STORY = "Tell me a story"

#: Makes a DecodingGate router (conftest.py); ``hold_from_step=`` picks the step it holds.
MakeGate = Callable[..., Any]


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


# ------------------------------------------------------------------------ async


async def test_ainvoke_and_astream_do_not_block_the_loop(
    engine: BacoEngine, make_gate: MakeGate
) -> None:
    """The loop runs a coroutine while the engine is held mid-decoding; were the call made on
    the loop (blocking it), that coroutine could not release the engine."""
    llm = BacoLLM(engine=engine, max_new_tokens=12, seed=1)
    gate = make_gate()
    text, _ = await asyncio.gather(llm.ainvoke(STORY, router=gate), gate.release_once_held())
    assert text and gate.went

    gate = make_gate()

    async def consume() -> list[str]:
        return [p async for p in llm.astream(STORY, router=gate)]

    pieces, _ = await asyncio.gather(consume(), gate.release_once_held())
    assert "".join(pieces) == text and gate.went


@pytest.mark.parametrize("adapter", [BacoLLM, ChatBaco])
async def test_astream_stopped_early_stops_decoding(
    adapter: type, long_run: dict[str, Any], watch: Any, make_gate: MakeGate
) -> None:
    gate = make_gate(hold_from_step=1)
    llm = adapter(engine=watch.engine, **{**long_run, "router": gate})
    stream = llm.astream(STORY)
    async for _ in stream:
        break
    await gate.until_held()  # decoding is held at a known step while the consumer stops
    await stream.aclose()
    await watch.closed()  # the engine's stream was closed: the call left the batch
    gate.go.set()
    await watch.idle()
    # decoding ended with the step that was running when the consumer stopped
    assert gate.went and watch.steps == gate.held_at + 1
    assert await llm.ainvoke("Hi", max_new_tokens=4, router="base")  # usable again


@pytest.mark.parametrize("adapter", [BacoLLM, ChatBaco])
async def test_cancelled_astream_releases_the_engine(
    adapter: type, long_run: dict[str, Any], watch: Any, make_gate: MakeGate
) -> None:
    gate = make_gate(hold_from_step=1)
    llm = adapter(engine=watch.engine, **{**long_run, "router": gate})
    started = asyncio.Event()

    async def stalled_consumer() -> None:
        async for _ in llm.astream(STORY):
            started.set()
            await asyncio.Event().wait()  # never set: stays here until cancelled

    task = asyncio.create_task(stalled_consumer())
    await started.wait()
    await gate.until_held()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await watch.closed()
    gate.go.set()
    await watch.idle()
    assert gate.went and watch.steps == gate.held_at + 1
    assert await llm.ainvoke("Hi", max_new_tokens=4, router="base")


async def test_astream_error_surfaces(watch: Any) -> None:
    llm = BacoLLM(engine=watch.engine, max_new_tokens=4)
    too_long = "word " * 2000  # longer than the tiny models' 512-token context
    with pytest.raises(ValueError, match="too long"):
        [c async for c in llm.astream(too_long)]
    await watch.idle()
    assert watch.steps == 0  # refused before any decoding


def test_sync_stream_closed_early_releases_the_engine(
    long_run: dict[str, Any], watch: Any, make_gate: MakeGate
) -> None:
    gate = make_gate(hold_from_step=1)
    llm = ChatBaco(engine=watch.engine, **{**long_run, "router": gate})
    stream = llm.stream(STORY)
    next(stream)
    gate.wait_until_held()
    stream.close()  # closes the generators inside it, the engine's stream among them
    assert watch.stream_closed.is_set()
    gate.go.set()
    watch.wait_idle()
    assert gate.went and watch.steps == gate.held_at + 1


async def test_cancelled_ainvoke_stops_decoding_and_frees_the_engine(
    long_run: dict[str, Any], watch: Any, make_gate: MakeGate
) -> None:
    """Cancelled while decoding is held at its first step, the call leaves the engine's batch
    before the next step, however fast the machine is."""
    gate = make_gate()
    llm = BacoLLM(engine=watch.engine, **{**long_run, "router": gate})
    task = asyncio.create_task(llm.ainvoke(STORY))
    await gate.until_held()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.go.set()
    await watch.idle()
    assert gate.went and watch.steps == gate.held_at + 1 == 1
    assert await llm.ainvoke("Hi", max_new_tokens=2, router="base")  # the engine is free


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
    """ChatBaco.batch with max_concurrency decodes sub-batches; replies are as alone."""
    chat = ChatBaco(engine=engine, max_new_tokens=10, seed=7)
    prompts = ["Hello", "Hey", "Name a cat", "Ideas for a party"]
    alone = [chat.invoke(p).content for p in prompts]
    together = chat.batch(prompts, config={"max_concurrency": 3})
    assert [m.content for m in together] == alone


def test_chat_batch_shares_decoding_steps(engine: BacoEngine) -> None:
    """Eight prompts in one ChatBaco.batch are decoded together: far fewer steps than eight
    calls one after another, and each reply as it is alone (test_chat_batch.py: one call)."""
    chat = ChatBaco(engine=engine, max_new_tokens=12, seed=3, router="random")
    prompts = [f"Idea number {i}" for i in range(8)]
    alone = [chat.invoke(p).content for p in prompts]
    before = engine.scheduler.steps
    together = chat.batch(prompts)
    assert [m.content for m in together] == alone
    assert engine.scheduler.steps - before < 8 * 12 / 2


def test_seeded_llm_batch_equals_each_prompt_alone(engine: BacoEngine) -> None:
    """A seeded prompt gives the same text whatever else is in the batch."""
    llm = BacoLLM(engine=engine, max_new_tokens=12, seed=5, router="random")
    prompts = ["Hello", "Hey", "Name a cat", "Ideas for a party", "Why?"]
    assert llm.batch(prompts) == [llm.invoke(p) for p in prompts]
    assert llm.batch(prompts[::-1]) == [llm.invoke(p) for p in prompts[::-1]]


def test_llm_batch_with_max_concurrency(engine: BacoEngine) -> None:
    """BaseLLM.batch with max_concurrency decodes sub-batches; greedy rows match solo runs."""
    llm = BacoLLM(engine=engine, max_new_tokens=10, temperature=0, router="P-PUNC")
    prompts = ["Hello", "Hey", "Name a cat", "Ideas for a party", "Why?"]
    assert llm.batch(prompts, config={"max_concurrency": 2}) == [llm.invoke(p) for p in prompts]


# ------------------------------------------------------------------------ helpers
