"""BacoLLM as a FunctionCallingLLM: chat_with_tools decodes under the tools' grammar, the
call comes back as a ToolCallBlock, and a FunctionAgent runs a loop on it."""

from __future__ import annotations

import jsonschema
import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, Field

from baco_integrations import BacoEngine
from baco_integrations.llama_index import BacoLLM
from baco_integrations.llama_index.base import to_conversation


class AddArgs(BaseModel):
    a: int = Field(ge=0, le=99)
    b: int = Field(ge=0, le=99)


def add(a: int, b: int) -> int:
    """Add two small integers."""
    return a + b


class KeyArgs(BaseModel):
    key: int = Field(ge=0, le=99)


def lookup(key: int) -> str:
    """Look up a small integer key."""
    return f"value-{key}"


ADD = FunctionTool.from_defaults(fn=add, fn_schema=AddArgs)
LOOKUP = FunctionTool.from_defaults(fn=lookup, fn_schema=KeyArgs)


@pytest.fixture(params=["shared", "cross"])
def pair_engine(request: pytest.FixtureRequest) -> BacoEngine:
    return request.getfixturevalue("engine" if request.param == "shared" else "cross_engine")


def test_a_required_call_is_valid_and_read_back(pair_engine: BacoEngine) -> None:
    llm = BacoLLM(engine=pair_engine, max_new_tokens=64)
    calls = 0
    for seed in range(10):
        response = llm.chat_with_tools([ADD, LOOKUP], "Add 2 and 3.", tool_required=True, seed=seed)
        if response.additional_kwargs["finish_reason"] == "length":
            continue  # a clear budget error: the call was not complete
        assert response.additional_kwargs["finish_reason"] == "tool_calls"
        (selection,) = llm.get_tool_calls_from_response(response)
        schema = {"add": AddArgs, "lookup": KeyArgs}[selection.tool_name].model_json_schema()
        jsonschema.validate(selection.tool_kwargs, schema)
        (block,) = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
        assert block.tool_call_id == selection.tool_id and selection.tool_id.startswith("call_")
        calls += 1
    assert calls >= 5


async def test_streamed_and_async_calls_match(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, max_new_tokens=64)
    kwargs = {"tool_choice": "add", "seed": 2}
    whole = await llm.achat_with_tools([ADD], "Add.", **kwargs)
    responses = [r async for r in await llm.astream_chat_with_tools([ADD], "Add.", **kwargs)]
    last = responses[-1]
    calls = llm.get_tool_calls_from_response(last, error_on_no_tool_call=False)
    expected = llm.get_tool_calls_from_response(whole, error_on_no_tool_call=False)
    assert expected  # the forced call is complete within the budget
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [
        (c.tool_name, c.tool_kwargs) for c in expected
    ]
    text = llm.chat_with_tools([ADD], "Add.", tool_choice="none", seed=1)
    assert llm.get_tool_calls_from_response(text, error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="holds no tool call"):
        llm.get_tool_calls_from_response(text)
    with pytest.raises(ValueError, match="tool_choice='sub' is not allowed"):
        llm.chat_with_tools([ADD], "Add.", tool_choice="sub")


def test_calls_and_results_in_the_history_are_turns() -> None:
    call = ToolCallBlock(tool_call_id="c1", tool_name="add", tool_kwargs={"a": 1, "b": 2})
    history = [
        ChatMessage(role="user", content="Add 1 and 2."),
        ChatMessage(role="assistant", blocks=[call]),
        ChatMessage(role="tool", content="3", additional_kwargs={"tool_call_id": "c1"}),
    ]
    assert to_conversation(history)[1:] == [
        {"role": "assistant", "content": '{"name": "add", "arguments": {"a": 1, "b": 2}}'},
        {"role": "user", "content": "Result of add: 3"},
    ]


@pytest.mark.parametrize("pair", ["shared", "cross"])
async def test_a_function_agent_calls_the_tool_and_answers(
    pair: str, engine: BacoEngine, cross_engine: BacoEngine
) -> None:
    llm = BacoLLM(engine=engine if pair == "shared" else cross_engine, max_new_tokens=48, seed=0)
    agent = FunctionAgent(tools=[LOOKUP], llm=llm, initial_tool_choice="lookup")
    handler = agent.run("Look up key 7.", max_iterations=6)
    called = []
    async for event in handler.stream_events():
        if type(event).__name__ == "ToolCallResult":
            called.append(event)
    response = await handler
    assert called and str(called[0].tool_output.content).startswith("value-")
    final = response.response  # the agent's answer: text, no call
    assert not any(isinstance(block, ToolCallBlock) for block in final.blocks)
