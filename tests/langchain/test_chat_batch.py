"""ChatBaco.batch/abatch: a batch stays a batch (issue 26).

Every input of one ``batch`` reaches the engine in one call, whatever the thread-pool size
LangChain would pick, and each reply is the one ``invoke`` gives for that input (same seed,
same reply). No verdict reads the clock: a test counts the engine's submissions (its
scheduler's ``submit``) and compares replies.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.globals import set_llm_cache
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import LLMResult
from langchain_core.prompts import ChatPromptTemplate

from baco_integrations import BacoEngine
from baco_integrations.config import GenerationSettings
from baco_integrations.langchain import ChatBaco
from baco_integrations.langchain._batch import Workers, _Entry, plan
from baco_integrations.limits import EngineLimits
from baco_integrations.testing import HANG_GUARD_S, DecodingGate

PROMPTS: list[Any] = [f"Idea number {i} for a party" for i in range(16)]
SETTINGS: dict[str, Any] = {"max_new_tokens": 10, "seed": 3, "router": "random"}

#: A prompt longer than the tiny pairs' context window (512 positions): the engine refuses it.
TOO_LONG = "word " * 2000

#: A tool in OpenAI's shape whose arguments a random tiny model closes within the budget.
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two small integers.",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": 0, "maximum": 9},
                "b": {"type": "integer", "minimum": 0, "maximum": 9},
            },
            "required": ["a", "b"],
        },
    },
}


class Submissions:
    """The engine's submissions (one per engine call or stream), as rows each."""

    def __init__(self, engine: BacoEngine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows: list[int] = []
        self._lock = threading.Lock()
        submit = engine.scheduler.submit

        def counted(request: Any, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.rows.append(request.rows)
            return submit(request, *args, **kwargs)

        monkeypatch.setattr(engine.scheduler, "submit", counted)

    def clear(self) -> None:
        self.rows.clear()


@pytest.fixture(params=["shared", "cross"])
def pair_engine(request: pytest.FixtureRequest) -> BacoEngine:
    return request.getfixturevalue("engine" if request.param == "shared" else "cross_engine")


@pytest.fixture
def submissions(engine: BacoEngine, monkeypatch: pytest.MonkeyPatch) -> Submissions:
    return Submissions(engine, monkeypatch)


def reply(message: BaseMessage) -> tuple[Any, ...]:
    """What a reply says, without its run's own id."""
    assert isinstance(message, AIMessage)
    calls = [(c["name"], c["args"]) for c in message.tool_calls]
    return message.content, message.response_metadata, message.usage_metadata, calls


def replies(messages: list[Any]) -> list[Any]:
    return [m if isinstance(m, Exception) else reply(m) for m in messages]


# ------------------------------------------------------------------------ one submission


def test_a_batch_of_sixteen_prompts_is_one_submission(
    pair_engine: BacoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    submissions = Submissions(pair_engine, monkeypatch)
    chat = ChatBaco(engine=pair_engine, **SETTINGS)
    alone = [reply(chat.invoke(p)) for p in PROMPTS]
    submissions.clear()
    together = chat.batch(PROMPTS)
    assert submissions.rows == [len(PROMPTS)]
    assert replies(together) == alone


async def test_an_abatch_of_sixteen_prompts_is_one_submission(
    pair_engine: BacoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    submissions = Submissions(pair_engine, monkeypatch)
    chat = ChatBaco(engine=pair_engine, **SETTINGS)
    alone = [reply(await chat.ainvoke(p)) for p in PROMPTS]
    submissions.clear()
    together = await chat.abatch(PROMPTS)
    assert submissions.rows == [len(PROMPTS)]
    assert replies(together) == alone


def test_a_chain_batch_is_one_submission(engine: BacoEngine, submissions: Submissions) -> None:
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{topic}")])
    chain = prompt | ChatBaco(engine=engine, **SETTINGS)
    topics: list[Any] = [{"topic": p} for p in PROMPTS[:6]]
    alone = [reply(chain.invoke(t)) for t in topics]
    submissions.clear()
    assert replies(chain.batch(topics)) == alone
    assert submissions.rows == [6]


def test_stop_and_settings_of_the_call_apply_to_every_input(
    engine: BacoEngine, submissions: Submissions
) -> None:
    chat = ChatBaco(engine=engine, max_new_tokens=10, router="P-PUNC")
    call: dict[str, Any] = {"stop": ["e"], "gamma": 0.6, "seed": 11, "n": 2}
    alone = [reply(chat.invoke(p, **call)) for p in PROMPTS[:5]]
    submissions.clear()
    assert replies(chat.batch(PROMPTS[:5], **call)) == alone
    assert submissions.rows == [5 * 2]  # n samples of each prompt, one call


def test_bound_tools_batch_in_one_submission(engine: BacoEngine, submissions: Submissions) -> None:
    chat = ChatBaco(engine=engine, max_new_tokens=48, seed=4).bind_tools([ADD], tool_choice="add")
    prompts: list[Any] = [f"Add {i} and 2." for i in range(4)]
    alone = [reply(chat.invoke(p)) for p in prompts]
    submissions.clear()
    assert replies(chat.batch(prompts)) == alone
    assert submissions.rows == [4]


# ------------------------------------------------------------------------ max_concurrency


def test_max_concurrency_sends_sub_batches(engine: BacoEngine, submissions: Submissions) -> None:
    chat = ChatBaco(engine=engine, **SETTINGS)
    alone = [reply(chat.invoke(p)) for p in PROMPTS[:12]]
    submissions.clear()
    together = chat.batch(PROMPTS[:12], config={"max_concurrency": 5})
    assert submissions.rows == [5, 5, 2]
    assert replies(together) == alone


async def test_max_concurrency_sends_async_sub_batches(
    engine: BacoEngine, submissions: Submissions
) -> None:
    chat = ChatBaco(engine=engine, **SETTINGS)
    alone = [reply(await chat.ainvoke(p)) for p in PROMPTS[:7]]
    submissions.clear()
    together = await chat.abatch(PROMPTS[:7], config={"max_concurrency": 3})
    assert submissions.rows == [3, 3, 1]
    assert replies(together) == alone


def test_a_batch_wider_than_a_call_may_be_goes_in_calls_that_fit(
    tiny_pair: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows per call are capped (EngineLimits.max_rows): the batch is split to fit."""
    small = BacoEngine.from_pretrained(
        tiny_pair.base_dir, tiny_pair.aligned_dir, limits=EngineLimits(max_rows=4)
    )
    submissions = Submissions(small, monkeypatch)
    chat = ChatBaco(engine=small, **SETTINGS)
    alone = [reply(chat.invoke(p, n=2)) for p in PROMPTS[:6]]
    submissions.clear()
    assert replies(chat.batch(PROMPTS[:6], n=2)) == alone
    assert submissions.rows == [4, 4, 4]  # 2 prompts x n=2 per call
    submissions.clear()
    assert len(chat.batch(PROMPTS[:9])) == 9  # n=1: batches of max_rows inputs
    assert submissions.rows == [4, 4, 1]


def test_calls_are_planned_by_settings_in_input_order() -> None:
    one, two = GenerationSettings(seed=1), GenerationSettings(seed=1, n=2)
    entries = {i: _Entry(f"p{i}", two if i % 2 else one) for i in range(7)}
    del entries[4]  # an input that handed nothing in (a cache hit, an error)
    assert plan(entries, max_rows=4) == [[0, 2, 6], [1, 3], [5]]


def test_batches_reuse_their_threads(engine: BacoEngine) -> None:
    chat = ChatBaco(engine=engine, **SETTINGS)
    chat.batch(PROMPTS[:8])
    before = {t for t in threading.enumerate() if t.name == "baco-batch"}
    chat.batch(PROMPTS[:8])
    after = {t for t in threading.enumerate() if t.name == "baco-batch"}
    assert len(before) >= 8 and after <= before


def test_idle_workers_end() -> None:
    workers = Workers(idle_s=0.01)
    first = workers.run(threading.current_thread).result()
    with pytest.raises(ZeroDivisionError):
        workers.run(lambda: 1 / 0).result()
    first.join(HANG_GUARD_S)
    assert not first.is_alive()


# ------------------------------------------------------------------------ callbacks


class Recorder(BaseCallbackHandler):
    """The runs the callbacks saw: each start (with its tags and metadata) and each end."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.starts: dict[UUID, dict[str, Any]] = {}
        self.ends: dict[UUID, str] = {}

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        with self.lock:
            self.starts[run_id] = {
                "prompt": messages[0][-1].content,
                "tags": tags,
                "topic": (metadata or {}).get("topic"),
                "name": kwargs.get("name"),
            }

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        with self.lock:
            self.ends[run_id] = response.generations[0][0].text


def test_each_input_is_its_own_run_with_its_own_config(
    engine: BacoEngine, submissions: Submissions
) -> None:
    chat = ChatBaco(engine=engine, **SETTINGS)
    recorder = Recorder()
    configs: list[Any] = [
        {"callbacks": [recorder], "tags": [f"t{i}"], "metadata": {"topic": i}, "run_name": f"r{i}"}
        for i in range(5)
    ]
    together = chat.batch(PROMPTS[:5], config=configs)
    assert submissions.rows == [5]
    assert len(recorder.starts) == len(recorder.ends) == 5
    seen = sorted(recorder.starts.values(), key=lambda start: start["topic"])
    for i, start in enumerate(seen):
        assert start["prompt"] == PROMPTS[i] and start["name"] == f"r{i}"
        assert f"t{i}" in start["tags"]
    by_prompt = {recorder.starts[run]["prompt"]: text for run, text in recorder.ends.items()}
    assert [by_prompt[p] for p in PROMPTS[:5]] == [m.content for m in together]


async def test_each_async_input_is_its_own_run(engine: BacoEngine) -> None:
    chat = ChatBaco(engine=engine, **SETTINGS)
    recorder = Recorder()
    together = await chat.abatch(PROMPTS[:4], config={"callbacks": [recorder]})
    assert len(recorder.starts) == len(recorder.ends) == 4
    assert sorted(recorder.ends.values()) == sorted(m.content for m in together)


# ------------------------------------------------------------------------ errors


def test_a_failing_input_fails_alone(engine: BacoEngine, submissions: Submissions) -> None:
    """An input refused before the engine (its messages) and one the engine refuses (too long
    for the context window) fail on their own; the others get their replies."""
    chat = ChatBaco(engine=engine, **SETTINGS)
    image = [HumanMessage([{"type": "image", "url": "https://example.com/a.png"}])]
    inputs: list[Any] = [PROMPTS[0], image, PROMPTS[1], TOO_LONG, PROMPTS[2]]
    alone = [reply(chat.invoke(p)) for p in PROMPTS[:3]]
    submissions.clear()
    together = chat.batch(inputs, return_exceptions=True)
    assert isinstance(together[1], ValueError) and "text only" in str(together[1])
    assert isinstance(together[3], ValueError) and "context window" in str(together[3])
    assert replies([together[0], together[2], together[4]]) == alone
    # the engine refused the shared call (the long prompt, before decoding anything); then
    # each of its inputs went alone, and the long one was refused again
    assert submissions.rows == [1, 1, 1]
    with pytest.raises(ValueError, match="context window"):
        chat.batch(inputs[2:])


async def test_a_failing_async_input_fails_alone(engine: BacoEngine) -> None:
    chat = ChatBaco(engine=engine, **SETTINGS)
    alone = [reply(await chat.ainvoke(p)) for p in PROMPTS[:2]]
    together = await chat.abatch([PROMPTS[0], TOO_LONG, PROMPTS[1]], return_exceptions=True)
    assert isinstance(together[1], ValueError) and "context window" in str(together[1])
    assert replies([together[0], together[2]]) == alone
    with pytest.raises(ValueError, match="context window"):
        await chat.abatch([PROMPTS[0], TOO_LONG])


# ------------------------------------------------------------------------ other paths


@pytest.fixture
def cache() -> Iterator[InMemoryCache]:
    cache = InMemoryCache()
    set_llm_cache(cache)
    yield cache
    set_llm_cache(None)


def test_cached_inputs_are_not_waited_for(
    engine: BacoEngine, submissions: Submissions, cache: InMemoryCache
) -> None:
    chat = ChatBaco(engine=engine, **SETTINGS)
    alone = [chat.invoke(p).content for p in PROMPTS[:6]]
    cache.clear()
    for prompt in PROMPTS[:3]:
        chat.invoke(prompt)  # these three are cached
    submissions.clear()
    together = chat.batch(PROMPTS[:6])
    assert submissions.rows == [3]  # the three not cached, in one call
    assert [m.content for m in together] == alone


def test_streaming_inputs_stream_each(engine: BacoEngine, submissions: Submissions) -> None:
    """With ``streaming=True`` LangChain streams every input: each its own stream, none
    waiting for the others, the same replies."""
    streaming = ChatBaco(engine=engine, streaming=True, **SETTINGS)
    tokens: list[str] = []

    class Tokens(BaseCallbackHandler):
        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:  # type: ignore[override]
            tokens.append(token)

    plain = ChatBaco(engine=engine, **SETTINGS)
    alone = [plain.invoke(p).content for p in PROMPTS[:4]]
    submissions.clear()
    together = streaming.batch(PROMPTS[:4], config={"callbacks": [Tokens()]})
    assert [m.content for m in together] == alone
    assert submissions.rows == [1, 1, 1, 1] and tokens


async def test_cancelling_an_abatch_frees_the_engine(engine: BacoEngine) -> None:
    gate = DecodingGate()
    chat = ChatBaco(engine=engine, max_new_tokens=200, router=gate)
    task = asyncio.create_task(chat.abatch(PROMPTS[:4]))
    await gate.until_held()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.go.set()
    assert await asyncio.to_thread(engine.scheduler.wait_idle, HANG_GUARD_S)
    assert gate.went
    assert await chat.ainvoke("Hi", max_new_tokens=2, router="base")  # the engine is free


def test_one_input_is_one_invoke(engine: BacoEngine, submissions: Submissions) -> None:
    chat = ChatBaco(engine=engine, **SETTINGS)
    assert replies(chat.batch(PROMPTS[:1])) == [reply(chat.invoke(PROMPTS[0]))]
    assert chat.batch([]) == []
    assert submissions.rows == [1, 1]
