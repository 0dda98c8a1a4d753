"""Continuous batching: one decoding loop over the rows of every live request.

Callers (threads, asyncio tasks) submit requests; one scheduler thread runs the running batch
step by step. Between steps, waiting requests join in FIFO order (prefilled, their caches
merged into the batch's) within the caps on live rows and prefill tokens per step; finished
rows leave at the end of their step, cancelled requests before the next one.

Admission comes in rounds: each prefill is a forward of each model that stalls every running
row, and on the offline pair one prompt's round costs about half a step more than the same
prompt prefilled with others. A running batch therefore takes waiting requests when the
oldest has waited ``admission_wait_steps`` steps (bounding time to first token), or at once
when a burst arrives (more rows in one step than are running: the batch at least doubles),
or when the batch is empty. Calls arriving one per step are then prefilled together, as
text-generation-inference's ``max_waiting_tokens`` does. An empty batch first lets a burst
of callers finish arriving (milliseconds, while submissions keep coming), so that callers
started together share one round. The thread runs
while there is work and ends when there is none (a new request starts it again), so an idle
engine holds no thread.

Why this shape (docs/performance.md, Concurrency): nano-vllm and vLLM schedule over a paged KV
cache that one model owns; BACO runs two models whose caches must stay row-aligned, and the
cross-family bridge re-tokenizes per row, so rows are kept in per-model transformers caches
and merged or filtered between steps as text-generation-inference's ``CausalLMBatch`` does.
A runner that cannot add rows to running ones (the in-process runner's static cache, sized
for one batch) takes a request only into an empty batch.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..outputs import BacoChunk
from .batch import RunningBatch
from .chunks import new_chunks
from .pair import Pair
from .request import DecodingCancelled, Request
from .samples import SampleRecord
from .step import RequestFailed

#: What a ticket's listener receives: ("chunks", list[BacoChunk]), ("done", None) or
#: ("error", exception). It is called on the scheduler thread and must not block.
Progress = tuple[str, Any]
Listener = Callable[[Progress], None]


class EngineOverloaded(RuntimeError):
    """The scheduler's waiting queue is full: retry later (a server answers 429/503)."""


@dataclass(frozen=True)
class SchedulerLoad:
    """How busy a scheduler is, and its caps (for a server's checks, health and metrics)."""

    live_rows: int
    waiting: int
    steps: int
    max_live_rows: int
    max_waiting: int
    #: Work so far: prefill rounds, and forward passes of each model.
    prefill_rounds: int = 0
    base_forward_passes: int = 0
    aligned_forward_passes: int = 0


class Ticket:
    """A submitted request: how its caller hears of progress, and how it cancels."""

    def __init__(self, request: Request, listener: Listener, cancel: Any = None) -> None:
        self.request = request
        self.listener = listener
        #: An object with ``is_set()`` (a threading.Event) polled at every step.
        self.cancel_event = cancel
        self.cancelled = False
        self.finished = threading.Event()
        self._closing = threading.Lock()

    def _notify(self, event: Progress) -> None:
        try:
            self.listener(event)
        except RuntimeError:  # the listener's event loop is closed: nobody is waiting
            self.cancelled = True

    def _close(self, error: BaseException | None) -> None:
        """Tell the caller the request ended (once: a cancel and the loop may both try)."""
        with self._closing:
            if self.finished.is_set():
                return
            self.finished.set()
        self._notify(("done", None) if error is None else ("error", error))

    @property
    def wants_out(self) -> bool:
        return self.cancelled or (self.cancel_event is not None and self.cancel_event.is_set())


class Scheduler:
    """Runs the decoding loop for every request submitted to one engine."""

    def __init__(
        self,
        pair: Pair,
        *,
        max_live_rows: int,
        max_prefill_tokens: int,
        max_waiting: int,
        admission_wait_steps: int = 0,
    ) -> None:
        self.batch = RunningBatch(pair)
        #: A runner that cannot add rows to running ones (a static cache) takes a request
        #: only into an empty batch.
        self.joins_running = all(m.runner.joins_running_rows for m in pair.members)
        self.max_live_rows = max_live_rows
        self.max_prefill_tokens = max_prefill_tokens
        self.max_waiting = max_waiting
        self.admission_wait_steps = admission_wait_steps
        self._waiting: deque[Ticket] = deque()
        #: Rows submitted since the last admission check (a burst admits at once).
        self._arrived_rows = 0
        #: Prefill rounds run (forwards of each model that admitted requests).
        self.prefill_rounds = 0
        #: Set by every submission (an empty batch gathers a burst before its first round).
        self._arrival = threading.Event()
        self._live: dict[int, Ticket] = {}  # by id(request)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.steps = 0
        _SCHEDULERS.add(self)

    # ------------------------------------------------------------- callers' side

    def submit(self, request: Request, listener: Listener, cancel: Any = None) -> Ticket:
        """Queue ``request``; its listener hears of chunks (streaming) and the end."""
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "a BACO call was made from the engine's decoding thread (inside a router?): "
                "it would wait for itself; call the engine from another thread"
            )
        if request.rows > self.max_live_rows:
            raise ValueError(
                f"{request.rows} rows (prompts x n) is more than the engine decodes at once "
                f"(EngineLimits.max_live_rows={self.max_live_rows}); lower n or split the call"
            )
        ticket = Ticket(request, listener, cancel)
        request.abandoned = lambda: ticket.wants_out
        with self._lock:
            if len(self._waiting) >= self.max_waiting:
                raise EngineOverloaded(
                    f"{len(self._waiting)} requests are already waiting for this engine "
                    f"(EngineLimits.max_waiting={self.max_waiting}); retry later"
                )
            request.submitted_at_step = self.steps
            self._waiting.append(ticket)
            self._arrived_rows += request.rows
            self._arrival.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
                self._thread.start()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Stop ``ticket``'s request before the next step; its caller is told at once."""
        ticket.cancelled = True
        ticket._close(DecodingCancelled("the call was cancelled"))

    def shutdown(self, timeout: float | None = 30.0) -> bool:
        """Cancel every call and wait for the loop's thread to end (at interpreter exit, so
        that no thread is still inside torch when the process tears down)."""
        with self._lock:
            tickets = [*self._waiting, *self._live.values()]
        for ticket in tickets:
            self.cancel(ticket)
        return self.wait_idle(timeout)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no request is live or waiting and the loop's thread has ended."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not thread or not thread.is_alive()

    @property
    def live_rows(self) -> int:
        return len(self.batch.rows)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def load(self) -> SchedulerLoad:
        counters = self.batch.bridge.counters()
        return SchedulerLoad(
            live_rows=self.live_rows,
            waiting=self.waiting,
            steps=self.steps,
            max_live_rows=self.max_live_rows,
            max_waiting=self.max_waiting,
            prefill_rounds=self.prefill_rounds,
            base_forward_passes=counters.base_forward_passes,
            aligned_forward_passes=counters.aligned_forward_passes,
        )

    # ------------------------------------------------------------- the loop

    def _run(self) -> None:
        while True:
            if self.batch.empty:
                self._gather_burst()
            with self._lock:
                self._drop_cancelled_waiting()
                if self.batch.empty and not self._waiting:
                    self._thread = None
                    return
                admitted = self._admit()
            if admitted:
                self._join(admitted)
            self._drop_cancelled_live()
            if not self.batch.empty:
                self._step()

    def _round_due(self) -> bool:
        """Whether waiting requests join now (see the module's docstring)."""
        arrived, self._arrived_rows = self._arrived_rows, 0
        if not self._waiting or self.batch.empty:
            return True
        oldest = self._waiting[0].request.submitted_at_step
        return self.steps - oldest >= self.admission_wait_steps or arrived > self.live_rows

    def _gather_burst(self) -> None:
        """Before an empty batch's first round, let calls that are arriving together (threads
        or tasks that each tokenize their prompt first) finish arriving: wait while
        submissions keep coming, :data:`GATHER_QUIET_S` apart at most, for at most
        :data:`GATHER_MAX_S`. A lone call waits one quiet interval; no verdict depends on it
        (tests count rounds after known steps)."""
        deadline = time.monotonic() + GATHER_MAX_S
        self._arrival.clear()
        while time.monotonic() < deadline and self._arrival.wait(GATHER_QUIET_S):
            self._arrival.clear()

    def _admit(self) -> list[Ticket]:
        """Waiting tickets that join before the next step, in FIFO order, within the caps."""
        admitted: list[Ticket] = []
        if not self._round_due():
            return admitted
        rows, prefill = len(self.batch.rows), 0
        while self._waiting:
            request = self._waiting[0].request
            tokens = sum(len(ids) for per_model in request.prompt_ids for ids in per_model)
            first = rows == 0 and not admitted
            fits = rows + request.rows <= self.max_live_rows and (
                prefill + tokens <= self.max_prefill_tokens or first
            )
            if not fits or (not self.joins_running and not first):
                break
            admitted.append(self._waiting.popleft())
            rows, prefill = rows + request.rows, prefill + tokens
        return admitted

    def _join(self, tickets: list[Ticket]) -> None:
        """Prefill the admitted requests together; if that fails, they fail (one at a time
        tells whose prompt was at fault) and the running rows are untouched."""
        tickets = [t for t in tickets if not self._cancelled(t)]
        if not tickets:
            return
        try:
            self.prefill_rounds += 1
            self.batch.join([t.request for t in tickets])
        except Exception as error:
            if len(tickets) == 1:
                tickets[0]._close(error)
                return
            for ticket in tickets:
                self._join([ticket])
            return
        for ticket in tickets:
            ticket.request.waited_steps = self.steps - ticket.request.submitted_at_step
            self._live[id(ticket.request)] = ticket

    def _cancelled(self, ticket: Ticket) -> bool:
        if ticket.wants_out:
            ticket._close(DecodingCancelled("the call was cancelled"))
        return ticket.wants_out

    def _drop_cancelled_waiting(self) -> None:
        for ticket in [t for t in self._waiting if t.wants_out]:
            self._waiting.remove(ticket)
            ticket._close(DecodingCancelled("the call was cancelled"))

    def _drop_cancelled_live(self) -> None:
        for ticket in [t for t in self._live.values() if t.wants_out]:
            self._leave(ticket, DecodingCancelled("the call was cancelled"))

    def _leave(self, ticket: Ticket, error: BaseException | None) -> None:
        if not ticket.request.done:
            self.batch.remove(ticket.request)
        self._live.pop(id(ticket.request), None)
        ticket.request.error = error
        ticket._close(error)

    def _step(self) -> None:
        try:
            changed = self.batch.step()
        except RequestFailed as failure:
            ticket = self._live[id(failure.request)]
            # A runner that stopped waiting for a cancelled call fails it: say it was cancelled.
            cancelled = DecodingCancelled("the call was cancelled")
            self._leave(ticket, cancelled if ticket.wants_out else failure.error)
            return
        except Exception as error:  # nothing says whose: every live request fails
            for ticket in list(self._live.values()):
                self._leave(ticket, error)
            self.batch.release()
            return
        self.steps += 1
        self._deliver(changed)

    def _deliver(self, changed: list[tuple[SampleRecord, Request]]) -> None:
        """Chunks to streaming callers, then word to those whose request finished."""
        streamed: dict[int, list[BacoChunk]] = {}
        for sample, request in changed:
            if request.streaming:
                chunks = streamed.setdefault(id(request), [])
                chunks.extend(new_chunks(sample, request.settings.stop))
        for key, chunks in streamed.items():
            if chunks and (ticket := self._live.get(key)) is not None:
                ticket._notify(("chunks", chunks))
        for key, ticket in list(self._live.items()):
            if ticket.request.done:
                del self._live[key]
                ticket._close(None)


#: An empty batch gathers arrivals until none came for this long (seconds), at most for
#: GATHER_MAX_S: concurrent callers then share one prefill round instead of two.
GATHER_QUIET_S = 0.003
GATHER_MAX_S = 0.05

#: Name of the scheduler threads (tests look for leftovers by it).
THREAD_NAME = "baco-scheduler"

_SCHEDULERS: weakref.WeakSet[Scheduler] = weakref.WeakSet()


@atexit.register
def _shut_down_all() -> None:
    for scheduler in list(_SCHEDULERS):
        scheduler.shutdown()
