"""ChatBaco's tool calling: LangChain tools and messages to and from the framework-free core
(:mod:`baco_integrations.tool_calls`).

``ChatBaco.bind_tools(tools, tool_choice=...)`` binds the tools in OpenAI's function shape;
each call then decodes under the core's grammar and replies with an ``AIMessage`` whose
``tool_calls`` hold the parsed call (streamed: ``tool_call_chunks``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.messages.tool import tool_call, tool_call_chunk
from langchain_core.utils.function_calling import convert_to_openai_tool

from ..tool_calls import BoundTools, ToolCall, ToolSpec, call_text, result_text

__all__ = ["BoundTools", "call_names", "openai_tools", "tool_turn"]


def openai_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """Any tool LangChain accepts (BaseTool, pydantic class, function, dict) in OpenAI's
    function shape, checked now."""
    formatted = [convert_to_openai_tool(tool) for tool in tools]
    for tool in formatted:
        ToolSpec.from_openai(tool)
    return formatted


def tool_turn(message: BaseMessage, names: Mapping[str, str]) -> tuple[str, str] | None:
    """An AI message's tool calls or a tool's reply as a conversation turn (the role and the
    text the models read), or None for any other message. ``names``: tool call ids to tool
    names, from the earlier AI messages."""
    if isinstance(message, AIMessage) and message.tool_calls:
        calls = [call_text(call["name"], call["args"]) for call in message.tool_calls]
        text = message.content if isinstance(message.content, str) else ""
        return "assistant", "\n".join([text, *calls] if text else calls)
    if isinstance(message, ToolMessage):
        content = (
            message.content if isinstance(message.content, str) else json.dumps(message.content)
        )
        return "user", result_text(message.name or names.get(message.tool_call_id), content)
    return None


def call_names(messages: Sequence[BaseMessage]) -> dict[str, str]:
    """Tool call ids to tool names, over every AI message's calls."""
    return {
        call["id"]: call["name"]
        for message in messages
        if isinstance(message, AIMessage)
        for call in message.tool_calls
        if call.get("id")
    }


def tool_call_message_fields(call: ToolCall) -> dict[str, Any]:
    """An AIMessage's content and ``tool_calls`` for a parsed call."""
    return {
        "content": "",
        "tool_calls": [tool_call(name=call.name, args=call.arguments, id=call.id)],
    }


def tool_call_chunk_fields(call: ToolCall) -> dict[str, Any]:
    """An AIMessageChunk's content and ``tool_call_chunks`` for a parsed call (one chunk)."""
    args = json.dumps(call.arguments, ensure_ascii=False)
    return {
        "content": "",
        "tool_call_chunks": [tool_call_chunk(name=call.name, args=args, id=call.id, index=0)],
    }
