"""The running batch: the rows of every live request, decoded together one step at a time.

A row is one sample of one prompt of a request. Rows of a request are contiguous; a finished
row leaves the batch at the end of its step (its caches are dropped at once), and a request
leaves when its last row does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch

from ..outputs import TokenLogProb
from .bridge import Bridge, TextBridge, TokenBridge
from .logprobs import token_logprobs
from .pair import NO_SOURCE, Pair
from .randomness import RowRandomness
from .request import DecodeStats, Request
from .samples import SampleRecord, TextSample, TokenSample
from .step import Group, RequestFailed, Step


class RunningBatch:
    """Rows of the live requests, their caches (in the bridge) and who writes each row."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.bridge: Bridge = TokenBridge(pair) if pair.shares_tokenizer else TextBridge(pair)
        self.continuation = pair.continuation_table()
        self.randomness = RowRandomness(pair.device)
        self.requests: list[Request] = []
        self.rows: list[SampleRecord] = []
        self.row_requests: list[Request] = []
        self.groups: list[Group] = []
        #: The source of each row's previous token (NO_SOURCE before its first).
        self.writers = torch.empty(0, dtype=torch.long, device=pair.device)
        self.writers_host: list[int] = []
        self._counters_at_join: dict[int, DecodeStats] = {}

    @property
    def empty(self) -> bool:
        return not self.rows

    def join(self, requests: Sequence[Request]) -> None:
        """Prefill the requests' prompts (one forward per model) and add their rows after the
        running ones."""
        counters = self.bridge.counters()
        self.bridge.join(requests)
        for request in requests:
            self._counters_at_join[id(request)] = counters
            self._add_rows(request)
        self._regroup()

    def _add_rows(self, request: Request) -> None:
        rows = len(request.samples)
        self.randomness.generators.extend(request.seed_generators(self.pair.device))
        if request.generator is None:
            request.generator = self.randomness.shared
        self.requests.append(request)
        self.rows.extend(request.samples)
        self.row_requests.extend([request] * rows)
        fresh = torch.full((rows,), NO_SOURCE, dtype=torch.long, device=self.pair.device)
        self.writers = torch.cat([self.writers, fresh])
        self.writers_host.extend([NO_SOURCE] * rows)

    def step(self) -> list[tuple[SampleRecord, Request]]:
        """Decode one token for every row; returns the samples that changed, with their
        requests."""
        # Only a custom router can fail a step; keep the generators' states just in case.
        custom = any(r.custom_router for r in self.requests)
        before = self.randomness.snapshot() if custom else []
        try:
            step = Step(
                self.pair,
                self.bridge,
                self.rows,
                self.groups,
                self.writers,
                self.writers_host,
                self.randomness,
                self.continuation,
                record=any(r.settings.logprobs for r in self.requests),
            )
            tokens, sources = step.run()
        except RequestFailed:
            # The step is run again without the failed request: the others must draw the
            # same numbers then as they would have now.
            if custom:
                self.randomness.restore(before)
            raise
        sources_host, token_list = sources.tolist(), tokens.tolist()
        entries = self._logprobs(step, token_list, sources_host)
        deltas = self.bridge.commit(self.rows, token_list, sources_host, self.writers_host)
        for row, entry in entries.items():
            if (delta := deltas[row]) is not None:  # an end-of-sequence token is not written
                self.rows[row].add_logprob(entry, len(self.rows[row].text) - len(delta))
        self.writers, self.writers_host = sources, sources_host
        for request in self.requests:
            request.steps += 1
        changed = list(zip(self.rows, self.row_requests, strict=True))
        for sample, request, delta in zip(self.rows, self.row_requests, deltas, strict=True):
            _settle(sample, request, delta)
        scored = [
            r
            for r, (sample, request) in enumerate(zip(self.rows, self.row_requests, strict=True))
            if sample.finished and request.settings.logprobs
        ]
        if scored:  # each model's mean log-prob of the whole response, read once at the end
            samples = [self.rows[r] for r in scored]
            views = self.bridge.response_scores(scored, token_list, sources_host, samples)
            tokenizers = [member.tokenizer for member in self.pair.members]
            for sample, by_model in zip(samples, views, strict=True):
                sample.add_model_scores(by_model, tokenizers)
        keep = [r for r, sample in enumerate(self.rows) if not sample.finished]
        if len(keep) < len(self.rows):
            self._keep(keep)
        if self.rows:
            lock_step = any(not r.settings.lazy for r in self.requests)
            self.bridge.after_step([token_list[r] for r in keep], lock_step)
        return changed

    def _logprobs(
        self, step: Step, tokens: list[int], sources: list[int]
    ) -> dict[int, TokenLogProb]:
        """The step's token log-probs, for the rows of calls that asked for them."""
        if step.drawn_from is None:
            return {}
        rows = [r for r, req in enumerate(self.row_requests) if req.settings.logprobs]
        top_k = [self.row_requests[r].settings.top_logprobs for r in rows]
        return token_logprobs(self.pair, step.drawn_from, rows, tokens, sources, top_k)

    def remove(self, request: Request) -> None:
        """Drop ``request``'s rows now (a cancelled or abandoned call)."""
        self._keep([r for r, owner in enumerate(self.row_requests) if owner is not request])

    def release(self) -> None:
        """Free every cache; the batch is empty and ready for new requests."""
        self.bridge.release()
        self.rows, self.row_requests, self.requests, self.groups = [], [], [], []
        self.writers = self.writers[:0]
        self.writers_host = []
        self.randomness.generators = []

    def _keep(self, keep: Sequence[int]) -> None:
        """Keep only the rows ``keep``; requests left with no rows leave the batch."""
        if not keep:
            self._finish_requests(set())
            self.release()
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.pair.device)
        self.bridge.select(keep)
        self.writers = self.writers[index]
        self.writers_host = [self.writers_host[r] for r in keep]
        self.randomness.generators = [self.randomness.generators[r] for r in keep]
        self.rows = [self.rows[r] for r in keep]
        self.row_requests = [self.row_requests[r] for r in keep]
        self._finish_requests({id(r) for r in self.row_requests})
        self._regroup()

    def _finish_requests(self, live: set[int]) -> None:
        counters = self.bridge.counters()
        for request in self.requests:
            if id(request) not in live:
                request.stats = counters.minus(self._counters_at_join.pop(id(request)))
                request.stats.steps = request.steps
                request.stats.waited_steps = request.waited_steps
                request.done = True
        self.requests = [r for r in self.requests if id(r) in live]

    def _regroup(self) -> None:
        self.groups = []
        start = 0
        for row in range(1, len(self.rows) + 1):
            if row == len(self.rows) or self.row_requests[row] is not self.row_requests[start]:
                self.groups.append(Group(self.row_requests[start], start, row))
                start = row


def _settle(record: SampleRecord, request: Request, delta: str | None) -> None:
    """After a token was committed: end the sample on EOS, a stop string or its limits."""
    sample = cast(TokenSample | TextSample, record)
    settings = request.settings
    if delta is None:  # an end-of-sequence token
        sample.finish("stop")
    elif settings.stop and sample.check_stop(settings.stop, request.longest_stop, delta):
        return
    elif request.steps >= request.max_steps or sample.reached(settings.max_new_tokens):
        sample.finish("length", limit=settings.max_new_tokens)
