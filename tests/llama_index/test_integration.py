"""BacoLLM inside LlamaIndex: instrumentation, callbacks, Settings.llm, query engines, workflows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.callbacks import (
    CallbackManager,
    CBEventType,
    LlamaDebugHandler,
    TokenCountingHandler,
)
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.llms import ChatMessage
from llama_index.core.workflow import Context, Event, StartEvent, StopEvent, Workflow, step
from pydantic import Field

from baco_integrations import BacoEngine
from baco_integrations.llama_index import BacoLLM

DOCUMENTS = [
    "The harbour keeps three old fishing boats painted red, blue and green.",
    "Sailors name boats after the wind, the sea birds and the people they love.",
    "A good boat name is short, easy to shout across the water and easy to spell.",
]
QUESTION = "Suggest a name for a small fishing boat."


class Recorder(BaseEventHandler):
    """Collects every instrumentation event."""

    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Recorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)

    def kinds(self) -> list[type]:
        return [type(e) for e in self.events]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    dispatcher = get_dispatcher()  # the root: every module's events propagate to it
    handler = Recorder()
    dispatcher.add_event_handler(handler)
    try:
        yield handler
    finally:
        dispatcher.event_handlers.remove(handler)


@pytest.fixture
def counted(engine: BacoEngine) -> tuple[BacoLLM, LlamaDebugHandler, TokenCountingHandler]:
    """A BacoLLM whose callback manager records LLM events and counts tokens."""
    debug = LlamaDebugHandler()
    counter = TokenCountingHandler(
        tokenizer=partial(engine.aligned_tokenizer.encode, add_special_tokens=False)
    )
    llm = BacoLLM(
        engine=engine,
        max_new_tokens=6,
        seed=0,
        callback_manager=CallbackManager([debug, counter]),
    )
    return llm, debug, counter


# ----------------------------------------------------------------- instrumentation and callbacks


def test_completion_events(llm: BacoLLM, recorder: Recorder) -> None:
    response = llm.complete("Hi", gamma=0.4)
    assert recorder.kinds() == [LLMCompletionStartEvent, LLMCompletionEndEvent]
    start, end = recorder.events
    assert start.prompt == "Hi" and start.additional_kwargs == {"gamma": 0.4}
    assert start.model_dict["model_name"] == llm.model_name
    assert start.model_dict["router"] == "P-PUNC"
    assert end.response is response

    recorder.events.clear()
    responses = list(llm.stream_complete("Hi"))
    kinds = recorder.kinds()
    assert kinds[0] is LLMCompletionStartEvent and kinds[-1] is LLMCompletionEndEvent
    assert kinds[1:-1] == [LLMCompletionInProgressEvent] * len(responses)
    assert recorder.events[-1].response is responses[-1]


async def test_chat_events(llm: BacoLLM, recorder: Recorder) -> None:
    messages = [ChatMessage(role="user", content="Hi")]
    llm.chat(messages)
    assert recorder.kinds() == [LLMChatStartEvent, LLMChatEndEvent]

    recorder.events.clear()
    replies = [r async for r in await llm.astream_chat(messages)]
    kinds = recorder.kinds()
    assert kinds[0] is LLMChatStartEvent and kinds[-1] is LLMChatEndEvent
    assert kinds[1:-1] == [LLMChatInProgressEvent] * len(replies)
    assert recorder.events[-1].response.additional_kwargs["finish_reason"] in {"stop", "length"}


def test_callback_handlers_see_llm_events_with_token_counts(counted) -> None:
    llm, debug, counter = counted
    response = llm.complete("Brainstorm names for a cat.")
    reply = llm.chat([ChatMessage(role="user", content="Hi")])
    streamed = list(llm.stream_complete("Write a poem."))
    streamed_chat = list(llm.stream_chat([ChatMessage(role="user", content="Hi")]))

    assert len(debug.get_event_pairs(CBEventType.LLM)) == 4
    # The engine's exact counts, not the counter's re-tokenisation of a flattened prompt.
    for event, result in zip(
        counter.llm_token_counts,
        [response, reply, streamed[-1], streamed_chat[-1]],
        strict=True,
    ):
        usage = result.raw["usage"]
        assert event.prompt_token_count == usage["prompt_tokens"]
        assert event.completion_token_count == usage["completion_tokens"] or (
            usage["completion_tokens"] == 0  # the counter falls back to counting the text
        )


# ----------------------------------------------------------------- Settings.llm and a query engine


@pytest.fixture
def index(wide_engine: BacoEngine) -> VectorStoreIndex:
    Settings.llm = BacoLLM(engine=wide_engine, max_new_tokens=8, seed=0)
    Settings.embed_model = MockEmbedding(embed_dim=8)  # local: no OpenAI embeddings
    # Let LlamaIndex fit retrieved context to the window in the models' own tokens.
    Settings.tokenizer = wide_engine.aligned_tokenizer
    return VectorStoreIndex.from_documents([Document(text=t) for t in DOCUMENTS])


@pytest.fixture
def engine_calls(wide_engine: BacoEngine, spy_on: Callable[[BacoEngine], Any]) -> Any:
    """Here the spy watches the engine behind the index's Settings.llm."""
    return spy_on(wide_engine)


def test_settings_llm_drives_a_query_engine(
    index: VectorStoreIndex, engine_calls, recorder: Recorder
) -> None:
    assert Settings.llm.metadata.context_window == 2048
    response = index.as_query_engine(similarity_top_k=2).query(QUESTION)
    assert isinstance(response.response, str)
    assert len(response.source_nodes) == 2
    # The query reached BacoLLM as a conversation holding the retrieved context.
    conversation, settings = engine_calls.last
    assert conversation[-1]["role"] == "user"
    assert QUESTION in conversation[-1]["content"]
    assert all(n.node.get_content() in conversation[-1]["content"] for n in response.source_nodes)
    assert settings.seed == 0 and settings.max_new_tokens == 8
    assert LLMChatEndEvent in recorder.kinds()


def test_streaming_and_async_query_engines(index: VectorStoreIndex) -> None:
    streaming = index.as_query_engine(similarity_top_k=2, streaming=True).query(QUESTION)
    deltas = list(streaming.response_gen)
    assert all(isinstance(d, str) for d in deltas)
    plain = index.as_query_engine(similarity_top_k=2).query(QUESTION)
    if plain.response != "Empty Response":  # LlamaIndex's text for an empty answer
        assert "".join(deltas) == plain.response


async def test_async_query_engine(index: VectorStoreIndex, engine_calls) -> None:
    response = await index.as_query_engine(similarity_top_k=2).aquery(QUESTION)
    assert isinstance(response.response, str)
    assert QUESTION in engine_calls.last[0][-1]["content"]


# ----------------------------------------------------------------- workflows


class TopicEvent(Event):
    topic: str


class DeltaEvent(Event):
    delta: str


class Brainstorm(Workflow):
    """Two steps: frame the topic, then brainstorm it with BacoLLM (streamed, then n ideas)."""

    def __init__(self, llm: BacoLLM, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.llm = llm

    @step
    async def frame(self, ev: StartEvent) -> TopicEvent:
        return TopicEvent(topic=ev.topic)

    @step
    async def brainstorm(self, ctx: Context, ev: TopicEvent) -> StopEvent:
        prompt = f"Brainstorm ideas about {ev.topic}."
        streamed = ""
        async for response in await self.llm.astream_complete(prompt):
            ctx.write_event_to_stream(DeltaEvent(delta=response.delta))
            streamed = response.text
        ideas = await self.llm.achat([ChatMessage(role="user", content=prompt)], n=3)
        return StopEvent(result={"streamed": streamed, "ideas": ideas})


async def test_a_workflow_step_calls_the_llm(llm: BacoLLM) -> None:
    handler = Brainstorm(llm, timeout=120).run(topic="boats")
    deltas = [ev.delta async for ev in handler.stream_events() if isinstance(ev, DeltaEvent)]
    result = await handler
    assert "".join(deltas) == result["streamed"]
    samples = result["ideas"].additional_kwargs["samples"]
    assert len(samples) == 3
    assert result["ideas"].message.content == samples[0]["text"]
