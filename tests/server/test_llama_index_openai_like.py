"""LlamaIndex's ``OpenAILike`` pointed at the server, in chat and completion modes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.llms.openai_like import OpenAILike  # type: ignore[import-untyped]

from baco_integrations.server.testing import LiveServer
from baco_integrations.testing import HANG_GUARD_S

MESSAGES = [
    ChatMessage(role=MessageRole.SYSTEM, content="You name colours."),
    ChatMessage(role=MessageRole.USER, content="Name one."),
]


def make_llm(server: LiveServer, *, chat: bool) -> OpenAILike:
    return OpenAILike(
        model="baco-tiny",
        api_base=server.base_url,
        api_key="test-key",
        is_chat_model=chat,
        context_window=512,
        max_tokens=6,
        temperature=0.0,
        max_retries=0,
        timeout=HANG_GUARD_S,
        additional_kwargs={"seed": 0, "extra_body": {"router": "P-PUNC", "gamma": 0.3}},
    )


@pytest.fixture
def chat_llm(server: LiveServer) -> Iterator[OpenAILike]:
    yield make_llm(server, chat=True)


@pytest.fixture
def completion_llm(server: LiveServer) -> Iterator[OpenAILike]:
    yield make_llm(server, chat=False)


def test_chat_mode(chat_llm: OpenAILike) -> None:
    reply = chat_llm.chat(MESSAGES)
    assert reply.message.role == MessageRole.ASSISTANT
    text = reply.message.content or ""
    streamed = "".join(part.delta or "" for part in chat_llm.stream_chat(MESSAGES))
    assert streamed == text  # greedy: the same words either way
    # complete() on a chat model goes through /v1/chat/completions too.
    assert (
        chat_llm.complete("Name one.").text
        == chat_llm.chat([ChatMessage(role=MessageRole.USER, content="Name one.")]).message.content
    )


def test_baco_settings_and_provenance(server: LiveServer) -> None:
    llm = make_llm(server, chat=True)
    llm.additional_kwargs = {"extra_body": {"router": "base"}}
    raw = llm.chat(MESSAGES).raw
    assert raw is not None
    assert raw.choices[0].model_extra["baco"]["base_fraction"] == 1.0


def test_completion_mode(completion_llm: OpenAILike) -> None:
    reply = completion_llm.complete("Once upon a time")
    streamed = "".join(
        part.delta or "" for part in completion_llm.stream_complete("Once upon a time")
    )
    assert streamed == reply.text
    assert reply.raw is not None and reply.raw.choices[0].finish_reason in {"stop", "length"}


async def test_async(chat_llm: OpenAILike, completion_llm: OpenAILike) -> None:
    reply = await chat_llm.achat(MESSAGES)
    assert reply.message.content == chat_llm.chat(MESSAGES).message.content
    text = ""
    async for part in await completion_llm.astream_complete("Once upon a time"):
        text += part.delta or ""
    assert text == (await completion_llm.acomplete("Once upon a time")).text
