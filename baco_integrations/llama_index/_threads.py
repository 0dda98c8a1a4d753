"""Running the engine's blocking iterators off the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import closing
from typing import Any, TypeVar

T = TypeVar("T")

#: Prefix of the worker threads' names (tests look for leftovers by it).
THREAD_NAME = "baco-llama-index-stream"


async def iterate_in_thread(make_iterator: Callable[[], Iterator[T]]) -> AsyncGenerator[T, None]:
    """Create, advance and close a blocking iterator in one worker thread.

    Returns once ``make_iterator()`` has run, so validation errors raise here, in the caller,
    rather than at the first ``__anext__``. The iterator lives in a dedicated thread (not the
    default executor, which a long stream would tie up) so the engine's lock is taken and
    released there and the loop never blocks. When the consumer stops early (``break`` then
    garbage collection, ``aclose()``, cancellation) the worker stops after the item it is
    producing and closes the iterator, which stops decoding and releases the engine; closing
    the returned generator waits for that, without blocking the loop.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    created: asyncio.Future[None] = loop.create_future()
    finished: asyncio.Future[None] = loop.create_future()
    stop = threading.Event()

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

    def work() -> None:
        try:
            try:
                iterator = make_iterator()
            except BaseException as exc:  # re-raised by the caller
                notify(settle, created, exc)
                return
            notify(settle, created, None)
            with closing(iterator):  # type: ignore[type-var]
                # stop is checked before every step, the first included (a cancelled caller).
                while not stop.is_set():
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

    # copy_context: instrumentation and tracing context variables reach the worker too.
    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(work,), name=THREAD_NAME, daemon=True)
    worker.start()
    try:
        await created
    except BaseException:
        stop.set()  # a cancelled caller: the worker closes the iterator after one item
        raise
    return _consume(queue, stop, finished)


async def _consume(
    queue: asyncio.Queue[tuple[str, Any]], stop: threading.Event, finished: asyncio.Future[None]
) -> AsyncGenerator[Any, None]:
    """Hand the worker's items to the loop; on exit, stop the worker and wait for it."""
    try:
        while True:
            kind, value = await queue.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        # shield: a second cancellation must not abandon the wait half-way; the worker
        # finishes on its own either way.
        await asyncio.shield(finished)
