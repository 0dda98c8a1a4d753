"""Prometheus metrics of one app, in its own registry (several apps may share a process).

Requests by endpoint and status, latency and time to first token, prompt and completion
tokens (the completion tokens by the model that wrote them: the base share is
``rate(baco_completion_tokens_total{source="base"}[1m]) / rate(baco_completion_tokens_total[1m])``),
completion tokens per second over the last minute, and the engine's live rows and queue depth
read at each scrape.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..engine import BacoEngine
from ..outputs import BacoOutput

#: Endpoints labelled by name; any other path counts as "other" (labels stay few).
ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/health",
    "/metrics",
)

#: Window of the tokens-per-second gauge.
RATE_WINDOW_S = 60.0

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The metrics of one app and the engine it serves."""

    def __init__(self, engine: BacoEngine) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "baco_requests", "HTTP requests answered.", ["endpoint", "status"], registry=r
        )
        self.in_progress = Gauge("baco_requests_in_progress", "Requests being served.", registry=r)
        self.latency = Histogram(
            "baco_request_seconds",
            "Time from request to the end of its response (a stream's end included).",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "baco_time_to_first_token_seconds",
            "Time from a streamed request to its first generated text.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("baco_prompt_tokens", "Prompt tokens read.", registry=r)
        self.completion_tokens = Counter(
            "baco_completion_tokens", "Tokens generated, by model.", ["source"], registry=r
        )
        self.base_fraction = Histogram(
            "baco_choice_base_fraction",
            "Share of each finished choice's tokens that the base model wrote.",
            buckets=tuple(i / 10 for i in range(1, 11)),
            registry=r,
        )
        self._recent: deque[tuple[float, int]] = deque()
        self._recent_lock = threading.Lock()
        rate = Gauge(
            "baco_completion_tokens_per_second",
            f"Tokens generated per second over the last {RATE_WINDOW_S:.0f} s.",
            registry=r,
        )
        rate.set_function(self._tokens_per_second)
        live = Gauge("baco_live_rows", "Rows the engine is decoding now.", registry=r)
        live.set_function(lambda: engine.load().live_rows)
        waiting = Gauge("baco_queue_depth", "Calls waiting to join the batch.", registry=r)
        waiting.set_function(lambda: engine.load().waiting)
        work = {
            "steps": "Decoding steps the engine has run.",
            "prefill_rounds": "Prefill rounds (waiting calls admitted together) so far.",
            "base_forward_passes": "Forward passes of the base model so far.",
            "aligned_forward_passes": "Forward passes of the aligned model so far.",
        }
        for field, doc in work.items():
            gauge = Gauge(f"baco_engine_{field}", doc, registry=r)
            gauge.set_function(lambda field=field: getattr(engine.load(), field))

    def finished(self, outputs: Iterable[BacoOutput], prompt_tokens: int) -> None:
        """Count the tokens of a request's finished choices."""
        self.prompt_tokens.inc(prompt_tokens)
        total = 0
        for output in outputs:
            base = sum(source == "base" for source in output.sources)
            self.completion_tokens.labels("base").inc(base)
            self.completion_tokens.labels("aligned").inc(output.num_tokens - base)
            self.base_fraction.observe(output.base_fraction)
            total += output.num_tokens
        with self._recent_lock:
            self._recent.append((time.monotonic(), total))

    def _tokens_per_second(self) -> float:
        horizon = time.monotonic() - RATE_WINDOW_S
        with self._recent_lock:
            while self._recent and self._recent[0][0] < horizon:
                self._recent.popleft()
            return sum(tokens for _, tokens in self._recent) / RATE_WINDOW_S


class MetricsMiddleware:
    """Counts every response (errors from other middleware included) and times it to the
    last byte of its body, which for a stream is its end."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = next((e for e in ENDPOINTS if path.startswith(e)), "other")
        start = time.perf_counter()
        status = 500  # if the app fails before it answers

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, observed)
        finally:
            self.metrics.in_progress.dec()
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
