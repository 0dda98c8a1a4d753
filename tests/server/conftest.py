"""Server fixtures: the real app on 127.0.0.1 (uvicorn in a thread), on the tiny pair.

Tests that need decoding to be at a known point hold it with a :class:`DecodingGate` router
put on every call of an engine (:func:`gate_calls`); no verdict depends on machine speed, and
:data:`HANG_GUARD_S` only bounds how long a bug makes a test hang.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from baco_integrations import BacoEngine, GenerationSettings
from baco_integrations.server import ServerConfig
from baco_integrations.server.testing import LiveServer, running_server
from baco_integrations.testing import HANG_GUARD_S, DecodingGate

#: The API key the tests send (servers that check a key are given it).
KEY = "test-key"


@pytest.fixture(scope="session")
def api_key() -> str:
    return KEY


@pytest.fixture(scope="session")
def test_config() -> ServerConfig:
    """Short outputs keep the tests fast on the tiny models."""
    return ServerConfig(model_name="baco-tiny", default_max_tokens=8, max_tokens=64)


@pytest.fixture(scope="module")
def server(engine: BacoEngine, test_config: ServerConfig) -> Iterator[LiveServer]:
    """One server of the shared tiny engine per test module."""
    with running_server(engine, test_config) as running:
        yield running


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=HANG_GUARD_S) as client:
        yield client


@pytest.fixture
def gate_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[BacoEngine], DecodingGate]]:
    """``gate_calls(engine)``: every call of ``engine`` decodes with one :class:`DecodingGate`
    as its router (it holds the first decoding step until released). At the end of the test
    the gates are released and each engine must go idle."""
    gated: list[tuple[BacoEngine, DecodingGate]] = []

    def install(engine: BacoEngine) -> DecodingGate:
        gate = DecodingGate()
        prepare = engine.prepare

        def with_gate(
            prompts: object, settings: GenerationSettings, streaming: bool = False, **kwargs: Any
        ) -> Any:
            return prepare(prompts, settings.updated(router=gate), streaming, **kwargs)

        monkeypatch.setattr(engine, "prepare", with_gate)
        gated.append((engine, gate))
        return gate

    yield install
    for engine, gate in gated:
        gate.go.set()
        assert engine.scheduler.wait_idle(HANG_GUARD_S), "the engine kept decoding"


@pytest.fixture
def gate(engine: BacoEngine, gate_calls: Callable[[BacoEngine], DecodingGate]) -> DecodingGate:
    """A gate on every call of the shared engine."""
    return gate_calls(engine)


@pytest.fixture(scope="session")
def wait_for() -> Callable[[Callable[[], bool], str], None]:
    """Wait until a condition holds, checked every few ms (the guard only bounds a hang)."""

    def wait(condition: Callable[[], bool], what: str) -> None:
        pause = threading.Event()
        for _ in range(int(HANG_GUARD_S / 0.005)):
            if condition():
                return
            pause.wait(0.005)
        raise AssertionError(f"timed out waiting for {what}")

    return wait


@pytest.fixture
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    """The openai client pointed at the test server (no retries, bounded waits)."""
    with openai.OpenAI(
        base_url=server.base_url, api_key="test-key", max_retries=0, timeout=HANG_GUARD_S
    ) as opened:
        yield opened
