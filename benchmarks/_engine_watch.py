"""What the concurrency benchmarks read from an engine in their own process: the time of its
first decoding step after a mark (a batched call's time to first token), a signal per step
(callers started one step apart) and the work it did (steps, prefill rounds, forwards)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from baco_integrations import BacoEngine


def work(engine: BacoEngine) -> dict[str, int]:
    """The engine's work so far (subtract two readings for one mode's)."""
    load = engine.load()
    return {
        "steps": load.steps,
        "prefill_rounds": load.prefill_rounds,
        "base_forwards": load.base_forward_passes,
        "aligned_forwards": load.aligned_forward_passes,
    }


class StepWatch:
    """Times the engine's first decoding step after :meth:`arm` (every row of a batched call
    gets its first token at that step), and tells an asyncio loop of each step."""

    def __init__(self, engine: BacoEngine) -> None:
        self.start, self.at = 0.0, 0.0
        self.listeners: list[Callable[[], None]] = []
        batch = engine.scheduler.batch
        step = getattr(batch.step, "__wrapped__", batch.step)

        def watched_step() -> Any:
            changed = step()
            if not self.at:
                self.at = time.perf_counter()
            for listener in list(self.listeners):
                listener()
            return changed

        watched_step.__wrapped__ = step  # type: ignore[attr-defined]
        batch.step = watched_step  # type: ignore[method-assign]

    def arm(self) -> None:
        self.start, self.at = time.perf_counter(), 0.0

    def first_step_s(self) -> float:
        return self.at - self.start if self.at else float("nan")

    async def next_step(self, caller: asyncio.Task[Any]) -> None:
        """Return after the engine's next step (or once ``caller`` ended: no step may come)."""
        loop, stepped = asyncio.get_running_loop(), asyncio.Event()

        def listener() -> None:
            loop.call_soon_threadsafe(stepped.set)

        self.listeners.append(listener)
        try:
            waiter = asyncio.ensure_future(stepped.wait())
            await asyncio.wait([waiter, caller], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        finally:
            self.listeners.remove(listener)
