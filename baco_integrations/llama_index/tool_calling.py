"""BacoLLM's function calling: LlamaIndex tools and messages to and from the framework-free
core (:mod:`baco_integrations.tool_calls`).

A call comes back as a ``ChatResponse`` whose message holds a ``ToolCallBlock`` (and, as
LlamaIndex's OpenAI LLM fills it, ``additional_kwargs["tool_calls"]``);
``get_tool_calls_from_response`` reads it as ``ToolSelection``s, which is what
``FunctionAgent`` and ``predict_and_call`` use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.tools import BaseTool

from ..tool_calls import BoundTools, ToolCall, call_text, result_text

__all__ = [
    "BoundTools",
    "call_names",
    "chat_with_tools_kwargs",
    "tool_call_response",
    "tool_selections",
    "tool_turn",
]


def _calls(message: ChatMessage) -> list[tuple[str | None, str, Mapping[str, Any]]]:
    """An assistant message's calls as (id, name, arguments): its ToolCallBlocks, or else
    OpenAI-shaped ``additional_kwargs["tool_calls"]``."""
    calls = []
    for block in message.blocks:
        if isinstance(block, ToolCallBlock):
            args = block.tool_kwargs
            parsed = json.loads(args) if isinstance(args, str) and args else args
            calls.append((block.tool_call_id, block.tool_name, parsed or {}))
    if calls:
        return calls
    for call in message.additional_kwargs.get("tool_calls") or []:
        function = call.get("function", call) if isinstance(call, Mapping) else {}
        args = function.get("arguments") or {}
        calls.append(
            (call.get("id"), function["name"], json.loads(args) if isinstance(args, str) else args)
        )
    return calls


def call_names(messages: Sequence[ChatMessage]) -> dict[str, str]:
    """Tool call ids to tool names, over every assistant message's calls."""
    return {
        call_id: name
        for message in messages
        if message.role == MessageRole.ASSISTANT
        for call_id, name, _ in _calls(message)
        if call_id
    }


def tool_turn(message: ChatMessage, names: Mapping[str, str]) -> tuple[str, str] | None:
    """An assistant message's calls or a tool's reply as a conversation turn, or None for
    any other message."""
    if message.role == MessageRole.TOOL:
        call_id = message.additional_kwargs.get("tool_call_id")
        name = message.additional_kwargs.get("name") or names.get(call_id or "")
        text = "\n".join(b.text for b in message.blocks if isinstance(b, TextBlock))
        return "user", result_text(name, text)
    if message.role == MessageRole.ASSISTANT and (calls := _calls(message)):
        text = "\n".join(b.text for b in message.blocks if isinstance(b, TextBlock) and b.text)
        texts = [call_text(name, args) for _, name, args in calls]
        return "assistant", "\n".join([text, *texts] if text else texts)
    return None


def chat_with_tools_kwargs(
    tools: Sequence[BaseTool],
    user_msg: str | ChatMessage | None,
    chat_history: Sequence[ChatMessage] | None,
    tool_required: bool,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    """What ``chat`` takes for a call with ``tools``: the messages, the tools in OpenAI's
    function shape, and ``tool_choice`` (a given one wins; ``tool_required`` means a call)."""
    messages = list(chat_history or [])
    if isinstance(user_msg, str):
        user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
    if user_msg is not None:
        messages.append(user_msg)
    choice = kwargs.pop("tool_choice", None) or ("required" if tool_required else "auto")
    formatted = [tool.metadata.to_openai_tool() for tool in tools]
    BoundTools.pop({"tools": formatted, "tool_choice": choice})  # a bad choice raises now
    return {"messages": messages, "tools": formatted, "tool_choice": choice, **kwargs}


def tool_call_response(response: ChatResponse, call: ToolCall) -> ChatResponse:
    """``response`` whose message is ``call`` (the reply's JSON text becomes a block)."""
    arguments = json.dumps(call.arguments, ensure_ascii=False)
    message = ChatMessage(
        role=MessageRole.ASSISTANT,
        blocks=[
            ToolCallBlock(tool_call_id=call.id, tool_name=call.name, tool_kwargs=call.arguments)
        ],
        additional_kwargs={
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": arguments},
                }
            ]
        },
    )
    return ChatResponse(
        message=message,
        delta=response.delta,
        logprobs=response.logprobs,
        additional_kwargs={**response.additional_kwargs, "finish_reason": "tool_calls"},
        raw=response.raw,
    )


def tool_selections(response: ChatResponse, error_on_no_tool_call: bool) -> list[ToolSelection]:
    """The calls in ``response`` as LlamaIndex's ``ToolSelection``s."""
    selections = [
        ToolSelection(tool_id=call_id or "", tool_name=name, tool_kwargs=dict(args))
        for call_id, name, args in _calls(response.message)
    ]
    if not selections and error_on_no_tool_call:
        raise ValueError(f"the reply holds no tool call: {response.message.content!r:.200}")
    return selections
