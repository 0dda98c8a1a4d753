"""Continuous batching: concurrent calls share decoding steps and each gets what it would alone.

No test here reads the clock: progress is observed through chunks, events and the scheduler's
own counters.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch

from baco_integrations import BacoEngine, DecodingCancelled, EngineLimits, EngineOverloaded
from baco_integrations.decoding import RunningBatch
from baco_integrations.decoding.scheduler import THREAD_NAME
from baco_integrations.runners import TransformersRunner
from baco_integrations.testing import DecodingGate

LONG = "Write a poem about the sea."
#: Calls with different routers, gammas, gates, samplers, stops, lengths and n (seeded).
MIXED: list[tuple[Any, dict[str, Any]]] = [
    (LONG, {"router": "P-PUNC", "gamma": 0.5, "n": 2, "max_new_tokens": 30, "top_k": 50}),
    (["Why?", "Ideas"], {"router": "random", "gamma": 0.4, "temperature": 0.7, "seed": 7}),
    ("Hello there", {"router": "aligned", "n": 3, "stop": ["e"], "max_new_tokens": 20}),
    ("A list", {"router": "H", "gamma": 1.5, "gate": "aligned", "top_p": 0.9, "min_p": 0.05}),
    ("Names", {"router": "nudging", "gamma": 0.3, "lazy": False, "max_new_tokens": 16}),
    ("Fast", {"router": "P", "gamma": 0.6, "temperature": 0.0, "max_new_tokens": 12}),
]


def ids(outputs: list[list[Any]]) -> list[list[tuple[int, ...]]]:
    return [[o.token_ids for o in row] for row in outputs]


def seeded(kwargs: dict[str, Any], seed: int) -> dict[str, Any]:
    return {"seed": seed, "max_new_tokens": 24, **kwargs}


def test_concurrent_seeded_calls_equal_each_call_alone(any_engine: BacoEngine) -> None:
    calls = [(p, seeded(kw, i)) for i, (p, kw) in enumerate(MIXED)] * 2
    alone = [any_engine.generate(p, **kw) for p, kw in calls]
    steps_alone = any_engine.scheduler.steps
    with ThreadPoolExecutor(len(calls)) as pool:
        together = list(pool.map(lambda c: any_engine.generate(c[0], **c[1]), calls))
    assert [ids(o) for o in together] == [ids(o) for o in alone]
    # they shared steps: far fewer than one run after another
    assert any_engine.scheduler.steps - steps_alone < steps_alone / 2


def test_joining_mid_decode_equals_alone_in_the_batch(any_engine: BacoEngine) -> None:
    """Rows join a running batch (caches merged) and leave it; nobody's tokens change."""
    requests = [
        any_engine.prepare(p, any_engine.resolve_settings(**seeded(kw, 3))) for p, kw in MIXED
    ]
    alone = [any_engine.generate(p, **seeded(kw, 3)) for p, kw in MIXED]
    batch = RunningBatch(any_engine.pair)
    for request in requests:
        batch.join([request])
        for _ in range(3):
            if not batch.empty:
                batch.step()
    while not batch.empty:
        batch.step()
    assert [ids(r.outputs()) for r in requests] == [ids(o) for o in alone]


def test_a_short_call_joins_a_long_one_and_finishes_after_its_own_length(
    any_engine: BacoEngine,
) -> None:
    long_kwargs = {"router": "P-PUNC", "max_new_tokens": 200, "seed": 0}
    short_kwargs = {"router": "random", "max_new_tokens": 8, "seed": 1}
    long_alone = any_engine.generate(LONG, **long_kwargs)
    long_steps = any_engine.last_stats.steps
    short_alone = any_engine.generate("Hi", **short_kwargs)
    short_steps = any_engine.last_stats.steps
    stream = any_engine.stream(LONG, **long_kwargs)
    first = next(stream)  # the long call is decoding
    short = any_engine.generate("Hi", **short_kwargs)
    # it joined within the admission wait and finished after its own steps, while the long
    # one ran
    assert any_engine.last_stats.waited_steps <= any_engine.limits.admission_wait_steps
    assert any_engine.last_stats.steps == short_steps
    assert not first.finish_reason
    rest = list(stream)
    assert rest[-1].finish_reason is not None and rest[-1].output is not None
    assert rest[-1].output.token_ids == long_alone[0][0].token_ids
    assert first.text + "".join(c.text for c in rest) == long_alone[0][0].text
    assert ids(short) == ids(short_alone)
    assert any_engine.last_stats.steps == long_steps  # the stream's own stats, as alone


def test_cancelling_one_call_leaves_the_others_unchanged(any_engine: BacoEngine) -> None:
    kwargs = [seeded(kw, 5) for _, kw in MIXED[:3]]
    alone = [any_engine.generate(p, **kw) for (p, _), kw in zip(MIXED, kwargs, strict=False)]
    doomed = any_engine.stream(LONG, router="base", max_new_tokens=200, seed=0)
    next(doomed)
    cancel = threading.Event()
    with ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(any_engine.generate, p, **kw)
            for (p, _), kw in zip(MIXED, kwargs, strict=False)
        ]
        cancelled = pool.submit(
            any_engine.generate, LONG, router="H", max_new_tokens=300, cancel=cancel
        )
        doomed.close()  # an abandoned stream leaves too
        cancel.set()
        with pytest.raises(DecodingCancelled):
            cancelled.result()
        assert [ids(f.result()) for f in futures] == [ids(o) for o in alone]
    assert any_engine.scheduler.wait_idle(timeout=60)
    assert any_engine.scheduler.live_rows == 0


def test_a_call_made_inside_a_stream_loop_runs(any_engine: BacoEngine) -> None:
    """Once a deadlock: the stream held the engine's lock that generate waited for."""
    inner = []
    for chunk in any_engine.stream(LONG, max_new_tokens=6, seed=2):
        inner.append(any_engine.generate(chunk.text or "x", max_new_tokens=3, seed=2))
    assert inner and all(len(o[0]) == 1 for o in inner)


def test_a_router_may_not_call_the_engine(engine: BacoEngine) -> None:
    def calls_back(inputs: Any) -> torch.Tensor:
        engine.generate("again", max_new_tokens=2)
        return torch.zeros(inputs.batch_size, dtype=torch.bool)

    with pytest.raises(RuntimeError, match="decoding thread"):
        engine.generate("hi", router=calls_back, max_new_tokens=4)
    assert engine.generate("hi", max_new_tokens=2)[0][0].num_tokens <= 2


def test_a_failing_router_fails_only_its_own_call(engine: BacoEngine) -> None:
    def broken(inputs: Any) -> torch.Tensor:
        raise ZeroDivisionError("bad router")

    good_alone = engine.generate("Ideas", router="random", max_new_tokens=20, seed=3)
    stream = engine.stream("Ideas", router="random", max_new_tokens=20, seed=3)
    next(stream)  # the good call is in the batch
    with pytest.raises(ZeroDivisionError):
        engine.generate("hi", router=broken, max_new_tokens=4)
    chunks = list(stream)
    assert chunks[-1].output is not None
    assert chunks[-1].output.token_ids == good_alone[0][0].token_ids


async def test_a_timeout_fires_while_another_call_decodes(engine: BacoEngine) -> None:
    """The waiter leaves at once, without waiting for the loop (which the gate holds)."""
    gate = DecodingGate()
    held = asyncio.ensure_future(engine.agenerate("hold", router=gate, max_new_tokens=4))
    await gate.until_held()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(engine.agenerate(LONG, max_new_tokens=50), timeout=0.05)
    assert engine.scheduler.waiting + engine.scheduler.live_rows >= 1
    gate.go.set()
    await held
    assert await asyncio.to_thread(engine.scheduler.wait_idle, 60)
    assert engine.scheduler.live_rows == 0 and engine.scheduler.waiting == 0


async def test_async_calls_share_steps_and_equal_alone(any_engine: BacoEngine) -> None:
    calls = [(p, seeded(kw, i)) for i, (p, kw) in enumerate(MIXED)]
    alone = [any_engine.generate(p, **kw) for p, kw in calls]
    threads = threading.active_count()
    together = await asyncio.gather(*(any_engine.agenerate(p, **kw) for p, kw in calls))
    assert [ids(o) for o in together] == [ids(o) for o in alone]
    streamed = [c async for c in any_engine.astream(*calls[0][:1], **calls[0][1])]
    finals = [c.output for c in streamed if c.output is not None]
    assert [o.token_ids for o in finals] == [o.token_ids for o in alone[0][0]]
    assert threading.active_count() <= threads + 1  # the loop's one thread, no thread per call


async def test_astream_validates_at_the_call_and_closes_cleanly(engine: BacoEngine) -> None:
    with pytest.raises(ValueError, match="gamma"):
        engine.astream("hi", router="P", gamma=7)
    stream = engine.astream(LONG, max_new_tokens=200, seed=0)
    async for _ in stream:
        break
    await stream.aclose()
    assert await asyncio.to_thread(engine.scheduler.wait_idle, 60)


def _scheduler_threads() -> int:
    return sum(t.name == THREAD_NAME for t in threading.enumerate())


def test_two_hundred_cancelled_streams_leave_nothing_behind(any_engine: BacoEngine) -> None:
    assert any_engine.scheduler.wait_idle(timeout=60)
    threads = threading.active_count()
    for i in range(200):
        stream = any_engine.stream(LONG, max_new_tokens=100, seed=i)
        next(stream)
        stream.close()
    assert any_engine.scheduler.wait_idle(timeout=60)
    gc.collect()
    assert threading.active_count() == threads and _scheduler_threads() == 0
    batch = any_engine.scheduler.batch
    assert batch.empty and batch.requests == []
    for member in any_engine.pair.members:
        runner = member.runner
        assert isinstance(runner, TransformersRunner)
        assert runner.rows == 0 and runner.cache is None


def test_limits_queue_and_refuse(tiny_pair: Any) -> None:
    limits = EngineLimits(max_live_rows=2, max_waiting=1, max_prefill_tokens=1)
    engine = BacoEngine.from_pretrained(tiny_pair.base_dir, tiny_pair.aligned_dir, limits=limits)
    with pytest.raises(ValueError, match="max_live_rows=2"):
        engine.generate("hi", n=3)
    # The default base share's one-off calibration, done before the loop is held: it would
    # otherwise be the call waiting in the queue.
    engine.share_calibration()
    gate = DecodingGate()
    with ThreadPoolExecutor(3) as pool:
        holding = pool.submit(engine.generate, "hold", router=gate, n=2, max_new_tokens=3)
        gate.wait_until_held()  # the batch is full (2 rows) and the loop is held
        queued = pool.submit(engine.generate, "next", max_new_tokens=3, seed=1)
        _wait_for(lambda: engine.scheduler.waiting == 1)
        with pytest.raises(EngineOverloaded, match="max_waiting=1"):
            engine.generate("one too many", max_new_tokens=3)
        gate.go.set()
        assert len(holding.result()[0]) == 2
        assert queued.result()[0][0].num_tokens <= 3


def _wait_for(condition: Callable[[], bool]) -> None:
    """Wait for another thread to reach a state, yielding the GIL (no assumption of speed)."""
    done = threading.Event()
    while not condition():
        done.wait(0.001)


class _StepHandshake:
    """Holds the scheduler after each step until the test says go: what the test does in
    between (submitting a call) happens between two known steps, however fast the machine."""

    def __init__(self, engine: BacoEngine) -> None:
        batch = self.batch = engine.scheduler.batch
        self.scheduler_waiting = lambda: engine.scheduler.waiting
        self._step = batch.step
        self.stepped = threading.Event()
        self.go = threading.Event()
        batch.step = self  # type: ignore[method-assign]

    def __call__(self) -> Any:
        changed = self._step()
        self.stepped.set()
        assert self.go.wait(60), "the test never let the scheduler go on"
        self.go.clear()
        return changed

    def next_step(self, between: Callable[[], None]) -> bool:
        """Run ``between`` after the next step; True when that step left nothing to do."""
        assert self.stepped.wait(60), "the scheduler took no step"
        self.stepped.clear()
        between()
        last = self.batch.empty and self.scheduler_waiting() == 0
        self.go.set()
        return last


@pytest.mark.parametrize("engine_kind", ["shared", "cross"])
def test_calls_arriving_one_step_apart_are_prefilled_in_two_rounds(
    engine_kind: str, tiny_pair: Any, tiny_cross_pair: Any
) -> None:
    pair = tiny_pair if engine_kind == "shared" else tiny_cross_pair
    engine = BacoEngine.from_pretrained(pair.base_dir, pair.aligned_dir)
    calls = [(f"Idea number {i}", {"max_new_tokens": 12, "seed": i}) for i in range(8)]
    calls[0] = (LONG, {"max_new_tokens": 40, "seed": 0, "router": "aligned"})
    alone = [engine.generate(p, **kw) for p, kw in calls]
    handshake = _StepHandshake(engine)
    rounds = engine.scheduler.prefill_rounds
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(engine.generate, calls[0][0], **calls[0][1])]
        for k, (prompt, kwargs) in enumerate(calls[1:], start=1):

            def submit(prompt: str = prompt, kwargs: dict[str, Any] = kwargs, k: int = k) -> None:
                futures.append(pool.submit(engine.generate, prompt, **kwargs))
                _wait_for(lambda: engine.scheduler.waiting == k)

            handshake.next_step(submit)
        assert engine.scheduler.live_rows == 1  # the first call alone: all seven still wait
        while not handshake.next_step(lambda: None):
            pass
        together = [f.result() for f in futures]
    assert engine.scheduler.prefill_rounds - rounds == 2
    assert [ids(o) for o in together] == [ids(o) for o in alone]
    for (_, kwargs), output in zip(calls[1:], together[1:], strict=True):
        assert output[0][0].num_tokens <= kwargs["max_new_tokens"]


def test_a_burst_joins_at_the_next_step(engine: BacoEngine) -> None:
    """More rows arriving in one step than are running join at once, not after the wait."""
    gate = DecodingGate()
    with ThreadPoolExecutor(2) as pool:
        holding = pool.submit(engine.generate, LONG, router=gate, max_new_tokens=20)
        gate.wait_until_held()
        burst = pool.submit(engine.generate, ["a", "b"], max_new_tokens=4, seed=1)
        _wait_for(lambda: engine.scheduler.waiting == 1)
        gate.go.set()
        burst.result()
        assert engine.last_stats.waited_steps <= 1
        holding.result()
