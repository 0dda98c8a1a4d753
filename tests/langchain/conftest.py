"""LangChain adapter fixtures: seeing decoding from a test without reading the clock.

A test that needs decoding to be under way (to cancel it, to stop a stream, to see the event
loop run during it) observes it through :class:`DecodingGate`; one that waits for decoding to
stop waits for the engine's decoding thread to end (:class:`EngineWatch`). No verdict depends
on how fast the machine is. :data:`HANG_GUARD_S` only bounds how long a broken adapter makes
a test hang before it fails; no passing run waits for it. (tests/llama_index/conftest.py has
the same two helpers.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from baco_integrations import BacoEngine
from baco_integrations.testing import HANG_GUARD_S, DecodingGate


class EngineWatch:
    """What a test sees of an engine: its streams being closed, the steps it has run since the
    watch began, and the end of its decoding."""

    def __init__(self, engine: BacoEngine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.engine = engine
        self.steps_before = engine.scheduler.steps
        #: Set once a stream of the engine is closed: its call has left the engine's batch.
        self.stream_closed = threading.Event()
        stream, astream = engine.stream, engine.astream

        def closed_stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
            chunks = stream(*args, **kwargs)  # validates now, like the engine

            def iterate() -> Iterator[Any]:
                try:
                    yield from chunks
                finally:
                    chunks.close()  # type: ignore[attr-defined]
                    self.stream_closed.set()

            return iterate()

        def closed_astream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            chunks = astream(*args, **kwargs)  # validates now, like the engine

            async def iterate() -> AsyncIterator[Any]:
                try:
                    async for chunk in chunks:
                        yield chunk
                finally:
                    await chunks.aclose()  # type: ignore[attr-defined]
                    self.stream_closed.set()

            return iterate()

        monkeypatch.setattr(engine, "stream", closed_stream)
        monkeypatch.setattr(engine, "astream", closed_astream)

    @property
    def steps(self) -> int:
        """Decoding steps the engine has run since the watch began."""
        return self.engine.scheduler.steps - self.steps_before

    def wait_idle(self) -> None:
        """Wait until the engine decodes nothing: no call live or waiting."""
        assert self.engine.scheduler.wait_idle(HANG_GUARD_S), "the engine kept decoding"

    async def idle(self) -> None:
        """:meth:`wait_idle` off the event loop, which stays free to finalise streams."""
        await asyncio.to_thread(self.wait_idle)

    async def closed(self) -> None:
        """Return once a stream of the engine has been closed (waiting off the loop)."""
        assert await asyncio.to_thread(self.stream_closed.wait, HANG_GUARD_S), "never closed"


@pytest.fixture
def watch(engine: BacoEngine, monkeypatch: pytest.MonkeyPatch) -> EngineWatch:
    return EngineWatch(engine, monkeypatch)


@pytest.fixture
def make_gate() -> Callable[..., DecodingGate]:
    return DecodingGate
