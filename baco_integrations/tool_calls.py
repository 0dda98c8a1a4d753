"""Tool calling: what a reply that calls a tool looks like, the grammar that makes every
sample either free text or a valid call, and the parse back to calls.

Framework-free: the LangChain and LlamaIndex adapters and the server turn their own tool
objects into :class:`ToolSpec` (OpenAI's function shape) and the parsed :class:`ToolCall`
into their own messages.

A call is one JSON object, ``{"name": <a tool's name>, "arguments": {...}}``, valid for
that tool's parameter schema by construction (llguidance, as Ollama, llama.cpp and vLLM give
small local models tool calling). With ``tool_choice="auto"`` a reply is either free text
(it does not start with ``{``) or a call (it does); ``"required"`` or a tool's name leaves
only calls; ``"none"`` only text. The router routes a call's words as any other: where the
grammar leaves one choice (the braces, ``"name"``, the tool's name, the keys) every model
writes the same token, so what the base model may write is the argument values and free text
(docs/agents.md).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .config import GenerationSettings
from .constraints import JSON_LAYOUT, Constraint, _closed

__all__ = [
    "TOOL_CHOICES",
    "BoundTools",
    "ToolCall",
    "ToolSpec",
    "call_text",
    "check_tool_choice",
    "opens_call",
    "result_text",
    "with_tools_prompt",
    "parse_tool_call",
    "tool_constraint",
    "tools_prompt",
]

#: The ``tool_choice`` words (OpenAI's); a tool's name forces that tool.
TOOL_CHOICES = ("auto", "none", "required")
#: What a call's text starts with (and free text under ``tool_choice="auto"`` cannot).
CALL_START = "{"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ToolSpec(BaseModel):
    """One tool as the model sees it: OpenAI's function shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME.pattern)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    @classmethod
    def from_openai(cls, tool: Mapping[str, Any]) -> ToolSpec:
        """From ``{"type": "function", "function": {...}}`` or a bare function dict."""
        function = tool.get("function", tool) if tool.get("type") == "function" else tool
        if not isinstance(function, Mapping) or "name" not in function:
            raise ValueError(
                "a tool must be an OpenAI function ({'type': 'function', 'function': {'name', "
                f"'description', 'parameters'}}), got {dict(tool)!r:.200}"
            )
        return cls(
            name=function["name"],
            description=function.get("description") or "",
            parameters=dict(function.get("parameters") or {"type": "object", "properties": {}}),
        )


@dataclass
class ToolCall:
    """A parsed call: the tool's name, its arguments and an id for the tool's reply."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


def check_tool_choice(choice: object, tools: Sequence[ToolSpec]) -> str:
    """``choice`` as a word or a tool's name; anything else is a ``ValueError`` naming
    ``tool_choice``. OpenAI's ``{"type": "function", "function": {"name": ...}}``, LangChain's
    ``True``/``"any"`` (= required) are accepted."""
    if choice is None:
        return "auto"
    if choice is True or choice == "any":
        return "required"
    if isinstance(choice, Mapping):
        choice = (choice.get("function") or {}).get("name", choice.get("name"))
    names = [tool.name for tool in tools]
    if isinstance(choice, str) and (choice in TOOL_CHOICES or choice in names):
        if choice == "required" and not tools:
            raise ValueError("tool_choice='required' needs at least one tool")
        return choice
    allowed = ", ".join([*TOOL_CHOICES, *names])
    raise ValueError(f"tool_choice={choice!r} is not allowed: use one of {allowed}")


def _call_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": tool.name}, "arguments": _closed(tool.parameters)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    return {**schema, "x-guidance": JSON_LAYOUT}


def tool_constraint(tools: Sequence[ToolSpec], choice: str) -> Constraint | None:
    """What every sample must match for ``choice`` (see the module's docstring)."""
    if not tools or choice == "none":
        return None
    if choice == "auto":
        schema = json.dumps(_call_schema(tools))
        text = f"/[^{CALL_START}][\\s\\S]*/"  # free text: anything that opens no call
        return Constraint(lark=f"start: text | call\ntext: {text}\ncall: %json {schema}")
    chosen = [tool for tool in tools if choice == "required" or tool.name == choice]
    return Constraint(json_schema=_call_schema(chosen))


def tools_prompt(tools: Sequence[ToolSpec], choice: str) -> str:
    """The instructions a system prompt carries: the tools, and how to call one."""
    if not tools or choice == "none":
        return ""
    listed = "\n".join(
        f"- {t.name}: {t.description.strip()} Arguments: "
        + json.dumps(_untitled(t.parameters), separators=(",", ":"), ensure_ascii=False)
        for t in tools
    )
    how = (
        'To call a tool, reply with only a JSON object {"name": <tool name>, "arguments": '
        "{...}}; otherwise answer in plain text."
        if choice == "auto"
        else 'Reply with only a JSON object {"name": <tool name>, "arguments": {...}}.'
    )
    return f"You can use these tools:\n{listed}\n{how}"


def _untitled(schema: Any) -> Any:
    """``schema`` without its ``title`` entries (pydantic and LlamaIndex add one to every
    object and field): the prompt is read by small models with small context windows."""
    if isinstance(schema, list):
        return [_untitled(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {k: _untitled(v) for k, v in schema.items() if k != "title" or not isinstance(v, str)}


def opens_call(text: str) -> bool:
    """Whether a reply whose text begins with ``text`` is a call (streams hold it back)."""
    return text.startswith(CALL_START)


def parse_tool_call(text: str, tools: Sequence[ToolSpec]) -> ToolCall | None:
    """The call a reply holds (it starts with ``{`` and names one of ``tools``), else None."""
    if not opens_call(text):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None  # cut by the token budget: not a call
    names = {tool.name for tool in tools}
    if not isinstance(value, dict) or value.get("name") not in names:
        return None
    arguments = value.get("arguments")
    return ToolCall(value["name"], arguments if isinstance(arguments, dict) else {})


def call_text(name: str, arguments: Mapping[str, Any]) -> str:
    """How an earlier call appears in the conversation the models read: as they wrote it."""
    return json.dumps({"name": name, "arguments": dict(arguments)}, ensure_ascii=False)


def result_text(name: str | None, content: str) -> str:
    """How a tool's reply appears in the conversation: a user turn (chat templates that know
    no ``tool`` role, Gemma's among them, refuse one), saying which tool answered."""
    return f"Result of {name or 'the tool'}: {content}"


def with_tools_prompt(
    conversation: list[dict[str, str]], tools: Sequence[ToolSpec], choice: str
) -> list[dict[str, str]]:
    """``conversation`` with :func:`tools_prompt` at the end of its system message (one is
    added in front when there is none)."""
    prompt = tools_prompt(tools, choice)
    if not prompt:
        return conversation
    if conversation and conversation[0]["role"] == "system":
        first = {"role": "system", "content": f"{conversation[0]['content']}\n\n{prompt}"}
        return [first, *conversation[1:]]
    return [{"role": "system", "content": prompt}, *conversation]


@dataclass(frozen=True)
class BoundTools:
    """A call's tools and ``tool_choice``, from its keyword arguments (``tools`` in OpenAI's
    function shape, ``tool_choice``, ``parallel_tool_calls``)."""

    specs: tuple[ToolSpec, ...]
    choice: str

    @classmethod
    def pop(cls, kwargs: dict[str, Any]) -> BoundTools | None:
        """Take the tool keywords out of ``kwargs``; None when no tools are bound."""
        tools = kwargs.pop("tools", None)
        choice = kwargs.pop("tool_choice", None)
        kwargs.pop("parallel_tool_calls", None)  # at most one call per reply, either way
        if not tools:
            if choice not in (None, "none", "auto"):
                raise ValueError(f"tool_choice={choice!r} needs tools")
            return None
        specs = tuple(ToolSpec.from_openai(tool) for tool in tools)
        return cls(specs, check_tool_choice(choice, specs))

    def settings(self, settings: GenerationSettings) -> GenerationSettings:
        """``settings`` with the tools' constraint; a call that has its own is refused."""
        constraint = tool_constraint(self.specs, self.choice)
        if constraint is None:
            return settings
        if settings.constraint is not None:
            raise ValueError(
                "a call with tools cannot also have a constraint: the reply is "
                "either text or a tool call, decoded under the tools' own grammar"
            )
        return settings.updated(constraint=constraint)

    def conversation(self, conversation: list[dict[str, str]]) -> list[dict[str, str]]:
        return with_tools_prompt(conversation, self.specs, self.choice)

    def call(self, text: str) -> ToolCall | None:
        return parse_tool_call(text, self.specs)
