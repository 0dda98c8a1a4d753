"""Tool calling's core: every sample under ``tool_choice`` is a valid call (or free text
where allowed), parsed back to the tool's name and arguments."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from baco_integrations import BacoEngine
from baco_integrations.tool_calls import (
    ToolSpec,
    call_text,
    check_tool_choice,
    parse_tool_call,
    result_text,
    tool_constraint,
    tools_prompt,
    with_tools_prompt,
)

WEATHER = ToolSpec(
    name="get_weather",
    description="The weather in a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
    },
)
ADD = ToolSpec.from_openai(
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "minimum": 0, "maximum": 999},
                    "b": {"type": "integer", "minimum": 0, "maximum": 999},
                },
                "required": ["a", "b"],
            },
        },
    }
)
TOOLS = [WEATHER, ADD]


def _valid(call: Any) -> None:
    tool = {t.name: t for t in TOOLS}[call.name]
    jsonschema.validate(call.arguments, tool.parameters)


@pytest.mark.parametrize("choice", ["required", "add"])
def test_forced_calls_are_valid_for_fifty_seeds(any_engine: BacoEngine, choice: str) -> None:
    constraint = tool_constraint(TOOLS, choice)
    outs = any_engine.generate(
        "Call a tool.", constraint=constraint, n=50, seed=0, max_new_tokens=96
    )[0]
    finished = [o for o in outs if o.finish_reason == "stop"]
    # a random tiny model may write a long string; the rest ran out of budget: "length"
    assert len(finished) >= 25
    assert all(o.finish_reason == "length" for o in outs if o not in finished)
    for out in finished:
        call = parse_tool_call(out.text, TOOLS)
        assert call is not None, out.text
        assert choice == "required" or call.name == choice
        _valid(call)


def test_auto_gives_text_or_a_valid_call(any_engine: BacoEngine) -> None:
    constraint = tool_constraint(TOOLS, "auto")
    outs = any_engine.generate("Hi", constraint=constraint, n=30, seed=1, max_new_tokens=40)[0]
    for out in outs:
        call = parse_tool_call(out.text, TOOLS)
        if out.text.startswith("{") and out.finish_reason == "stop":
            assert call is not None
            _valid(call)
        else:
            assert call is None


def test_choices_prompts_and_round_trips() -> None:
    assert tool_constraint(TOOLS, "none") is None and tool_constraint([], "auto") is None
    assert check_tool_choice(None, TOOLS) == "auto"
    assert check_tool_choice(True, TOOLS) == check_tool_choice("any", TOOLS) == "required"
    assert check_tool_choice({"type": "function", "function": {"name": "add"}}, TOOLS) == "add"
    with pytest.raises(ValueError, match="tool_choice='nope'.*auto, none, required, get_weather"):
        check_tool_choice("nope", TOOLS)
    assert "get_weather" in tools_prompt(TOOLS, "auto") and tools_prompt(TOOLS, "none") == ""
    call = parse_tool_call(call_text("add", {"a": 1, "b": 2}), TOOLS)
    assert call is not None and (call.name, call.arguments) == ("add", {"a": 1, "b": 2})
    assert call.id.startswith("call_")
    assert parse_tool_call('{"name": "other", "arguments": {}}', TOOLS) is None
    assert parse_tool_call('{"name": "add", "argu', TOOLS) is None
    assert parse_tool_call("plain text", TOOLS) is None
    with pytest.raises(ValueError, match="OpenAI function"):
        ToolSpec.from_openai({"type": "function"})
    assert json.loads(call_text("add", {"a": 1}))["arguments"] == {"a": 1}


def test_the_conversation_carries_the_tools() -> None:
    user = [{"role": "user", "content": "Weather in Oslo?"}]
    (system, first) = with_tools_prompt(user, TOOLS, "auto")
    assert system["role"] == "system" and "get_weather" in system["content"]
    assert first == user[0]
    sys_first = [{"role": "system", "content": "Be brief."}, *user]
    merged = with_tools_prompt(sys_first, TOOLS, "required")
    assert merged[0]["content"].startswith("Be brief.\n\nYou can use these tools")
    assert with_tools_prompt(user, TOOLS, "none") == user
    assert result_text("get_weather", "sunny") == "Result of get_weather: sunny"
