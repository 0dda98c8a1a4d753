"""The openai client against the real app on 127.0.0.1: chat and completions, sync and async,
whole and streamed, n, stop, usage, BACO settings and provenance."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from baco_integrations import BacoEngine
from baco_integrations.server.testing import LiveServer, baco_block
from baco_integrations.testing import HANG_GUARD_S

MODEL = "baco-tiny"
QUESTION = "Hello, name a colour."
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": QUESTION}]


baco = baco_block  # the choice's provenance (an extra field the openai client keeps)


def check_provenance(text: str, provenance: dict[str, Any]) -> None:
    spans = provenance["spans"]
    assert "".join(span["text"] for span in spans) == text
    assert all(span["source"] in {"base", "aligned"} for span in spans)
    assert 0.0 <= provenance["base_fraction"] <= 1.0


def test_chat_completion(client: openai.OpenAI, engine: BacoEngine) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, seed=3, max_tokens=6)
    assert reply.object == "chat.completion" and reply.model == MODEL
    assert reply.id.startswith("chatcmpl-")
    (choice,) = reply.choices
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.finish_reason in {"stop", "length"}
    assert isinstance(choice.message.content, str)
    check_provenance(choice.message.content, baco(choice))
    usage = reply.usage
    assert usage is not None
    prompt = engine.encode_prompts([{"role": "user", "content": QUESTION}])
    assert usage.prompt_tokens == len(prompt["aligned"])
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if choice.finish_reason == "length":
        assert usage.completion_tokens == 6
    assert 0 < usage.completion_tokens <= 6 or choice.finish_reason == "stop"


def test_n_choices_and_seed(client: openai.OpenAI) -> None:
    def ask() -> Any:
        return client.chat.completions.create(
            model=MODEL, messages=HELLO, n=3, seed=11, temperature=1.0, top_p=0.9, max_tokens=8
        )

    first, again = ask(), ask()
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert len({c.message.content for c in first.choices}) > 1  # n samples, not one copied
    assert first.usage is not None
    assert first.usage.prompt_tokens == again.usage.prompt_tokens  # counted once for n


def test_max_tokens_and_max_completion_tokens(client: openai.OpenAI) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        limit: dict[str, Any] = {field: 3}
        reply = client.chat.completions.create(
            model=MODEL, messages=HELLO, seed=5, temperature=0, **limit
        )
        assert reply.usage is not None and reply.usage.completion_tokens <= 3
        if reply.choices[0].finish_reason == "length":
            assert reply.usage.completion_tokens == 3


def _stop_for(text: str) -> str:
    """Two letters from inside ``text`` (not at its start)."""
    for i in range(1, len(text) - 1):
        if text[i : i + 2].isascii() and text[i : i + 2].isalpha():
            return text[i : i + 2]
    pytest.fail(f"no letters to stop at in {text!r}")


@pytest.mark.parametrize("as_list", [False, True])
def test_stop(client: openai.OpenAI, as_list: bool) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "messages": HELLO, "seed": 2, "max_tokens": 24}
    full = client.chat.completions.create(**kwargs).choices[0].message.content or ""
    stop = _stop_for(full)
    cut = client.chat.completions.create(
        **kwargs, stop=[stop, "never-seen"] if as_list else stop
    ).choices[0]
    assert cut.message.content == full[: full.find(stop)]
    assert cut.finish_reason == "stop"


def test_baco_settings_ride_as_extra_fields(client: openai.OpenAI) -> None:
    def base_share(router: str) -> float:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            seed=0,
            extra_body={"router": router, "top_k": 50, "min_p": 0.05, "system_prompt": "Be brief."},
        )
        return baco(reply.choices[0])["base_fraction"]

    assert base_share("base") == 1.0
    assert base_share("aligned") == 0.0
    reply = client.chat.completions.create(
        model=MODEL, messages=HELLO, seed=0, extra_body={"router": "P-PUNC", "gamma": 0.3}
    )
    check_provenance(reply.choices[0].message.content or "", baco(reply.choices[0]))


class Answer(BaseModel):
    ok: bool
    colour: Literal["red", "green", "blue"]


def test_response_format_json_schema(client: openai.OpenAI) -> None:
    """Samples are decoded under the schema: every one parses, whichever model wrote it."""
    reply = client.chat.completions.parse(
        model=MODEL, messages=HELLO, response_format=Answer, n=4, seed=0, max_tokens=64
    )
    for choice in reply.choices:
        assert isinstance(choice.message.parsed, Answer), choice.message.content
        check_provenance(choice.message.content or "", baco(choice))
    regex = client.chat.completions.create(
        model=MODEL, messages=HELLO, seed=0, extra_body={"constraint": {"regex": "(yes|no)!"}}
    )
    assert regex.choices[0].message.content in {"yes!", "no!"}


def stream_chat(client: openai.OpenAI, **kwargs: Any) -> list[Any]:
    return list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True, **kwargs))


def test_chat_stream_matches_the_whole_reply(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"seed": 7, "max_tokens": 10, "n": 2}
    whole = client.chat.completions.create(model=MODEL, messages=HELLO, **kwargs)
    chunks = stream_chat(client, **kwargs)
    texts: dict[int, str] = defaultdict(str)
    finishes: dict[int, list[str]] = defaultdict(list)
    first_delta: dict[int, Any] = {}
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk" and chunk.id == chunks[0].id
        assert chunk.usage is None  # no include_usage: no usage anywhere
        for choice in chunk.choices:
            first_delta.setdefault(choice.index, choice.delta)
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason is not None:
                finishes[choice.index].append(choice.finish_reason)
                check_provenance(texts[choice.index], baco(choice))
    assert sorted(first_delta) == [0, 1]
    assert all(delta.role == "assistant" for delta in first_delta.values())
    for choice in whole.choices:
        assert texts[choice.index] == choice.message.content
        assert finishes[choice.index] == [choice.finish_reason]


def test_stream_usage_comes_last(client: openai.OpenAI) -> None:
    chunks = stream_chat(client, seed=1, max_tokens=5, stream_options={"include_usage": True})
    *body, last = chunks
    assert last.choices == [] and last.usage is not None
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(chunk.usage is None for chunk in body)
    assert any(choice.finish_reason for chunk in body for choice in chunk.choices)


def test_stream_wire_format(server: LiveServer) -> None:
    """The raw events: JSON ``data:`` lines, the role first, ``data: [DONE]`` last."""
    body = {"model": MODEL, "messages": HELLO, "stream": True, "max_tokens": 4, "seed": 0}
    with (
        httpx.Client(timeout=HANG_GUARD_S) as http,
        http.stream("POST", f"{server.base_url}/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    first = httpx.Response(200, content=events[0].removeprefix("data: ")).json()
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}


async def test_async_client(server: LiveServer) -> None:
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key="test-key", max_retries=0, timeout=HANG_GUARD_S
    ) as client:
        whole = await client.chat.completions.create(
            model=MODEL, messages=HELLO, seed=4, max_tokens=6
        )
        stream = await client.chat.completions.create(
            model=MODEL, messages=HELLO, seed=4, max_tokens=6, stream=True
        )
        text = ""
        async for chunk in stream:
            text += "".join(choice.delta.content or "" for choice in chunk.choices)
        assert text == whole.choices[0].message.content
        completion = await client.completions.create(
            model=MODEL, prompt="Once upon", seed=4, max_tokens=4
        )
        assert completion.choices[0].finish_reason in {"stop", "length"}


def test_completions(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=MODEL, prompt=["Once upon", "The sea"], n=2, seed=9, max_tokens=5
    )
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    for choice in reply.choices:
        check_provenance(choice.text, baco(choice))
    alone = client.completions.create(model=MODEL, prompt="The sea", n=2, seed=9, max_tokens=5)
    assert [c.text for c in reply.choices[2:]] == [c.text for c in alone.choices]
    assert reply.usage is not None and alone.usage is not None
    assert reply.usage.completion_tokens >= alone.usage.completion_tokens


def test_completions_stream(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"prompt": ["Once upon", "The sea"], "seed": 9, "max_tokens": 5}
    whole = client.completions.create(model=MODEL, **kwargs)
    texts: dict[int, str] = defaultdict(str)
    finished: dict[int, str] = {}
    usage = None
    for chunk in client.completions.create(
        model=MODEL, stream=True, stream_options={"include_usage": True}, **kwargs
    ):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason:
                finished[choice.index] = choice.finish_reason
    assert {c.index: c.text for c in whole.choices} == dict(texts)
    assert {c.index: c.finish_reason for c in whole.choices} == finished
    assert usage is not None and whole.usage is not None
    assert usage.model_dump() == whole.usage.model_dump()


def test_models(client: openai.OpenAI, engine: BacoEngine) -> None:
    (model,) = client.models.list().data
    assert model.id == MODEL and model.owned_by == "baco"
    assert (model.model_extra or {})["baco"] == engine.model_names
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_health(http: httpx.Client) -> None:
    answer = http.get("/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "model": MODEL, "live_rows": 0, "waiting": 0}
