"""LlamaIndex adapter fixtures: one engine per session, offline global Settings per test."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import llama_index.core
import pytest
from llama_index.core import Settings

from baco_integrations import BacoEngine, GenerationSettings
from baco_integrations._streaming import THREAD_NAME
from baco_integrations.llama_index import BacoLLM
from baco_integrations.testing import TinyPair, make_tiny_pair

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
        for thread in _stream_threads():  # a stream closed at the very end may still unwind
            thread.join(timeout=10)
        assert not _stream_threads(), "a streaming worker thread outlived its test"


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


@dataclass
class EngineCalls:
    """What the adapter asked the engine for: the prompt and settings of every call."""

    generate: list[tuple[Any, GenerationSettings]] = field(default_factory=list)
    stream: list[tuple[Any, GenerationSettings]] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    closed_streams: int = 0

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
    generate, stream = engine.generate, engine.stream

    def spy_generate(prompts: Any, *, settings: GenerationSettings, **kw: Any) -> Any:
        calls.generate.append((prompts[0] if isinstance(prompts, list) else prompts, settings))
        calls.threads.append(threading.get_ident())
        return generate(prompts, settings=settings, **kw)

    def spy_stream(prompt: Any, *, settings: GenerationSettings, **kw: Any) -> Iterator[Any]:
        calls.stream.append((prompt, settings))
        chunks = stream(prompt, settings=settings, **kw)  # validates now, like the engine

        def iterate() -> Iterator[Any]:
            calls.threads.append(threading.get_ident())
            try:
                yield from chunks
            finally:
                chunks.close()  # type: ignore[attr-defined]
                calls.closed_streams += 1

        return iterate()

    monkeypatch.setattr(engine, "generate", spy_generate)
    monkeypatch.setattr(engine, "stream", spy_stream)
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
