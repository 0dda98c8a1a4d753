"""Running the engine off an event loop: what both framework adapters share.

Nothing here knows LangChain or LlamaIndex; the adapters import it.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import closing, suppress
from typing import Any, TypeVar

from .config import GenerationSettings, Source
from .engine import BacoEngine, DecodingCancelled
from .outputs import BacoChunk, BacoOutput

T = TypeVar("T")

#: How many items a stream's worker may produce ahead of its consumer. Small, so that an
#: abandoned or slow stream does not decode far ahead of what anyone reads.
AHEAD = 4

#: Name of the stream worker threads (tests look for leftovers by it).
THREAD_NAME = "baco-stream"


class SourceTracker:
    """Per-token sources of one streamed sample, accumulated from its chunks."""

    def __init__(self) -> None:
        self.sources: list[Source] = []

    def add(self, chunk: BacoChunk) -> list[Source]:
        """The sources of ``chunk``'s tokens, remembered for :attr:`base_fraction`."""
        self.sources.extend(chunk.sources)
        return list(chunk.sources)

    @property
    def base_fraction(self) -> float:
        if not self.sources:
            return 0.0
        return sum(s == "base" for s in self.sources) / len(self.sources)


async def generate_in_thread(
    engine: BacoEngine, prompts: list[Any], settings: GenerationSettings
) -> list[list[BacoOutput]]:
    """``engine.generate`` in a worker thread; cancelling the caller stops the decoding.

    Without the cancel event a cancelled ``ainvoke``/``acomplete`` would leave its thread
    decoding to the end while holding the engine's lock.
    """
    cancel = threading.Event()
    worker = asyncio.ensure_future(
        asyncio.to_thread(engine.generate, prompts, settings=settings, cancel=cancel)
    )
    try:
        return await asyncio.shield(worker)
    except asyncio.CancelledError:
        cancel.set()
        with suppress(DecodingCancelled):
            await worker  # the engine stops after its current step and frees its lock
        raise


async def iterate_in_thread(make_iterator: Callable[[], Iterator[T]]) -> AsyncGenerator[T, None]:
    """Create, advance and close a blocking iterator in one worker thread.

    Returns once ``make_iterator()`` has run, so validation errors raise in the caller rather
    than at the first ``__anext__``. The iterator lives in a dedicated thread (a long stream
    would tie up the default executor), so the engine's lock is taken and released there and
    the loop never blocks; context variables (tracing, instrumentation) are copied to it. The
    worker runs at most :data:`AHEAD` items ahead of the consumer. When the consumer stops
    early (``break``, ``aclose()``, cancellation) the worker stops and closes the iterator,
    which stops decoding and releases the engine; closing the returned generator waits for
    that without blocking the loop.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    created: asyncio.Future[None] = loop.create_future()
    finished: asyncio.Future[None] = loop.create_future()
    stop = threading.Event()
    room = threading.Semaphore(AHEAD)

    def notify(callback: Callable[..., object], *args: Any) -> None:
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            stop.set()

    def settle(future: asyncio.Future[None], error: BaseException | None) -> None:
        if future.done():  # cancelled by the caller
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def wait_for_room() -> bool:
        """Wait until the consumer has caught up; False once it is gone."""
        while not room.acquire(timeout=0.1):
            if stop.is_set():
                return False
        return not stop.is_set()

    def work() -> None:
        try:
            try:
                iterator = make_iterator()
            except BaseException as exc:  # re-raised by the caller
                notify(settle, created, exc)
                return
            notify(settle, created, None)
            with closing(iterator):  # type: ignore[type-var]
                while wait_for_room():
                    try:
                        item = next(iterator)
                    except StopIteration:
                        break
                    notify(queue.put_nowait, ("item", item))
        except BaseException as exc:  # re-raised in the consumer
            notify(queue.put_nowait, ("error", exc))
        else:
            notify(queue.put_nowait, ("done", None))
        finally:
            notify(settle, finished, None)

    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(work,), name=THREAD_NAME, daemon=True)
    worker.start()
    try:
        await created
    except BaseException:
        stop.set()  # a cancelled caller: the worker closes the iterator
        raise
    return _consume(queue, stop, room, finished)


async def _consume(
    queue: asyncio.Queue[tuple[str, Any]],
    stop: threading.Event,
    room: threading.Semaphore,
    finished: asyncio.Future[None],
) -> AsyncGenerator[Any, None]:
    """Hand the worker's items to the loop; on exit, stop the worker and wait for it."""
    try:
        while True:
            kind, value = await queue.get()
            if kind == "item":
                room.release()
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        room.release()  # wake a worker waiting for room, so that it sees the stop
        # shield: a second cancellation must not abandon the wait half-way; the worker
        # finishes on its own either way.
        await asyncio.shield(finished)
