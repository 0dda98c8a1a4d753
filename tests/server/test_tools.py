"""Tool calling through the server (issue 27): ``tools``/``tool_choice`` with the openai client
and ``ChatOpenAI.bind_tools`` pointed at the server, whole and streamed, calls and tool results
in the input, and refusals that name the field. The tiny pair is random, so each call is
checked against its tool's schema (the grammar makes it valid), never for what it says."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import jsonschema
import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from pydantic import BaseModel, Field

from baco_integrations import BacoEngine
from baco_integrations.server import ServerConfig
from baco_integrations.server.testing import LiveServer, baco_block, running_server
from baco_integrations.testing import HANG_GUARD_S
from baco_integrations.tool_calls import (
    ToolSpec,
    call_text,
    result_text,
    with_tools_prompt,
)

MODEL = "baco-tiny"
KEY = "test-key"
#: The tiny models' window is 512 tokens, and their small vocabulary spends about one token
#: per character of JSON: the tools' instructions take some 400 tokens, so the tools are
#: small and bounded (a call is some 40 tokens) and the budget ends at the window.
BUDGET = 160
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 2 + 3?"}]

DIGIT = {"type": "integer", "minimum": 0, "maximum": 9}
ADD_SCHEMA = {"type": "object", "properties": {"a": DIGIT, "b": DIGIT}, "required": ["a", "b"]}
CITY_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 6}},
    "required": ["name"],
}
SCHEMAS = {"add": ADD_SCHEMA, "city": CITY_SCHEMA}
TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": name, "parameters": schema}}
    for name, schema in SCHEMAS.items()
]
ADD = TOOLS[:1]


@pytest.fixture(scope="module")
def tool_server(engine: BacoEngine, test_config: ServerConfig) -> Iterator[LiveServer]:
    """The tiny engine's server, with a budget long enough for a whole call."""
    with running_server(engine, test_config.updated(max_tokens=BUDGET)) as running:
        yield running


@pytest.fixture
def tool_client(tool_server: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=tool_server.base_url, api_key=KEY, max_retries=0, timeout=HANG_GUARD_S
    ) as opened:
        yield opened


@pytest.fixture
def tool_http(tool_server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(
        base_url=tool_server.base_url, headers=headers, timeout=HANG_GUARD_S
    ) as client:
        yield client


def check_call(call: Any, names: set[str]) -> dict[str, Any]:
    """An OpenAI tool call to one of ``names`` whose arguments are valid for its schema."""
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in names
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, SCHEMAS[call.function.name])
    return arguments


@pytest.mark.parametrize(
    ("tool_choice", "names"),
    [
        ("required", {"add", "city"}),
        ({"type": "function", "function": {"name": "city"}}, {"city"}),
    ],
    ids=["required", "named"],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_forced_call_is_a_valid_tool_call(
    tool_client: openai.OpenAI, tool_choice: Any, names: set[str], seed: int
) -> None:
    reply = tool_client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        tools=TOOLS,
        tool_choice=tool_choice,
        parallel_tool_calls=False,
        n=4,
        seed=seed,
        max_tokens=BUDGET,
    )
    assert len(reply.choices) == 4
    for choice in reply.choices:
        assert choice.finish_reason == "tool_calls"
        message = choice.message
        assert message.role == "assistant" and message.content is None
        (call,) = message.tool_calls or []
        check_call(call, names)
        # The provenance is the call's text, as the models wrote it.
        spans = baco_block(choice)["spans"]
        written = json.loads("".join(span["text"] for span in spans))
        assert written == {
            "name": call.function.name,
            "arguments": json.loads(call.function.arguments),
        }
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_tool_choice_none_and_auto(tool_client: openai.OpenAI) -> None:
    none = tool_client.chat.completions.create(
        model=MODEL, messages=QUESTION, tools=TOOLS, tool_choice="none", n=4, seed=0, max_tokens=8
    )
    for choice in none.choices:
        assert choice.message.tool_calls is None and isinstance(choice.message.content, str)
        assert choice.finish_reason in {"stop", "length"}
    auto = tool_client.chat.completions.create(
        model=MODEL, messages=QUESTION, tools=TOOLS, n=8, seed=0, max_tokens=BUDGET
    )
    for choice in auto.choices:  # either text or a call, never both
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls" and choice.message.content is None
            (call,) = choice.message.tool_calls
            check_call(call, {"add", "city"})
        else:
            assert isinstance(choice.message.content, str)
            assert not choice.message.content.startswith("{")
            assert choice.finish_reason in {"stop", "length"}


def test_log_probs_of_a_call(tool_client: openai.OpenAI) -> None:
    reply = tool_client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        tools=TOOLS,
        tool_choice="required",
        seed=3,
        max_tokens=BUDGET,
        logprobs=True,
        top_logprobs=2,
    )
    (choice,) = reply.choices
    assert choice.message.tool_calls and choice.logprobs and choice.logprobs.content
    text = "".join(entry.token for entry in choice.logprobs.content)
    assert json.loads(text)["name"] == choice.message.tool_calls[0].function.name


def test_a_streamed_call_comes_in_tool_call_deltas(tool_client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {
        "model": MODEL,
        "messages": QUESTION,
        "tools": TOOLS,
        "tool_choice": "required",
        "n": 3,
        "seed": 5,
        "max_tokens": BUDGET,
        "logprobs": True,
    }
    whole = tool_client.chat.completions.create(**kwargs)
    chunks = list(
        tool_client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    calls: dict[int, dict[str, str]] = defaultdict(lambda: {"id": "", "name": "", "arguments": ""})
    finishes: dict[int, list[str]] = defaultdict(list)
    tokens: dict[int, list[str]] = defaultdict(list)
    for chunk in chunks:
        for choice in chunk.choices:
            assert not choice.delta.content  # a call has no text deltas
            if choice.logprobs is not None:
                tokens[choice.index] += [entry.token for entry in choice.logprobs.content or []]
            for delta in choice.delta.tool_calls or []:
                assert delta.index == 0
                call = calls[choice.index]
                call["id"] += delta.id or ""
                call["name"] += (delta.function and delta.function.name) or ""
                call["arguments"] += (delta.function and delta.function.arguments) or ""
            if choice.finish_reason is not None:
                finishes[choice.index].append(choice.finish_reason)
                assert baco_block(choice)["spans"]
    assert chunks[-1].usage is not None and chunks[-1].usage == whole.usage
    for choice in whole.choices:
        (expected,) = choice.message.tool_calls or []
        streamed = calls[choice.index]
        assert streamed["id"].startswith("call_")
        assert streamed["name"] == expected.function.name
        assert json.loads(streamed["arguments"]) == json.loads(expected.function.arguments)
        assert finishes[choice.index] == ["tool_calls"]
        assert choice.logprobs is not None and choice.logprobs.content
        assert tokens[choice.index] == [entry.token for entry in choice.logprobs.content]


def test_a_streamed_call_cut_short_streams_as_its_text(tool_client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "messages": QUESTION, "tools": TOOLS}
    kwargs |= {"tool_choice": "required", "seed": 0, "max_tokens": 12}
    whole = tool_client.chat.completions.create(**kwargs)
    (choice,) = whole.choices
    assert choice.finish_reason == "length" and choice.message.tool_calls is None
    assert choice.message.content and choice.message.content.startswith('{"name": ')
    chunks = list(tool_client.chat.completions.create(**kwargs, stream=True))
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) > 1  # piece by piece, as written
    assert "".join(deltas) == choice.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_the_openai_stream_helper_accumulates_the_call(tool_client: openai.OpenAI) -> None:
    with tool_client.chat.completions.stream(
        model=MODEL,
        messages=QUESTION,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "add"}},
        seed=1,
        max_tokens=BUDGET,
    ) as stream:
        final = stream.get_final_completion()
    (choice,) = final.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    check_call(call, {"add"})


@pytest.mark.parametrize("tool_choice", ["none", "auto"])
def test_a_streamed_text_reply_under_tools_streams_as_text(
    tool_client: openai.OpenAI, tool_choice: str
) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "messages": QUESTION, "tools": TOOLS}
    kwargs |= {"tool_choice": tool_choice, "seed": 2, "max_tokens": 12, "n": 3}
    whole = tool_client.chat.completions.create(**kwargs)
    texts: dict[int, list[str]] = defaultdict(list)
    for chunk in tool_client.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            assert not choice.delta.tool_calls
            if choice.delta.content:
                texts[choice.index].append(choice.delta.content)
    for choice in whole.choices:
        assert choice.message.tool_calls is None and choice.message.content
        assert not choice.message.content.startswith("{")
        assert "".join(texts[choice.index]) == choice.message.content
        assert len(texts[choice.index]) > 1  # streamed as written, not held


def test_a_call_and_its_result_are_turns_the_models_read(
    tool_client: openai.OpenAI, engine: BacoEngine
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Use the tools."},
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
    ]
    reply = tool_client.chat.completions.create(
        model=MODEL, messages=messages, tools=ADD, seed=0, max_tokens=BUDGET
    )
    (choice,) = reply.choices
    assert choice.finish_reason in {"stop", "length", "tool_calls"}
    # What the models read: the call as they write one, its result as a user turn, and the
    # tools' instructions in the system message.
    expected = with_tools_prompt(
        [
            {"role": "system", "content": "Use the tools."},
            {"role": "user", "content": "What is 2 + 3?"},
            {"role": "assistant", "content": call_text("add", {"a": 2, "b": 3})},
            {"role": "user", "content": result_text("add", "5")},
        ],
        [ToolSpec.from_openai(dict(t)) for t in ADD],
        "auto",
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(engine.encode_prompts(expected)["aligned"])


def test_an_assistant_call_with_text_and_without_tools_is_read(
    tool_client: openai.OpenAI, engine: BacoEngine
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        *QUESTION,
        {
            "role": "assistant",
            "content": "Let me add.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "5"}]},
    ]
    reply = tool_client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    expected = [
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "Let me add.\n" + call_text("add", {})},
        {"role": "user", "content": result_text("add", "5")},
    ]
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(engine.encode_prompts(expected)["aligned"])


def _bad(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": QUESTION, "max_tokens": 4, **fields}


CALLED: list[dict[str, Any]] = [
    *QUESTION,
    {
        "role": "assistant",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
        ],
    },
]


BAD_SCHEMA = {
    "type": "function",
    "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": 5}}}},
}
BAD_ARGUMENTS = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{a"}}


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        (_bad(tools={"type": "function"}), "tools", "must be a list"),
        (_bad(tools=["add"]), "tools[0]", "must be an object"),
        (_bad(tools=[{"type": "web_search"}]), "tools[0].type", "not supported"),
        (_bad(tools=[*TOOLS, {"type": "custom", "custom": {}}]), "tools[2].type", "function"),
        (_bad(tools=[{"type": "function"}]), "tools[0].function", "must be an object"),
        (_bad(tools=[{"type": "function", "function": {}}]), "tools[0].function.name", "string"),
        (
            _bad(tools=[{"type": "function", "function": {"name": "a b"}}]),
            "tools[0].function.name",
            "pattern",
        ),
        (
            _bad(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
            "tools[0].function.parameters",
            "JSON schema of an object",
        ),
        (_bad(tools=[TOOLS[0], TOOLS[0]]), "tools[1].function.name", "unique"),
        (_bad(tools=[BAD_SCHEMA], tool_choice="required"), "tools", "do not compile"),
        (_bad(tools=[BAD_SCHEMA]), "tools", "do not compile"),
        (_bad(tools=TOOLS, tool_choice="always"), "tool_choice", "tool_choice='always'"),
        (_bad(tools=TOOLS, tool_choice="sum"), "tool_choice", "is not allowed"),
        (
            _bad(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "sum"}}),
            "tool_choice",
            "is not allowed",
        ),
        (_bad(tools=TOOLS, tool_choice={"type": "allowed_tools"}), "tool_choice", "supported"),
        (_bad(tool_choice="required"), "tool_choice", "needs at least one tool"),
        (_bad(tools=TOOLS, parallel_tool_calls="yes"), "parallel_tool_calls", "boolean"),
        (
            _bad(tools=TOOLS, response_format={"type": "json_object"}),
            "response_format",
            "cannot both",
        ),
        (_bad(tools=TOOLS, constraint={"regex": "a+"}), "constraint", "give one"),
        (_bad(functions=[{"name": "f"}]), "functions", "send tools"),
        (
            _bad(messages=[*QUESTION, {"role": "assistant", "tool_calls": [BAD_ARGUMENTS]}]),
            "messages[1].tool_calls[0].function.arguments",
            "JSON object",
        ),
        (
            _bad(messages=[*QUESTION, {"role": "tool", "tool_call_id": "c1", "content": "5"}]),
            "messages[1].role",
            "answers a tool call",
        ),
        (
            _bad(messages=[*CALLED, {"role": "tool", "tool_call_id": "c2", "content": "5"}]),
            "messages[2].tool_call_id",
            "answers none",
        ),
        (
            _bad(messages=[*CALLED[:1], {"role": "user", "content": "x", "tool_calls": [{}]}]),
            "messages[1].tool_calls",
            "only assistant messages",
        ),
        (
            _bad(messages=[*QUESTION, {"role": "assistant", "tool_calls": [{"id": "c1"}]}]),
            "messages[1].tool_calls[0]",
            "must be a function call",
        ),
        (
            _bad(messages=[*QUESTION, {"role": "assistant", "function_call": {"name": "f"}}]),
            "messages[1].function_call",
            "send tool_calls",
        ),
    ],
)
def test_bad_tools_are_refused_by_name(
    tool_http: httpx.Client, body: dict[str, Any], param: str, says: str
) -> None:
    response = tool_http.post("/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert says in error["message"]


def test_the_openai_client_sees_a_bad_tool_choice(tool_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        tool_client.chat.completions.create(
            model=MODEL, messages=QUESTION, tools=TOOLS, tool_choice="nobody", max_tokens=4
        )
    assert raised.value.param == "tool_choice"  # type: ignore[attr-defined]


# ------------------------------------------------------------------------- LangChain


@tool
def add(a: Annotated[int, Field(ge=0, le=9)], b: Annotated[int, Field(ge=0, le=9)]) -> int:
    """Add."""
    return a + b


class City(BaseModel):
    """A city."""

    name: str = Field(max_length=6)


@pytest.fixture
def chat_openai(tool_server: LiveServer) -> ChatOpenAI:
    return ChatOpenAI(
        model=MODEL,
        base_url=tool_server.base_url,
        api_key=KEY,  # type: ignore[arg-type]
        max_tokens=BUDGET,  # type: ignore[call-arg]
        max_retries=0,
        timeout=HANG_GUARD_S,
    )


@pytest.mark.parametrize(("tool_choice", "names"), [("City", {"City"}), ("any", {"add", "City"})])
@pytest.mark.parametrize("seed", [0, 1])
def test_chat_openai_bind_tools(
    chat_openai: ChatOpenAI, tool_choice: str, names: set[str], seed: int
) -> None:
    bound = chat_openai.bind_tools([add, City], tool_choice=tool_choice)
    reply = bound.invoke("What is 2 + 3?", seed=seed)
    assert isinstance(reply, AIMessage)
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    assert not reply.invalid_tool_calls and reply.content == ""
    (call,) = reply.tool_calls
    assert call["id"] and call["name"] in names
    if call["name"] == "City":
        City.model_validate(call["args"])
    else:
        assert add.invoke(call["args"]) == call["args"]["a"] + call["args"]["b"]


def test_chat_openai_streams_a_call(chat_openai: ChatOpenAI) -> None:
    bound = chat_openai.bind_tools([City], tool_choice="City")
    whole = bound.invoke("Which city?", seed=4)
    assert isinstance(whole, AIMessage)
    streamed: AIMessageChunk | None = None
    for piece in bound.stream("Which city?", seed=4):
        assert isinstance(piece, AIMessageChunk)
        streamed = piece if streamed is None else streamed + piece
    assert streamed is not None and streamed.tool_calls
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [
        (c["name"], c["args"]) for c in whole.tool_calls
    ]
    assert streamed.response_metadata["finish_reason"] == "tool_calls"


def test_chat_openai_round_trip(chat_openai: ChatOpenAI) -> None:
    bound = chat_openai.bind_tools([add])  # tool_choice auto: text or a call
    question = HumanMessage("What is 2 + 3?")
    first = bound.invoke([question], tool_choice="add", seed=0)
    assert isinstance(first, AIMessage) and first.tool_calls
    (call,) = first.tool_calls
    result = ToolMessage(str(add.invoke(call["args"])), tool_call_id=call["id"])
    second = bound.invoke([question, first, result], seed=0)
    assert isinstance(second, AIMessage)
    assert second.response_metadata["finish_reason"] in {"stop", "length", "tool_calls"}
