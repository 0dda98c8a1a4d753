"""ChatBaco: message mapping, metadata, streaming, overrides, chat prompt chains."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from pydantic import ValidationError

from baco_integrations import BacoEngine
from baco_integrations.config import SETTING_NAMES
from baco_integrations.langchain import BacoLLM, ChatBaco
from baco_integrations.langchain.chat_models import to_conversation


@pytest.fixture
def chat(engine: BacoEngine) -> ChatBaco:
    return ChatBaco(engine=engine, max_new_tokens=10, seed=0)


# ------------------------------------------------------------------------ messages


def test_messages_map_to_roles() -> None:
    conversation = to_conversation(
        [
            SystemMessage("Be brief."),
            HumanMessage("Hi", name="sam"),
            AIMessage("Hello!"),
            HumanMessage([{"type": "text", "text": "Name "}, "a cat"]),
            ChatMessage(role="user", content="please"),
            ChatMessage(role="model", content="Tom."),
        ]
    )
    assert conversation == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        # consecutive turns of one role are joined: many chat templates reject them
        {"role": "user", "content": "Name a cat\n\nplease"},
        {"role": "assistant", "content": "Tom."},
    ]


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (FunctionMessage("3", name="f"), "FunctionMessage messages"),
        (
            AIMessage("", invalid_tool_calls=[{"name": "f", "args": "{", "id": "1"}]),
            "invalid tool calls",
        ),
        (ChatMessage(role="narrator", content="x"), "ChatMessage"),
        (
            HumanMessage([{"type": "image", "url": "https://example.com/a.png"}]),
            "text only",
        ),
    ],
)
def test_unsupported_messages_are_rejected(message: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        to_conversation([HumanMessage("hi"), message])


def test_bacollm_says_where_structured_output_is(chat: ChatBaco) -> None:
    llm = BacoLLM(engine=chat.engine)
    with pytest.raises(
        NotImplementedError, match="BacoLLM is a text-completion model.*constraint="
    ):
        llm.with_structured_output({"type": "object", "properties": {}})


def test_tool_calls_and_results_are_turns_the_models_read() -> None:
    call = {"name": "add", "args": {"a": 1}, "id": "c1"}
    conversation = to_conversation(
        [HumanMessage("hi"), AIMessage("", tool_calls=[call]), ToolMessage("3", tool_call_id="c1")]
    )
    assert conversation[1:] == [
        {"role": "assistant", "content": '{"name": "add", "arguments": {"a": 1}}'},
        {"role": "user", "content": "Result of add: 3"},
    ]


# ------------------------------------------------------------------------ outputs


def test_invoke_metadata_and_usage(chat: ChatBaco, engine: BacoEngine) -> None:
    messages = [SystemMessage("Be brief."), HumanMessage("Name a cat")]
    reply = chat.invoke(messages)
    assert isinstance(reply, AIMessage) and reply.content
    meta = reply.response_metadata
    prompt_ids = engine.encode_prompts(to_conversation(messages))["aligned"]
    assert reply.usage_metadata["input_tokens"] == len(prompt_ids)
    assert reply.usage_metadata["output_tokens"] == len(meta["sources"])
    assert len(meta["token_ids"]) == len(meta["sources"])
    assert (
        engine.aligned_tokenizer.decode(meta["token_ids"], skip_special_tokens=True)
        == reply.content
    )
    assert reply.usage_metadata["total_tokens"] == len(prompt_ids) + len(meta["sources"])
    assert set(meta["sources"]) <= {"base", "aligned"}
    assert meta["base_fraction"] == pytest.approx(
        meta["sources"].count("base") / len(meta["sources"])
    )
    assert meta["finish_reason"] in {"stop", "length"}
    assert meta["base_model"] == engine.model_names["base"]
    assert meta["aligned_model"] == engine.model_names["aligned"]
    assert meta["model_name"] == chat.model_name
    assert chat.get_num_tokens_from_messages(messages) == len(prompt_ids)


def test_system_prompt_field(engine: BacoEngine) -> None:
    plain = ChatBaco(engine=engine, max_new_tokens=2)
    with_system = ChatBaco(engine=engine, max_new_tokens=2, system_prompt="You are terse.")
    n_plain = plain.invoke("Hi").usage_metadata["input_tokens"]
    assert with_system.invoke("Hi").usage_metadata["input_tokens"] > n_plain
    # a system message in the conversation wins over the field
    explicit = with_system.invoke([SystemMessage("Be kind."), HumanMessage("Hi")])
    expected = engine.encode_prompts(
        [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    )
    assert explicit.usage_metadata["input_tokens"] == len(expected["aligned"])


def test_stream_matches_invoke(chat: ChatBaco) -> None:
    reply = chat.invoke("Name a cat")
    chunks = list(chat.stream("Name a cat"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert chunks[-1].chunk_position == "last"
    # usage and model name are set exactly once, on the last chunk
    assert [c.usage_metadata is not None for c in chunks].count(True) == 1
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    assert full.content == reply.content
    assert full.usage_metadata == reply.usage_metadata
    for key in ("finish_reason", "model_name", "base_model", "aligned_model", "token_ids"):
        assert full.response_metadata[key] == reply.response_metadata[key]
    assert len(full.response_metadata["sources"]) == reply.usage_metadata["output_tokens"]


async def test_astream_and_ainvoke(chat: ChatBaco) -> None:
    reply = await chat.ainvoke("Name a cat")
    assert reply.content == chat.invoke("Name a cat").content
    chunks = [c async for c in chat.astream("Name a cat")]
    assert "".join(c.content for c in chunks) == reply.content
    assert chunks[-1].usage_metadata == reply.usage_metadata


def test_n_samples(chat: ChatBaco) -> None:
    result = chat.generate([[HumanMessage("Name a cat")], [HumanMessage("Hey")]], n=3)
    assert [len(gens) for gens in result.generations] == [3, 3]
    usage = result.llm_output["token_usage"]
    outputs = sum(
        g.message.usage_metadata["output_tokens"] for gens in result.generations for g in gens
    )
    assert usage["completion_tokens"] == outputs
    with pytest.raises(ValueError, match="n=3"):
        list(chat.stream("hi", n=3))


# ------------------------------------------------------------------------ settings


def test_settings_overrides_and_errors(chat: ChatBaco, engine: BacoEngine) -> None:
    assert set(SETTING_NAMES) <= set(ChatBaco.model_fields)
    routed = ChatBaco(engine=engine, router="P", gamma=0.0, max_new_tokens=10, seed=0)
    assert routed.invoke("Name a cat").response_metadata["base_fraction"] == 0.0
    assert routed.invoke("Name a cat", gamma=1.0).response_metadata["base_fraction"] == 1.0
    assert routed.bind(gamma=1.0).invoke("Name a cat").response_metadata["base_fraction"] == 1.0
    with pytest.raises(ValueError, match="gama"):
        chat.invoke("hi", gama=0.2)
    with pytest.raises(ValueError, match="gama"):
        list(chat.stream("hi", gama=0.2))
    with pytest.raises(ValidationError, match="gama"):
        ChatBaco(engine=engine, gama=0.2)
    # LangChain's own stream flag is understood, not mistaken for a setting
    assert chat.invoke("hi", stream=True).content == chat.invoke("hi").content


def test_cache_keys_on_per_call_settings(engine: BacoEngine) -> None:
    chat = ChatBaco(engine=engine, router="P", gamma=0.0, max_new_tokens=8, cache=InMemoryCache())
    first = chat.invoke("Name a cat")
    assert chat.invoke("Name a cat").content == first.content
    other = chat.invoke("Name a cat", gamma=1.0)
    assert other.response_metadata["base_fraction"] == 1.0
    stopped = ChatBaco(engine=engine, router="P", gamma=0.0, max_new_tokens=8, stop=["a"])
    assert chat._get_llm_string() != stopped._get_llm_string()


def test_ls_params(chat: ChatBaco) -> None:
    params = chat._get_ls_params(stop=["x"], temperature=0.5, model="other")
    assert params == {
        "ls_provider": "baco",
        "ls_model_name": "other",
        "ls_model_type": "chat",
        "ls_temperature": 0.5,
        "ls_max_tokens": 10,
        "ls_stop": ["x"],
    }
    assert chat._get_ls_params()["ls_model_name"] == chat.model_name


def test_chat_prompt_chain_and_callbacks(chat: ChatBaco) -> None:
    class Tokens(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []

        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            self.tokens.append(token)

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You brainstorm."), ("human", "Ideas for {topic}")]
    )
    chain = prompt | chat | StrOutputParser()
    text = chain.invoke({"topic": "a party"})
    recorder = Tokens()
    streamed = "".join(chain.stream({"topic": "a party"}, config={"callbacks": [recorder]}))
    assert streamed == text == "".join(recorder.tokens)


def test_streaming_flag_and_stream_events(engine: BacoEngine) -> None:
    class Tokens(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []

        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            self.tokens.append(token)

    chat = ChatBaco(engine=engine, max_new_tokens=8, seed=0, streaming=True)
    recorder = Tokens()
    reply = chat.invoke("hi", config={"callbacks": [recorder]})
    assert len(recorder.tokens) > 1 and "".join(recorder.tokens) == reply.content
    assert reply.usage_metadata["output_tokens"] == len(reply.response_metadata["sources"])
