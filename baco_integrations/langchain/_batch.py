"""Batches that stay batches: the inputs of one ``ChatBaco.batch``/``abatch`` reach the engine
in one call.

LangChain's ``Runnable.batch`` runs ``invoke`` on a thread pool sized by the machine's cores,
so a chat model's prompts would reach the engine in waves. ``ChatBaco.batch`` instead runs
every input's ``invoke`` at once (one thread, or one task, per input), each through LangChain's
own code path (its callbacks and run, its config, the cache), and meets them here: an input
whose ``_generate`` hands its conversation to the :class:`Rendezvous` waits until every input
has either handed one in or finished without one (a cache hit, an error, a stream); then the
conversations go to the engine together, one call per distinct settings (a batch's inputs
share their settings, so one call), and each input gets its own samples back.

A seeded sample is the same whatever else shares its call (:mod:`..decoding.randomness`), so
each input gets what its ``invoke`` alone would. If the shared call fails (a prompt too long,
one conversation the engine refuses), each of its inputs is decoded alone instead, so the
error is the failing input's only, as with separate ``invoke`` calls.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ..config import GenerationSettings
from ..engine import BacoEngine
from ..outputs import BacoOutput
from ..prompts import Prompt

#: One prompt's ``n`` samples.
Samples = list[BacoOutput]

#: The outcome of an input whose shared call failed: decode it in a call of its own.
_ALONE = object()


@dataclass
class _Entry:
    """A prompt handed in, with its call's settings."""

    prompt: Prompt
    settings: GenerationSettings


def plan(entries: dict[int, _Entry], max_rows: int) -> list[list[int]]:
    """The engine calls for the prompts handed in: those with equal settings together, in
    input order, at most ``max_rows`` rows (prompts x ``n``) per call."""
    groups: list[tuple[GenerationSettings, list[int]]] = []
    for index in sorted(entries):
        settings = entries[index].settings
        for known, members in groups:
            if known == settings:
                members.append(index)
                break
        else:
            groups.append((settings, [index]))
    calls: list[list[int]] = []
    for settings, members in groups:
        width = max(1, max_rows // settings.n)
        calls.extend(members[i : i + width] for i in range(0, len(members), width))
    return calls


def batch_width(engine: BacoEngine) -> int:
    """The most inputs one rendezvous takes: rows the engine decodes in one call and at once
    (a longer batch is several rendezvous, one after another)."""
    return max(1, min(engine.limits.max_rows, engine.limits.max_live_rows))


class _Rendezvous:
    """The bookkeeping both kinds share: which inputs are still open (neither handed a
    prompt in nor finished), the prompts handed in, and the calls planned once none is open
    (each led by its first input, which makes the call)."""

    def __init__(self, engine: BacoEngine, size: int) -> None:
        self.engine = engine
        self.open = set(range(size))
        self.entries: dict[int, _Entry] = {}
        #: The engine calls, by their leader (their first input), and each input's leader;
        #: set once none is open.
        self.calls: dict[int, list[int]] = {}
        self.leader: dict[int, int] = {}
        self.results: dict[int, Any] = {}

    def _resolve(self, index: int, entry: _Entry | None = None) -> bool:
        """Input ``index`` handed ``entry`` in (None: finished without); True when that
        closed the rendezvous (the calls are planned)."""
        if index not in self.open:
            return False
        self.open.discard(index)
        if entry is not None:
            self.entries[index] = entry
        if self.open:
            return False
        for call in plan(self.entries, batch_width(self.engine)):
            self.calls[call[0]] = call
            self.leader.update(dict.fromkeys(call, call[0]))
        return True

    def _prompts(self, call: list[int]) -> tuple[list[Prompt], GenerationSettings]:
        return [self.entries[i].prompt for i in call], self.entries[call[0]].settings

    @staticmethod
    def _failed(call: list[int], error: Exception) -> dict[int, Any]:
        """Each input of a failed call decodes alone (one alone already did: its error)."""
        return dict.fromkeys(call, error if len(call) == 1 else _ALONE)

    def _outcome(self, index: int) -> Any:
        result = self.results.pop(index)
        if isinstance(result, BaseException):
            raise result
        return result


class Rendezvous(_Rendezvous):
    """Threads' rendezvous: :meth:`submit` blocks until the input's samples are decoded."""

    def __init__(self, engine: BacoEngine, size: int) -> None:
        super().__init__(engine, size)
        self._cond = threading.Condition()

    def leave(self, index: int) -> None:
        """Input ``index`` is done, or decodes on its own: no call waits for it."""
        with self._cond:
            if self._resolve(index):
                self._cond.notify_all()

    def submit(self, index: int, prompt: Prompt, settings: GenerationSettings) -> Samples:
        """Input ``index``'s samples of ``prompt``, decoded with the other inputs'."""
        with self._cond:
            if self._resolve(index, _Entry(prompt, settings)):
                self._cond.notify_all()
            self._cond.wait_for(lambda: not self.open)
        if (call := self.calls.get(index)) is not None:
            self._run(call)
        with self._cond:
            self._cond.wait_for(lambda: index in self.results)
            outcome = self._outcome(index)
        if outcome is _ALONE:
            return self.engine.generate([prompt], settings=settings)[0]
        return outcome

    def _run(self, call: list[int]) -> None:
        prompts, settings = self._prompts(call)
        results: dict[int, Any]
        try:
            results = dict(zip(call, self.engine.generate(prompts, settings=settings), strict=True))
        except Exception as error:
            results = self._failed(call, error)
        except BaseException:
            self._publish(dict.fromkeys(call[1:], _ALONE))  # the others still get replies
            raise
        self._publish(results)

    def _publish(self, results: dict[int, Any]) -> None:
        with self._cond:
            self.results.update(results)
            self._cond.notify_all()


class AsyncRendezvous(_Rendezvous):
    """Tasks' rendezvous (one event loop): :meth:`submit` awaits the input's samples."""

    def __init__(self, engine: BacoEngine, size: int) -> None:
        super().__init__(engine, size)
        self._closed = asyncio.Event()
        self._done: dict[int, asyncio.Event] = {}

    def _close(self) -> None:
        self._done = {leader: asyncio.Event() for leader in self.calls}
        self._closed.set()

    def leave(self, index: int) -> None:
        """Input ``index`` is done, or decodes on its own: no call waits for it."""
        if self._resolve(index):
            self._close()

    async def submit(self, index: int, prompt: Prompt, settings: GenerationSettings) -> Samples:
        """Input ``index``'s samples of ``prompt``, decoded with the other inputs'."""
        if self._resolve(index, _Entry(prompt, settings)):
            self._close()
        await self._closed.wait()
        leader = self.leader[index]
        if leader == index:
            await self._run(self.calls[leader])
        await self._done[leader].wait()
        outcome = self._outcome(index)
        if outcome is _ALONE:
            return (await self.engine.agenerate([prompt], settings=settings))[0]
        return outcome

    async def _run(self, call: list[int]) -> None:
        prompts, settings = self._prompts(call)
        results: dict[int, Any]
        try:
            outputs = await self.engine.agenerate(prompts, settings=settings)
            results = dict(zip(call, outputs, strict=True))
        except Exception as error:
            results = self._failed(call, error)
        except BaseException:
            # Cancelled (the whole batch is, as a rule): the others, if still waiting, decode
            # alone rather than inherit this task's cancellation.
            self.results.update(dict.fromkeys(call[1:], _ALONE))
            self._done[call[0]].set()
            raise
        self.results.update(results)
        self._done[call[0]].set()


class Workers:
    """Threads for a batch's inputs: every job starts at once, on an idle thread or a new one
    (never queued: the inputs of a rendezvous wait for each other, so each needs a thread of
    its own). Threads are kept for the next batch, and end after ``idle_s`` idle; a new
    thread per input would cost more than the inputs' own work on a small pair."""

    def __init__(self, idle_s: float = 60.0) -> None:
        self.idle_s = idle_s
        self._lock = threading.Lock()
        #: The inboxes of the threads waiting for a job, most recently idle last.
        self._idle: list[queue.SimpleQueue[_Job]] = []

    def run(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on a thread now; its future."""
        future: Future[Any] = Future()
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            worker = threading.Thread(target=self._work, args=(inbox,), name="baco-batch")
            worker.daemon = True
            worker.start()
        inbox.put((fn, future))
        return future

    def _work(self, inbox: queue.SimpleQueue[_Job]) -> None:
        while True:
            try:
                fn, future = inbox.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:  # else a job was just handed to this thread
                        self._idle.remove(inbox)
                        return
                continue
            try:
                result, error = fn(), None
            except BaseException as raised:
                result, error = None, raised
            with self._lock:  # idle again before the caller hears: its next batch reuses it
                self._idle.append(inbox)
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
            del fn, future, result, error


#: A job for a worker: what to run, and the future to set.
_Job = tuple[Callable[[], Any], "Future[Any]"]

#: The threads every ``ChatBaco.batch`` runs its inputs on.
WORKERS = Workers()


@dataclass
class Slot:
    """One input's place in a rendezvous, for the model's calls in that input's context."""

    rendezvous: Rendezvous | AsyncRendezvous
    index: int
    taken: bool = False


#: The current input's slot, set in its thread's or task's context by the batch.
_SLOT: ContextVar[Slot | None] = ContextVar("baco_batch_slot", default=None)


def enter(rendezvous: Rendezvous | AsyncRendezvous, index: int) -> None:
    """Make this context (a batch input's thread or task) input ``index`` of ``rendezvous``."""
    _SLOT.set(Slot(rendezvous, index))


def _take(engine: BacoEngine, kind: type[Rendezvous] | type[AsyncRendezvous]) -> Slot | None:
    """The current input's slot, if this is a batch input on ``engine``'s ``kind`` of
    rendezvous whose slot is still free (an input hands one prompt in; any further call it
    makes goes to the engine directly)."""
    slot = _SLOT.get()
    if slot is None or slot.taken or slot.rendezvous.engine is not engine:
        return None
    if not isinstance(slot.rendezvous, kind):
        return None
    slot.taken = True
    return slot


def generate(engine: BacoEngine, prompt: Prompt, settings: GenerationSettings) -> Samples:
    """``prompt``'s samples: decoded with the rest of its batch when this is a batch input,
    else in an engine call of its own."""
    slot = _take(engine, Rendezvous)
    if slot is not None and isinstance(slot.rendezvous, Rendezvous):
        return slot.rendezvous.submit(slot.index, prompt, settings)
    return engine.generate([prompt], settings=settings)[0]


async def agenerate(engine: BacoEngine, prompt: Prompt, settings: GenerationSettings) -> Samples:
    """Async :func:`generate`, the engine's own async call: no thread, and cancelling the
    task takes the call's rows out of the engine's batch at once."""
    slot = _take(engine, AsyncRendezvous)
    if slot is not None and isinstance(slot.rendezvous, AsyncRendezvous):
        return await slot.rendezvous.submit(slot.index, prompt, settings)
    return (await engine.agenerate([prompt], settings=settings))[0]


def release(engine: BacoEngine, kind: type[Rendezvous] | type[AsyncRendezvous]) -> None:
    """The current input decodes on its own (a stream): the others do not wait for it."""
    if (slot := _take(engine, kind)) is not None:
        slot.rendezvous.leave(slot.index)
