"""Token log-probs over the wire: chat's ``logprobs`` / ``top_logprobs`` and the legacy
completions' ``logprobs=k``, whole and streamed, read by the openai client and by LangChain's
``ChatOpenAI``; each choice's ``baco`` block carries both models' mean log-probs."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import openai
import pytest
from openai.types.chat.chat_completion_token_logprob import ChatCompletionTokenLogprob
from openai.types.completion_choice import Logprobs as LegacyLogprobs

from baco_integrations.config import MAX_TOP_LOGPROBS
from baco_integrations.outputs import TokenLogProb, TopLogProb
from baco_integrations.server.responses import LegacyLogprobs as Legacy
from baco_integrations.server.responses import chat_logprobs
from baco_integrations.server.testing import LiveServer, baco_block
from baco_integrations.testing import HANG_GUARD_S

MODEL = "baco-tiny"
HELLO: list[Any] = [{"role": "user", "content": "Hello, name a colour."}]
PROMPT = "Ideas for a coffee shop:"
#: A mixed router, so that both models write tokens; n=2 samples, fixed seed.
CHAT: dict[str, Any] = {
    "model": MODEL,
    "messages": HELLO,
    "seed": 5,
    "n": 2,
    "max_tokens": 12,
    "extra_body": {"router": "P-PUNC", "gamma": 0.5},
}
COMPLETION: dict[str, Any] = {**CHAT, "prompt": PROMPT}
del COMPLETION["messages"]


baco = baco_block  # the choice's provenance (an extra field the openai client keeps)


def spelled(entries: list[ChatCompletionTokenLogprob]) -> str:
    return b"".join(bytes(e.bytes or b"") for e in entries).decode("utf-8", errors="replace")


def check_chat_entries(entries: list[ChatCompletionTokenLogprob], top: int) -> None:
    for entry in entries:
        assert isinstance(entry, ChatCompletionTokenLogprob)
        assert entry.logprob <= 0.0 and entry.bytes is not None
        values = [t.logprob for t in entry.top_logprobs]
        assert len(values) == top and values == sorted(values, reverse=True)
        assert all(t.bytes is not None for t in entry.top_logprobs)


def check_means(choice: Any, asked: bool) -> None:
    block = baco(choice)
    assert "aligned_mean_logprob" in block and "base_mean_logprob" in block
    for name in ("aligned_mean_logprob", "base_mean_logprob"):
        value = block[name]
        assert (isinstance(value, float) and value <= 0.0) if asked else value is None, name
    # per token: its writer and both models' own log-probs of it
    tokens = block["token_logprobs"]
    if not asked:
        assert tokens is None
        return
    assert tokens and all(t["source"] in ("base", "aligned") for t in tokens)
    assert all(t["aligned"] <= 0.0 and t["base"] <= 0.0 for t in tokens)


# ----------------------------------------------------------------------------- chat


def test_chat_whole(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(**CHAT, logprobs=True, top_logprobs=2)
    assert reply.usage is not None
    counted = 0
    for choice in reply.choices:
        assert choice.logprobs is not None and choice.logprobs.content is not None
        entries = choice.logprobs.content
        check_chat_entries(entries, top=2)
        assert spelled(entries) == choice.message.content
        counted += len(entries)
        check_means(choice, asked=True)
    assert counted == reply.usage.completion_tokens


def test_chat_stream_joins_to_the_whole(client: openai.OpenAI) -> None:
    kwargs = {**CHAT, "logprobs": True, "top_logprobs": 3}
    whole = client.chat.completions.create(**kwargs)
    streamed: dict[int, list[ChatCompletionTokenLogprob]] = defaultdict(list)
    finished: dict[int, Any] = {}
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            if choice.delta.role is not None:  # the opening chunk: no tokens yet
                assert choice.logprobs is None
                continue
            assert choice.logprobs is not None and choice.logprobs.content is not None
            streamed[choice.index] += choice.logprobs.content
            if choice.finish_reason is not None:
                finished[choice.index] = choice
    assert sorted(finished) == [0, 1]
    for choice in whole.choices:
        assert choice.logprobs is not None and choice.logprobs.content is not None
        got, want = streamed[choice.index], choice.logprobs.content
        check_chat_entries(got, top=3)
        assert [(e.token, e.bytes) for e in got] == [(e.token, e.bytes) for e in want]
        assert [e.logprob for e in got] == pytest.approx([e.logprob for e in want], abs=1e-5)
        assert [[t.token for t in e.top_logprobs] for e in got] == [
            [t.token for t in e.top_logprobs] for e in want
        ]
        check_means(finished[choice.index], asked=True)
        assert baco(finished[choice.index])["aligned_mean_logprob"] == pytest.approx(
            baco(choice)["aligned_mean_logprob"], abs=1e-5
        )


def test_logprobs_without_alternatives_and_off(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(**CHAT, logprobs=True)
    for choice in reply.choices:
        assert choice.logprobs is not None and choice.logprobs.content
        check_chat_entries(choice.logprobs.content, top=0)
    plain = client.chat.completions.create(**CHAT)
    for choice in plain.choices:
        assert choice.logprobs is None
        check_means(choice, asked=False)
    # the same draw either way: recording does not change the tokens
    assert [c.message.content for c in plain.choices] == [c.message.content for c in reply.choices]


def test_most_alternatives(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        **{**CHAT, "n": 1, "max_tokens": 4}, logprobs=True, top_logprobs=MAX_TOP_LOGPROBS
    )
    (choice,) = reply.choices
    assert choice.logprobs is not None and choice.logprobs.content
    check_chat_entries(choice.logprobs.content, top=MAX_TOP_LOGPROBS)


# ----------------------------------------------------------------------- completions


def check_legacy(logprobs: LegacyLogprobs | None, text: str, top: int) -> int:
    assert isinstance(logprobs, LegacyLogprobs)
    tokens, values = logprobs.tokens, logprobs.token_logprobs
    tops, offsets = logprobs.top_logprobs, logprobs.text_offset
    assert tokens is not None and values is not None and tops is not None and offsets is not None
    assert len(tokens) == len(values) == len(tops) == len(offsets)
    assert offsets == sorted(offsets) and all(0 <= o <= len(text) for o in offsets)
    if tokens:
        assert offsets[0] == 0
    for token, value, alternatives in zip(tokens, values, tops, strict=True):
        assert value is not None and value <= 0.0
        assert token in alternatives  # the sampled token is always listed
        assert len(alternatives) <= top + 1
        assert alternatives[token] == pytest.approx(value) or alternatives[token] >= value
    return len(tokens)


def test_completion_whole(client: openai.OpenAI) -> None:
    reply = client.completions.create(**COMPLETION, logprobs=3)
    assert reply.usage is not None
    counted = 0
    for choice in reply.choices:
        counted += check_legacy(choice.logprobs, choice.text, top=3)
        check_means(choice, asked=True)
    assert counted == reply.usage.completion_tokens


def test_completion_stream_joins_to_the_whole(client: openai.OpenAI) -> None:
    whole = client.completions.create(**COMPLETION, logprobs=2)
    joined: dict[int, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    texts: dict[int, str] = defaultdict(str)
    for chunk in client.completions.create(**COMPLETION, logprobs=2, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            assert choice.logprobs is not None
            for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
                joined[choice.index][name] += getattr(choice.logprobs, name) or []
            if choice.finish_reason is not None:
                check_means(choice, asked=True)
    for choice in whole.choices:
        assert choice.logprobs is not None
        got = joined[choice.index]
        assert texts[choice.index] == choice.text
        assert got["tokens"] == choice.logprobs.tokens
        assert got["text_offset"] == choice.logprobs.text_offset  # offsets run on
        assert got["token_logprobs"] == pytest.approx(choice.logprobs.token_logprobs, abs=1e-5)
        assert [sorted(t) for t in got["top_logprobs"]] == [
            sorted(t) for t in choice.logprobs.top_logprobs or []
        ]
        check_legacy(LegacyLogprobs(**got), choice.text, top=2)


def test_completion_logprobs_zero_lists_the_sampled_token(client: openai.OpenAI) -> None:
    reply = client.completions.create(**{**COMPLETION, "n": 1}, logprobs=0)
    (choice,) = reply.choices
    assert check_legacy(choice.logprobs, choice.text, top=0) > 0
    assert choice.logprobs is not None and choice.logprobs.top_logprobs is not None
    for token, alternatives in zip(
        choice.logprobs.tokens or [], choice.logprobs.top_logprobs, strict=True
    ):
        assert list(alternatives) == [token]
    assert client.completions.create(**COMPLETION).choices[0].logprobs is None


def _entry(token: str, raw: bytes, logprob: float, *top: tuple[str, float]) -> TokenLogProb:
    return TokenLogProb(
        token=token,
        token_id=0,
        logprob=logprob,
        source="base",
        bytes=tuple(raw),
        top_logprobs=tuple(TopLogProb(t, 0, lp, tuple(t.encode())) for t, lp in top),
    )


def test_legacy_offsets_count_characters_across_chunks() -> None:
    """A token holding part of a character starts at that character; offsets run on from one
    chunk to the next; the sampled token is listed, and a token read twice keeps the likelier."""
    e_acute = "é".encode()
    first = [_entry("a", b"a", -0.5, ("a", -0.5), ("b", -1.0))]
    rest = [
        _entry("\ufffd", e_acute[:1], -1.0, ("x", -0.1), ("x", -0.2)),
        _entry("\ufffd", e_acute[1:], -2.0),
        _entry("!", b"!", -3.0, ("?", -0.3)),
    ]
    legacy = Legacy()
    assert legacy.add(first)["text_offset"] == [0]
    later = legacy.add(rest)
    assert later["text_offset"] == [1, 1, 2]  # "a", "é" (two tokens), "!"
    assert later["top_logprobs"] == [
        {"x": -0.1, "\ufffd": -1.0},
        {"\ufffd": -2.0},
        {"?": -0.3, "!": -3.0},
    ]
    assert Legacy().add(first + rest)["text_offset"] == [0, 1, 1, 2]
    chat = chat_logprobs(rest)
    assert chat["refusal"] is None
    assert [e["bytes"] for e in chat["content"]] == [[0xC3], [0xA9], [0x21]]
    assert chat["content"][0]["top_logprobs"][0] == {"token": "x", "bytes": [0x78], "logprob": -0.1}


# ----------------------------------------------------------------------------- errors


def refused(call: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    assert caught.value.status_code == 400
    error = caught.value.response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"logprobs": True, "top_logprobs": MAX_TOP_LOGPROBS + 1}, "less than or equal to 20"),
        ({"top_logprobs": 2}, "needs logprobs=True"),
        ({"logprobs": False, "top_logprobs": 2}, "needs logprobs=True"),
        ({"logprobs": True, "top_logprobs": -1}, "greater than or equal to 0"),
        ({"logprobs": True, "top_logprobs": "2"}, "expected a number"),
    ],
)
def test_chat_refusals_name_top_logprobs(
    client: openai.OpenAI, fields: dict[str, Any], says: str
) -> None:
    error = refused(lambda: client.chat.completions.create(**{**CHAT, "n": 1}, **fields))
    assert error["param"] == "top_logprobs" and says in error["message"]


def test_chat_logprobs_must_be_a_boolean(client: openai.OpenAI) -> None:
    error = refused(
        lambda: client.chat.completions.create(
            **{**CHAT, "n": 1, "extra_body": {"logprobs": "yes"}}
        )
    )
    assert error["param"] == "logprobs"


@pytest.mark.parametrize(
    ("value", "says"),
    [(MAX_TOP_LOGPROBS + 1, "less than or equal to 20"), (-1, "greater"), (True, "number")],
)
def test_completion_refusals_name_logprobs(client: openai.OpenAI, value: Any, says: str) -> None:
    error = refused(lambda: client.completions.create(**{**COMPLETION, "n": 1}, logprobs=value))
    assert error["param"] == "logprobs" and says in error["message"]


def test_other_unsupported_fields_are_still_refused(client: openai.OpenAI) -> None:
    error = refused(
        lambda: client.chat.completions.create(**CHAT, logprobs=True, presence_penalty=0.5)
    )
    assert error["param"] == "presence_penalty" and error["code"] == "unsupported"


# -------------------------------------------------------------------------- LangChain


def test_langchain_chat_openai(server: LiveServer) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    model = langchain_openai.ChatOpenAI(
        model=MODEL,
        base_url=server.base_url,
        api_key="test-key",
        max_tokens=10,
        seed=3,
        logprobs=True,
        top_logprobs=2,
        stream_usage=True,
        max_retries=0,
        timeout=HANG_GUARD_S,
    )
    message = model.invoke("Name a colour.")
    content = message.response_metadata["logprobs"]["content"]
    assert message.usage_metadata is not None
    assert len(content) == message.usage_metadata["output_tokens"]
    for entry in content:
        assert set(entry) >= {"token", "bytes", "logprob", "top_logprobs"}
        assert len(entry["top_logprobs"]) == 2
    streamed = None
    for chunk in model.stream("Name a colour."):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None
    assert streamed.content == message.content
    joined = streamed.response_metadata["logprobs"]["content"]
    assert [e["token"] for e in joined] == [e["token"] for e in content]
