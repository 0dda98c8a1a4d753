"""LlamaIndex adapter fixtures: one engine per session, offline global Settings per test, a
spy on the engine, and seeing decoding from a test without reading the clock.

A test that needs decoding to be under way (to cancel it, to stop a stream, to see the event
loop run during it) observes it through :class:`DecodingGate`; one that waits for decoding to
stop waits for the engine's decoding thread to end (:class:`EngineWatch`). No verdict depends
on how fast the machine is. :data:`HANG_GUARD_S` only bounds how long a broken adapter makes
a test hang before it fails; no passing run waits for it. (tests/langchain/conftest.py has
the same two helpers.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import llama_index.core
import pytest
from llama_index.core import Settings

from baco_integrations import BacoEngine, GenerationSettings
from baco_integrations.decoding.scheduler import THREAD_NAME
from baco_integrations.llama_index import BacoLLM
from baco_integrations.testing import HANG_GUARD_S, DecodingGate, TinyPair, make_tiny_pair

try:
    import pytest_socket
except ImportError:  # the guard is optional; the Settings checks below still apply
    pytest_socket = None


@pytest.fixture(scope="session")
def engine(tiny_pair: TinyPair) -> BacoEngine:
    return BacoEngine.from_pretrained(tiny_pair.base_dir, tiny_pair.aligned_dir)


@pytest.fixture(scope="session")
def wide_engine(tmp_path_factory: pytest.TempPathFactory) -> BacoEngine:
    """A tiny pair with a 2,048-token window: LlamaIndex's default "compact" response mode
    reserves 500 tokens of padding, more than the default pair's 512-token window allows."""
    pair = make_tiny_pair(tmp_path_factory.mktemp("wide_pair"), max_position_embeddings=2048)
    return BacoEngine.from_pretrained(pair.base_dir, pair.aligned_dir)


@pytest.fixture
def llm(engine: BacoEngine) -> BacoLLM:
    """A short, reproducible BacoLLM (random tiny models: never test the text itself)."""
    return BacoLLM(engine=engine, max_new_tokens=8, seed=0)


@pytest.fixture(autouse=True)
def offline_settings() -> Iterator[None]:
    """No network, and LlamaIndex's global Settings restored after every test.

    Settings' defaults are OpenAI models, whose package is not installed: a test that forgets
    to set ``Settings.llm``/``Settings.embed_model`` fails with an ImportError, and the socket
    guard fails any connection attempt, so nothing reaches out.
    """
    saved = dict(vars(Settings))
    saved_tokenizer = llama_index.core.global_tokenizer
    if pytest_socket is not None:
        pytest_socket.disable_socket(allow_unix_socket=True)  # asyncio uses a unix socketpair
    try:
        yield
    finally:
        if pytest_socket is not None:
            pytest_socket.enable_socket()
        vars(Settings).clear()
        vars(Settings).update(saved)
        llama_index.core.global_tokenizer = saved_tokenizer
        # An engine's decoding thread ends once no call is live or waiting: none of this
        # test's calls may still be decoding (a cancelled one leaves before the next step).
        for thread in _decoding_threads():
            thread.join(HANG_GUARD_S)
        assert not _decoding_threads(), "a call of this test was still decoding after it"


def _decoding_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


@dataclass
class EngineCalls:
    """What the adapter asked the engine for: the prompt and settings of every call (sync or
    async), which async entry points it used, and how many streams it closed."""

    generate: list[tuple[Any, GenerationSettings]] = field(default_factory=list)
    stream: list[tuple[Any, GenerationSettings]] = field(default_factory=list)
    asynchronous: list[str] = field(default_factory=list)
    closed_streams: int = 0
    #: Set once a stream has been closed (the engine has taken the call out of its batch).
    stream_closed: threading.Event = field(default_factory=threading.Event)

    def _closed(self) -> None:
        self.closed_streams += 1
        self.stream_closed.set()

    @property
    def last(self) -> tuple[Any, GenerationSettings]:
        return (self.generate + self.stream)[-1]


@pytest.fixture
def spy_on(monkeypatch: pytest.MonkeyPatch) -> Callable[[BacoEngine], EngineCalls]:
    """Spy on an engine's ``generate``/``stream``: arguments, thread, iterator closing."""
    return lambda engine: _spy(engine, monkeypatch)


@pytest.fixture
def engine_calls(engine: BacoEngine, spy_on: Callable[[BacoEngine], EngineCalls]) -> EngineCalls:
    return spy_on(engine)


def _spy(engine: BacoEngine, monkeypatch: pytest.MonkeyPatch) -> EngineCalls:
    calls = EngineCalls()
    generate, agenerate = engine.generate, engine.agenerate
    stream, astream = engine.stream, engine.astream

    def first(prompts: Any) -> Any:
        return prompts[0] if isinstance(prompts, list) else prompts

    def spy_generate(prompts: Any, *, settings: GenerationSettings, **kw: Any) -> Any:
        calls.generate.append((first(prompts), settings))
        return generate(prompts, settings=settings, **kw)

    async def spy_agenerate(prompts: Any, *, settings: GenerationSettings, **kw: Any) -> Any:
        calls.generate.append((first(prompts), settings))
        calls.asynchronous.append("agenerate")
        return await agenerate(prompts, settings=settings, **kw)

    def spy_stream(prompt: Any, *, settings: GenerationSettings, **kw: Any) -> Iterator[Any]:
        calls.stream.append((prompt, settings))
        chunks = stream(prompt, settings=settings, **kw)  # validates now, like the engine

        def iterate() -> Iterator[Any]:
            try:
                yield from chunks
            finally:
                chunks.close()  # type: ignore[attr-defined]
                calls._closed()

        return iterate()

    def spy_astream(prompt: Any, *, settings: GenerationSettings, **kw: Any) -> AsyncIterator[Any]:
        calls.stream.append((prompt, settings))
        calls.asynchronous.append("astream")
        chunks = astream(prompt, settings=settings, **kw)  # validates now, like the engine

        async def iterate() -> AsyncIterator[Any]:
            try:
                async for chunk in chunks:
                    yield chunk
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
                calls._closed()

        return iterate()

    monkeypatch.setattr(engine, "generate", spy_generate)
    monkeypatch.setattr(engine, "agenerate", spy_agenerate)
    monkeypatch.setattr(engine, "stream", spy_stream)
    monkeypatch.setattr(engine, "astream", spy_astream)
    return calls


#: Length of the samples the early-stop tests start; a stopped one must have decoded fewer.
LONG = 64


@pytest.fixture(scope="session")
def long_seed(engine: BacoEngine) -> int:
    """A seed whose sample of "Tell me a story." runs to ``LONG`` tokens (no early EOS)."""
    for seed in range(10):
        # The class's method: an engine_calls spy on the instance must not see this.
        outputs = BacoEngine.generate(engine, "Tell me a story.", max_new_tokens=LONG, seed=seed)
        if outputs[0][0].finish_reason == "length":
            return seed
    pytest.skip("every seed hit EOS early")


@pytest.fixture
def long_llm(engine: BacoEngine, long_seed: int) -> BacoLLM:
    """A BacoLLM whose "Tell me a story." runs ``max_new_tokens`` steps unless stopped early."""
    return BacoLLM(engine=engine, max_new_tokens=LONG, seed=long_seed)


class EngineWatch:
    """What a test sees of an engine: its streams being closed (through the spy), the steps
    it has run since the watch began, and the end of its decoding."""

    def __init__(self, engine: BacoEngine, calls: EngineCalls) -> None:
        self.engine, self.calls = engine, calls
        self.steps_before = engine.scheduler.steps

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
        closed = await asyncio.to_thread(self.calls.stream_closed.wait, HANG_GUARD_S)
        assert closed, "the engine's stream was never closed"


@pytest.fixture
def watch(engine: BacoEngine, engine_calls: EngineCalls) -> EngineWatch:
    return EngineWatch(engine, engine_calls)


@pytest.fixture
def make_gate() -> Callable[..., DecodingGate]:
    return DecodingGate
