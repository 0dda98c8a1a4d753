"""ChatBaco.bind_tools: calls decoded under the tools' grammar, parsed into ``tool_calls``
(streamed: ``tool_call_chunks``), and a LangGraph agent that runs on ChatBaco."""

from __future__ import annotations

import warnings
from typing import Any

import jsonschema
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from baco_integrations import BacoEngine
from baco_integrations.langchain import ChatBaco


@tool
def add(a: int, b: int) -> int:
    """Add two small integers."""
    return a + b


class Weather(BaseModel):
    """The weather in a city."""

    city: str = Field(max_length=12)


#: Bounded arguments: a random tiny model closes a call within the budget.
ADD_SCHEMA = {
    "type": "object",
    "properties": {
        "a": {"type": "integer", "minimum": 0, "maximum": 99},
        "b": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["a", "b"],
}
SMALL_ADD = {
    "type": "function",
    "function": {"name": "add", "description": "Add two small integers.", "parameters": ADD_SCHEMA},
}


@pytest.fixture(params=["shared", "cross"])
def pair_engine(request: pytest.FixtureRequest) -> BacoEngine:
    return request.getfixturevalue("engine" if request.param == "shared" else "cross_engine")


@pytest.mark.parametrize("tool_choice", ["add", "required"])
def test_a_forced_call_is_valid_for_fifty_seeds(pair_engine: BacoEngine, tool_choice: str) -> None:
    chat = ChatBaco(engine=pair_engine, max_new_tokens=96)
    tools = [SMALL_ADD, Weather]
    result = chat.generate(
        [[HumanMessage("What is 2 + 3?")]],
        tools=chat.bind_tools(tools).kwargs["tools"],
        tool_choice=tool_choice,
        n=50,
        seed=0,
    )
    replies = [g.message for g in result.generations[0]]
    assert len(replies) == 50
    for reply in replies:
        assert isinstance(reply, AIMessage)
        if reply.response_metadata["finish_reason"] == "length":
            continue  # a clear budget error: the call was not complete
        assert reply.response_metadata["finish_reason"] == "tool_calls"
        (call,) = reply.tool_calls
        assert call["id"] and call["type"] == "tool_call"
        assert tool_choice == "required" or call["name"] == "add"
        schema = ADD_SCHEMA if call["name"] == "add" else Weather.model_json_schema()
        jsonschema.validate(call["args"], schema)
    assert sum(bool(r.tool_calls) for r in replies) >= 25  # type: ignore[attr-defined]


def test_streamed_calls_come_as_tool_call_chunks(engine: BacoEngine) -> None:
    chat = ChatBaco(engine=engine, max_new_tokens=96).bind_tools([SMALL_ADD], tool_choice="add")
    compared = 0
    for seed in range(3):
        invoked = chat.invoke("Add 2 and 3.", seed=seed)
        chunks = list(chat.stream("Add 2 and 3.", seed=seed))
        total: Any = chunks[0]
        for chunk in chunks[1:]:
            total = total + chunk
        assert isinstance(total, AIMessageChunk)
        if invoked.tool_calls:  # type: ignore[attr-defined]
            assert [(c["name"], c["args"]) for c in total.tool_calls] == [
                (c["name"], c["args"])
                for c in invoked.tool_calls  # type: ignore[attr-defined]
            ]
            assert total.response_metadata["finish_reason"] == "tool_calls"
            compared += 1
    assert compared  # at least one seed's call was complete within the budget


async def test_async_calls_and_auto(engine: BacoEngine) -> None:
    chat = ChatBaco(engine=engine, max_new_tokens=64)
    forced = await chat.bind_tools([SMALL_ADD], tool_choice="required").ainvoke("hi", seed=4)
    assert forced.tool_calls or forced.response_metadata["finish_reason"] == "length"  # type: ignore[attr-defined]
    auto = chat.bind_tools([SMALL_ADD])
    for seed in range(5):
        reply = await auto.ainvoke("hi", seed=seed)
        assert (
            reply.tool_calls
            or not str(reply.content).startswith("{")
            or (  # type: ignore[attr-defined]
                reply.response_metadata["finish_reason"] == "length"
            )
        )
    text = await chat.bind_tools([SMALL_ADD], tool_choice="none").ainvoke("hi", seed=1)
    assert not text.tool_calls  # type: ignore[attr-defined]


def test_bad_tool_settings_are_refused(engine: BacoEngine) -> None:
    chat = ChatBaco(engine=engine)
    with pytest.raises(ValueError, match="tool_choice='sub' is not allowed.*add"):
        chat.bind_tools([add], tool_choice="sub")
    with pytest.raises(ValueError, match="cannot also have a constraint"):
        chat.bind_tools([add], tool_choice="add").invoke("hi", constraint={"regex": "a"})
    assert chat.get_num_tokens_from_messages([HumanMessage("hi")], tools=[add]) > (
        chat.get_num_tokens_from_messages([HumanMessage("hi")])
    )


def _first_call_forced(chat: ChatBaco, tools: list[Any]) -> Any:
    """A LangGraph dynamic model: the first turn must call a tool, later turns answer."""

    def select(state: Any, runtime: Any) -> Any:
        answered = any(isinstance(m, ToolMessage) for m in state["messages"])
        return chat.bind_tools(tools, tool_choice="none" if answered else "required")

    return select


@pytest.mark.parametrize("pair", ["shared", "cross"])
def test_a_langgraph_agent_calls_the_tool_and_answers(
    pair: str, engine: BacoEngine, cross_engine: BacoEngine
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from langgraph.prebuilt import create_react_agent

    class Key(BaseModel):
        key: int = Field(ge=0, le=99)

    @tool(args_schema=Key)
    def lookup(key: int) -> str:
        """Look up a small integer key."""
        return f"value-{key}"

    chat = ChatBaco(engine=engine if pair == "shared" else cross_engine, max_new_tokens=48, seed=0)
    agent = create_react_agent(_first_call_forced(chat, [lookup]), [lookup])
    state = agent.invoke({"messages": [HumanMessage("Look up key 7.")]}, {"recursion_limit": 8})
    messages = state["messages"]
    calls = [m for m in messages if isinstance(m, AIMessage) and m.tool_calls]
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert calls and results and results[0].content.startswith("value-")
    assert results[0].tool_call_id == calls[0].tool_calls[0]["id"]
    final = messages[-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
