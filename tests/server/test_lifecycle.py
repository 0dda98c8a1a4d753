"""A request's life on the server: a client that disconnects frees its rows, a shutdown
finishes or cancels live requests, metrics count what happened, CORS only when asked.

Decoding is held at a known step by a gate router (``gate`` / ``gate_calls``), so what the
test does meanwhile (disconnect, shut down) happens before the request could finish, however
fast the machine is.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest

from baco_integrations import BacoEngine
from baco_integrations.server import ServerConfig
from baco_integrations.server.testing import LiveServer, running_server
from baco_integrations.testing import HANG_GUARD_S, DecodingGate

MODEL = "baco-tiny"
LONG = {"model": MODEL, "messages": [{"role": "user", "content": "Go on."}], "max_tokens": 64}


class CallWatch:
    """Sees the engine calls the server makes end: finished, or cancelled before their end."""

    def __init__(self, engine: BacoEngine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ended = threading.Event()
        self.cancelled = False
        astream, agenerate = engine.astream, engine.agenerate

        def watched_astream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            chunks = astream(*args, **kwargs)

            async def iterate() -> AsyncIterator[Any]:
                finished = False
                try:
                    async for chunk in chunks:
                        yield chunk
                    finished = True
                finally:
                    await chunks.aclose()  # type: ignore[attr-defined]
                    self._end(cancelled=not finished)

            return iterate()

        async def watched_agenerate(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await agenerate(*args, **kwargs)
            except asyncio.CancelledError:
                self._end(cancelled=True)
                raise
            self._end(cancelled=False)
            return result

        monkeypatch.setattr(engine, "astream", watched_astream)
        monkeypatch.setattr(engine, "agenerate", watched_agenerate)

    def _end(self, cancelled: bool) -> None:
        self.cancelled = cancelled
        self.ended.set()

    def wait_cancelled(self) -> None:
        assert self.ended.wait(HANG_GUARD_S), "the engine call never ended"
        assert self.cancelled, "the engine call ran to its end instead of being cancelled"


@pytest.fixture
def calls(engine: BacoEngine, monkeypatch: pytest.MonkeyPatch) -> CallWatch:
    return CallWatch(engine, monkeypatch)


def test_disconnected_stream_frees_its_rows(
    server: LiveServer, engine: BacoEngine, gate: DecodingGate, calls: CallWatch
) -> None:
    with (
        httpx.Client(timeout=HANG_GUARD_S) as http,
        http.stream(
            "POST", f"{server.base_url}/chat/completions", json={**LONG, "stream": True}
        ) as response,
    ):
        lines = response.iter_lines()
        assert '"role":"assistant"' in next(lines)  # the first chunk
        gate.wait_until_held()  # the call is in the batch, its decoding held
    calls.wait_cancelled()  # the connection closed: the server closed the engine stream
    gate.go.set()
    assert engine.scheduler.wait_idle(HANG_GUARD_S)
    assert engine.scheduler.live_rows == 0 and engine.scheduler.waiting == 0


def test_disconnected_request_frees_its_rows(
    server: LiveServer, engine: BacoEngine, gate: DecodingGate, calls: CallWatch
) -> None:
    body = json.dumps(LONG).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=HANG_GUARD_S) as raw:
        raw.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        )
        gate.wait_until_held()
    calls.wait_cancelled()
    gate.go.set()
    assert engine.scheduler.wait_idle(HANG_GUARD_S)
    assert engine.scheduler.live_rows == 0


class BrokenRouter:
    """A router that fails at its first call: decoding breaks after the response started."""

    needs: frozenset[str] = frozenset()

    def __call__(self, inputs: Any) -> Any:
        raise RuntimeError("this router is broken")


def test_a_stream_that_fails_midway_ends_with_an_error_event(
    server: LiveServer, engine: BacoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare = engine.prepare
    monkeypatch.setattr(
        engine,
        "prepare",
        lambda p, s, streaming=False, **kw: prepare(
            p, s.updated(router=BrokenRouter()), streaming, **kw
        ),
    )
    with (
        httpx.Client(timeout=HANG_GUARD_S) as http,
        http.stream(
            "POST", f"{server.base_url}/chat/completions", json={**LONG, "stream": True}
        ) as response,
    ):
        assert response.status_code == 200  # the stream had started
        events = [line for line in response.iter_lines() if line]
    assert '"role":"assistant"' in events[0]
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert error["type"] == "server_error" and error["code"] == "internal_error"
    assert "data: [DONE]" not in events
    with (
        openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client,
        pytest.raises(openai.APIError),
    ):
        for _ in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Go on."}], stream=True
        ):
            pass
    whole = httpx.post(f"{server.base_url}/chat/completions", json=LONG, timeout=HANG_GUARD_S)
    assert whole.status_code == 500
    assert whole.json()["error"]["code"] == "internal_error"
    assert engine.scheduler.wait_idle(HANG_GUARD_S)


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_shutdown_lets_a_live_stream_finish(
    engine: BacoEngine,
    test_config: ServerConfig,
    gate: DecodingGate,
    wait_for: Callable[[Callable[[], bool], str], None],
) -> None:
    server = LiveServer(engine, test_config).start()
    body = {**LONG, "max_tokens": 4, "stream": True}
    with (
        httpx.Client(timeout=HANG_GUARD_S) as http,
        http.stream("POST", f"{server.base_url}/chat/completions", json=body) as response,
    ):
        gate.wait_until_held()
        server.server.should_exit = True
        wait_for(lambda: refuses_connections(server.port), "the server to stop listening")
        gate.go.set()
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert any('"finish_reason":"' in line for line in lines)
    server.stop()


def test_shutdown_timeout_cancels_live_requests(
    engine: BacoEngine, test_config: ServerConfig, gate: DecodingGate, calls: CallWatch
) -> None:
    server = LiveServer(engine, test_config.updated(shutdown_timeout_s=0)).start()
    with (
        httpx.Client(timeout=HANG_GUARD_S) as http,
        http.stream(
            "POST", f"{server.base_url}/chat/completions", json={**LONG, "stream": True}
        ) as response,
    ):
        gate.wait_until_held()
        server.stop()  # no grace: the held request is cancelled, the server ends
        calls.wait_cancelled()
        with pytest.raises(httpx.HTTPError):  # the stream ends without its last chunks
            list(response.iter_lines())
    gate.go.set()
    assert engine.scheduler.wait_idle(HANG_GUARD_S)
    assert engine.scheduler.live_rows == 0


def metric(text: str, name: str, **labels: str) -> float:
    selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.escape(name + (f"{{{selector}}}" if labels else "")) + r" ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{name} {labels} not in the metrics"
    return float(found.group(1))


def test_metrics(engine: BacoEngine, test_config: ServerConfig) -> None:
    chat = {**LONG, "max_tokens": 5, "seed": 1}
    with running_server(engine, test_config) as one, running_server(engine, test_config) as two:
        with httpx.Client(base_url=one.url, timeout=HANG_GUARD_S) as http:
            usage = http.post("/v1/chat/completions", json=chat).json()["usage"]
            streamed = http.post("/v1/chat/completions", json={**chat, "stream": True})
            assert streamed.status_code == 200
            assert http.post("/v1/chat/completions", json={**chat, "gamma": 9}).status_code == 400
            text = http.get("/metrics").text
        with httpx.Client(base_url=two.url) as other:  # its own registry: nothing counted
            assert "baco_requests_total{" not in other.get("/metrics").text
    ok = metric(text, "baco_requests_total", endpoint="/v1/chat/completions", status="200")
    assert ok == 2
    assert metric(text, "baco_requests_total", endpoint="/v1/chat/completions", status="400") == 1
    generated = sum(
        metric(text, "baco_completion_tokens_total", source=source)
        for source in ("base", "aligned")
    )
    assert generated == 2 * usage["completion_tokens"]  # same seed, same tokens
    assert metric(text, "baco_prompt_tokens_total") == 2 * usage["prompt_tokens"]
    assert metric(text, "baco_time_to_first_token_seconds_count") == 1
    assert metric(text, "baco_choice_base_fraction_count") == 2
    assert metric(text, "baco_completion_tokens_per_second") > 0
    assert metric(text, "baco_live_rows") == 0
    assert metric(text, "baco_queue_depth") == 0
    assert metric(text, "baco_request_seconds_count", endpoint="/v1/chat/completions") == 3
    # the engine's work (a shared engine: at least these two calls' prefills and steps)
    load = engine.load()
    assert 2 <= metric(text, "baco_engine_prefill_rounds") <= load.prefill_rounds
    assert metric(text, "baco_engine_steps") >= 2 * (usage["completion_tokens"] - 1)
    for model in ("base", "aligned"):
        assert metric(text, f"baco_engine_{model}_forward_passes") >= 2


def test_no_cors_unless_asked(engine: BacoEngine, test_config: ServerConfig) -> None:
    origin = "http://app.example"
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    with running_server(engine, test_config) as server, httpx.Client(base_url=server.url) as http:
        answer = http.options("/v1/chat/completions", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
        assert "access-control-allow-origin" not in http.get("/health", headers=preflight).headers
    config = test_config.updated(cors_origins=(origin,))
    with running_server(engine, config) as server, httpx.Client(base_url=server.url) as http:
        answer = http.options("/v1/chat/completions", headers=preflight)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == origin
        other = {**preflight, "Origin": "http://elsewhere.example"}
        assert (
            "access-control-allow-origin" not in http.options("/v1/models", headers=other).headers
        )


def test_no_thread_left_behind(engine: BacoEngine, test_config: ServerConfig) -> None:
    with running_server(engine, test_config) as server:
        thread = server.thread
        assert thread.is_alive()
    assert not thread.is_alive()
    assert server.socket.fileno() == -1  # closed
