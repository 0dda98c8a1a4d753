"""Requests in OpenAI's wire format, and how one becomes prompts plus GenerationSettings.

The OpenAI sampling fields (``n``, ``temperature``, ``top_p``, ``seed``, ``stop``,
``max_tokens`` / ``max_completion_tokens``) and BACO's own settings, sent as extra fields
(``extra_body={"router": "P-PUNC", "gamma": 0.3}`` in the openai client), are validated by the
one :class:`~baco_integrations.GenerationSettings`, so a bad value is refused with the same
message as in-process. Any other field is refused by name. ``response_format`` (JSON schema or
JSON object) becomes BACO's ``constraint``: every sample is decoded under it. OpenAI features
BACO does not have (penalties, the deprecated ``functions``, ...) are refused unless left
"off".

Tool calling (:mod:`baco_integrations.tool_calls`, docs/serving.md): ``tools`` (OpenAI function
tools) and ``tool_choice`` become the tools' instructions at the end of the system message and
the tools' grammar as the ``constraint`` (free text or one call with ``"auto"``, only calls
with ``"required"`` or a tool's name, plain text with ``"none"``); ``parallel_tool_calls`` is
accepted (a reply holds at most one call). In the messages, an assistant's ``tool_calls`` are
the JSON the models wrote for them and a ``tool`` message is a user turn naming the tool that
answered (found by its ``tool_call_id``).

Token log-probs (docs/logprobs.md) are BACO's ``logprobs`` / ``top_logprobs`` settings:

* chat: ``logprobs`` (a boolean) and ``top_logprobs`` (0 to 20, OpenAI's range; it needs
  ``logprobs: true``, as in OpenAI's API);
* legacy completions: ``logprobs`` is an integer k, the alternatives to list per token (the
  sampled token's own log-prob is always reported). OpenAI allows 0 to 5; BACO allows 0 to 20,
  the chat endpoint's range (``MAX_TOP_LOGPROBS``, vLLM's cap too), since listing more costs
  no extra forward.

Each log-prob is the writing model's, under the distribution its token was drawn from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError

from ..config import SETTING_NAMES, GenerationSettings
from ..conversation import ROLE_ALIASES, canonical_role, merge_turns
from ..prompts import Prompt
from ..tool_calls import (
    ToolSpec,
    call_text,
    check_tool_choice,
    result_text,
    tool_constraint,
    with_tools_prompt,
)
from .config import ServerConfig
from .errors import bad_request, from_validation

#: OpenAI fields that are GenerationSettings fields of the same name.
OPENAI_SETTINGS = ("n", "temperature", "top_p", "seed", "stop")
#: The names a request may give the output length under; the first one given wins.
MAX_TOKENS_NAMES = ("max_completion_tokens", "max_tokens", "max_new_tokens")
#: BACO settings a request may add as extra fields.
BACO_FIELDS = tuple(name for name in SETTING_NAMES if name not in OPENAI_SETTINGS)


def _off(*values: Any) -> Callable[[Any], bool]:
    return lambda value: value is None or any(value == v for v in values)


#: OpenAI features BACO lacks: field -> (is it off?, why it is refused otherwise).
UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "functions": (_off([]), "the deprecated functions API is not served; send tools"),
    "function_call": (_off("none"), "the deprecated functions API is not served; send tool_choice"),
    "presence_penalty": (_off(0), "BACO's sampling has no penalties"),
    "frequency_penalty": (_off(0), "BACO's sampling has no penalties"),
    "logit_bias": (_off({}), "BACO's sampling has no logit bias"),
    "audio": (_off(), "BACO reads and writes text only"),
    "modalities": (_off(["text"]), "BACO reads and writes text only"),
    "prediction": (_off(), "BACO has no predicted outputs"),
    "reasoning_effort": (_off(), "BACO's models have no reasoning mode"),
    "verbosity": (_off(), "BACO has no verbosity setting"),
    "web_search_options": (_off(), "BACO has no web search"),
    "echo": (_off(False), "BACO does not echo the prompt"),
    "suffix": (_off(""), "BACO does not insert text before a suffix"),
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: StrictBool = False
    include_obfuscation: StrictBool | None = None  # accepted; BACO pads nothing


class _Request(BaseModel):
    """Fields common to both endpoints. Extra fields are kept for :func:`settings_of`, which
    takes BACO settings from them and refuses any other by name."""

    model_config = ConfigDict(extra="allow")

    model: str
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    # Validated by GenerationSettings (one definition of each setting's range).
    n: Any = None
    temperature: Any = None
    top_p: Any = None
    seed: Any = None
    stop: Any = None
    max_tokens: Any = None
    max_completion_tokens: Any = None
    # Refused unless off (see UNSUPPORTED).
    presence_penalty: Any = None
    frequency_penalty: Any = None
    logit_bias: Any = None
    # Accepted and not used: they describe the caller, not the decoding.
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None  # accepted; chat templates have no place for it
    refusal: str | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None
    function_call: Any = None


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage]
    logprobs: StrictBool | None = None
    top_logprobs: Any = None  # validated by GenerationSettings
    tools: Any = None
    functions: Any = None
    tool_choice: Any = None
    function_call: Any = None
    parallel_tool_calls: StrictBool | None = None  # accepted: a reply holds at most one call
    response_format: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    web_search_options: Any = None


class CompletionRequest(_Request):
    prompt: Any
    logprobs: Any = None  # an integer: top_logprobs (validated by GenerationSettings)
    echo: Any = None
    suffix: Any = None
    best_of: Any = None


@dataclass(frozen=True)
class Call:
    """One request as the engine takes it."""

    prompts: list[Prompt]
    settings: GenerationSettings
    stream: bool
    include_usage: bool
    #: The field errors about the prompts name: ``messages`` or ``prompt``.
    prompt_param: str
    #: Setting name -> the field the client gave it as (``max_new_tokens`` -> ``max_tokens``).
    wire: dict[str, str] = field(default_factory=dict)
    #: The tools a reply may call (a reply that parses as a call to one is answered as
    #: ``tool_calls``); empty without tools or with ``tool_choice: "none"``.
    tools: tuple[ToolSpec, ...] = ()


def chat_call(body: ChatCompletionRequest, config: ServerConfig) -> Call:
    _refuse_unsupported(body)
    implied: dict[str, tuple[str, Any]] = {}
    if body.logprobs is not None:
        implied["logprobs"] = ("logprobs", body.logprobs)
    if body.top_logprobs is not None:
        implied["top_logprobs"] = ("top_logprobs", body.top_logprobs)
    tools, choice = tools_of(body.tools, body.tool_choice)
    try:
        grammar = tool_constraint(tools, choice)
    except ValidationError as exc:  # a parameters schema the grammar engine cannot compile
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise bad_request(f"the tools' parameters do not compile: {message}", "tools") from None
    constraint = constraint_of(body.response_format)
    if constraint is not None and grammar is not None:
        raise bad_request(
            "response_format and tools cannot both shape a reply: with tools (tool_choice "
            f"{choice!r}) each reply is decoded under the tools' grammar; drop response_format, "
            "or send tool_choice 'none'",
            "response_format",
        )
    if constraint is not None:
        implied["constraint"] = ("response_format", constraint)
    if grammar is not None:
        implied["constraint"] = ("tools", grammar)
    messages = conversation(body.messages)
    call = _call(body, [messages], "messages", config, implied)
    if grammar is None:
        return call
    if messages[0]["role"] != "system" and call.settings.system_prompt is not None:
        # The tools' instructions make a system message, which would hide system_prompt.
        messages = [{"role": "system", "content": call.settings.system_prompt}, *messages]
    return replace(call, prompts=[with_tools_prompt(messages, tools, choice)], tools=tools)


def tools_of(tools: Any, tool_choice: Any) -> tuple[tuple[ToolSpec, ...], str]:
    """The request's function tools and its ``tool_choice`` (a word or a tool's name); a
    field that is not in OpenAI's shape is refused by name."""
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise bad_request(
            "tools must be a list of tools ({'type': 'function', 'function': {'name', "
            "'description', 'parameters'}})",
            "tools",
        )
    specs: list[ToolSpec] = []
    for i, tool in enumerate(tools):
        spec = _tool_spec(tool, f"tools[{i}]")
        if any(other.name == spec.name for other in specs):
            raise bad_request(
                f"tools[{i}].function.name={spec.name!r} names an earlier tool too; tool names "
                "must be unique",
                f"tools[{i}].function.name",
            )
        specs.append(spec)
    if isinstance(tool_choice, Mapping):
        kind = tool_choice.get("type")
        function = tool_choice.get("function")
        if kind != "function" or not isinstance(function, Mapping):
            raise bad_request(
                f"tool_choice={tool_choice!r:.200} is not supported: use 'auto', 'none', "
                "'required' or {'type': 'function', 'function': {'name': ...}}",
                "tool_choice",
                "unsupported" if kind != "function" else "invalid_value",
            )
    try:
        choice = check_tool_choice(tool_choice, specs)
    except ValueError as exc:
        raise bad_request(str(exc), "tool_choice") from None
    return tuple(specs), choice


def _tool_spec(tool: Any, where: str) -> ToolSpec:
    """One of ``tools``: an OpenAI function tool, checked field by field."""
    if not isinstance(tool, Mapping):
        raise bad_request(f"{where} must be an object, got {type(tool).__name__}", where)
    kind = tool.get("type")
    if kind != "function":
        raise bad_request(
            f"{where}.type={kind!r} is not supported: BACO calls function tools "
            "({'type': 'function', 'function': {'name', 'description', 'parameters'}})",
            f"{where}.type",
            "unsupported" if kind is not None else "invalid_value",
        )
    function = tool.get("function")
    if not isinstance(function, Mapping):
        raise bad_request(
            f"{where}.function must be an object ({{'name', 'description', 'parameters'}})",
            f"{where}.function",
        )
    if not isinstance(function.get("name"), str):
        raise bad_request(f"{where}.function.name must be a string", f"{where}.function.name")
    parameters = function.get("parameters")
    if parameters is not None and (
        not isinstance(parameters, Mapping) or parameters.get("type", "object") != "object"
    ):
        raise bad_request(
            f"{where}.function.parameters must be a JSON schema of an object (the call's "
            "arguments)",
            f"{where}.function.parameters",
        )
    try:
        return ToolSpec.from_openai(tool)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"])
        raise bad_request(
            f"{where}.function.{name}: {error['msg']}", f"{where}.function.{name}"
        ) from None


def constraint_of(response_format: Any) -> dict[str, Any] | None:
    """OpenAI's ``response_format`` as BACO's ``constraint`` setting: decoding under a JSON
    schema (``json_schema``) or any JSON object (``json_object``); ``text`` is none."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"json_object": True}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise bad_request(
                "response_format.json_schema.schema must be a JSON schema (an object)",
                "response_format.json_schema.schema",
            )
        return {"json_schema": schema}  # always strict: samples are decoded under the schema
    raise bad_request(
        f"response_format type {kind!r} is not supported; use 'text', 'json_object' or "
        "'json_schema'",
        "response_format.type",
    )


def completion_call(body: CompletionRequest, config: ServerConfig) -> Call:
    _refuse_unsupported(body)
    implied: dict[str, tuple[str, Any]] = {}
    if body.logprobs is not None:  # legacy: logprobs=k asks for k alternatives per token
        implied["logprobs"] = ("logprobs", True)
        implied["top_logprobs"] = ("logprobs", body.logprobs)
    if body.best_of is not None and body.best_of != (body.n or 1):
        raise bad_request(
            "best_of is not supported: BACO returns every sample it draws; use n", "best_of"
        )
    prompts = completion_prompts(body.prompt, config.max_prompts)
    return _call(body, prompts, "prompt", config, implied)


def _call(
    body: _Request,
    prompts: list[Prompt],
    prompt_param: str,
    config: ServerConfig,
    implied: dict[str, tuple[str, Any]] | None = None,
) -> Call:
    settings, wire = settings_of(body, config, prompt_param, implied or {})
    options = body.stream_options
    return Call(
        prompts=prompts,
        settings=settings,
        stream=body.stream,
        include_usage=bool(body.stream and options is not None and options.include_usage),
        prompt_param=prompt_param,
        wire=wire,
    )


def _refuse_unsupported(body: _Request) -> None:
    for name, (is_off, why) in UNSUPPORTED.items():
        if name in type(body).model_fields and not is_off(getattr(body, name)):
            raise bad_request(f"{name} is not supported: {why}", name, "unsupported")


# ------------------------------------------------------------------------- settings


def settings_of(
    body: _Request,
    config: ServerConfig,
    prompt_param: str,
    implied: dict[str, tuple[str, Any]],
) -> tuple[GenerationSettings, dict[str, str]]:
    """The request's GenerationSettings, within the server's caps, and the wire names.

    ``implied`` holds settings that OpenAI fields stand for: setting -> (field, value).
    """
    extras = dict(body.model_extra or {})
    for name in extras:
        if name not in BACO_FIELDS:
            raise bad_request(
                f"unknown field {name!r}: neither an OpenAI field this server reads nor a BACO "
                f"setting ({', '.join(BACO_FIELDS)})",
                name,
                "unknown_field",
            )
    values = {name: getattr(body, name) for name in OPENAI_SETTINGS}
    values = {name: value for name, value in {**values, **extras}.items() if value is not None}
    given: dict[str, Any] = {}
    for name in MAX_TOKENS_NAMES:
        value = values.pop(name, None) if name == "max_new_tokens" else getattr(body, name)
        if value is not None:
            given[name] = value
    wire = {"max_new_tokens": next(iter(given), "max_tokens")}
    for name, (field_name, value) in implied.items():
        if name in values:
            raise bad_request(f"{field_name} and {name} both say {name}; give one", name)
        values[name] = value
        wire[name] = field_name
    values["max_new_tokens"] = _one_max_tokens(given, config.default_max_tokens)
    try:
        settings = GenerationSettings.model_validate(values)
    except ValidationError as exc:
        raise from_validation(exc.errors(), wire, prompt_param) from None
    _check_caps(settings, config, wire)
    return settings, wire


def _one_max_tokens(given: dict[str, Any], default: int) -> Any:
    """The output length: the names given must agree (they are aliases)."""
    if not given:
        return default
    (first, value), *others = given.items()
    for name, other in others:
        if other != value:
            raise bad_request(
                f"{first}={value!r} and {name}={other!r} disagree; they are aliases, give one",
                first,
            )
    return value


def _check_caps(settings: GenerationSettings, config: ServerConfig, wire: dict[str, str]) -> None:
    if settings.max_new_tokens > config.max_tokens:
        name = wire["max_new_tokens"]
        raise bad_request(
            f"{name}={settings.max_new_tokens} is more than this server allows "
            f"({config.max_tokens}; ServerConfig.max_tokens)",
            name,
        )
    if settings.n > config.max_n:
        raise bad_request(
            f"n={settings.n} is more than this server allows ({config.max_n}; ServerConfig.max_n)",
            "n",
        )


# ------------------------------------------------------------------------- prompts


def conversation(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """Chat messages as the engine's conversation (same-role neighbours joined).

    An assistant message's ``tool_calls`` are the calls as the models write them
    (:func:`~baco_integrations.tool_calls.call_text`, after its text if it has any); a ``tool``
    message is a user turn naming the tool (:func:`~baco_integrations.tool_calls.result_text`),
    found by its ``tool_call_id`` among the earlier assistant messages' calls.
    """
    if not messages:
        raise bad_request("messages is empty: send at least one message", "messages")
    turns = []
    #: Tool call id -> the tool's name, over the assistant messages so far.
    called: dict[str, str] = {}
    for i, message in enumerate(messages):
        if message.function_call:
            raise bad_request(
                f"messages[{i}].function_call is not supported: the deprecated functions API "
                "is not served; send tool_calls",
                f"messages[{i}].function_call",
                "unsupported",
            )
        if message.role.strip().lower() == "tool":
            turns.append(("user", _tool_result(message, i, called)))
            continue
        role = canonical_role(message.role)
        if role is None:
            raise bad_request(
                f"messages[{i}].role={message.role!r} is not supported; roles are "
                f"{', '.join(sorted([*ROLE_ALIASES, 'tool']))}",
                f"messages[{i}].role",
                "unsupported",
            )
        text = _text(message.content, i)
        if message.tool_calls:
            if role != "assistant":
                raise bad_request(
                    f"messages[{i}] is a {message.role!r} message with tool_calls; only "
                    "assistant messages call tools",
                    f"messages[{i}].tool_calls",
                )
            calls = [
                _call_text(call, f"messages[{i}].tool_calls[{j}]", called)
                for j, call in enumerate(message.tool_calls)
            ]
            text = "\n".join([text, *calls] if text else calls)
        turns.append((role, text))
    return merge_turns(turns)


def _call_text(call: Any, where: str, called: dict[str, str]) -> str:
    """An earlier tool call (``{"id", "type": "function", "function": {"name", "arguments"}}``)
    as the models wrote it; its id is noted in ``called``."""
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise bad_request(
            f"{where} must be a function call ({{'id', 'type': 'function', 'function': "
            "{'name', 'arguments'}})",
            where,
        )
    if call.get("type", "function") != "function":
        raise bad_request(
            f"{where}.type={call.get('type')!r} is not supported: BACO calls function tools",
            f"{where}.type",
            "unsupported",
        )
    arguments = function.get("arguments") or {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            arguments = None
    if not isinstance(arguments, Mapping):
        raise bad_request(
            f"{where}.function.arguments must be a JSON object (as a string)",
            f"{where}.function.arguments",
        )
    if isinstance(call.get("id"), str):
        called[call["id"]] = function["name"]
    return call_text(function["name"], arguments)


def _tool_result(message: ChatMessage, i: int, called: Mapping[str, str]) -> str:
    """A ``tool`` message as the text of a user turn naming the tool that answered."""
    if not called:
        raise bad_request(
            f"messages[{i}].role='tool' is not supported here: a tool message answers a tool "
            "call of an earlier assistant message (its tool_calls)",
            f"messages[{i}].role",
            "unsupported",
        )
    if message.tool_call_id not in called:
        raise bad_request(
            f"messages[{i}].tool_call_id={message.tool_call_id!r} answers none of the earlier "
            f"assistant messages' tool calls ({', '.join(map(repr, called))})",
            f"messages[{i}].tool_call_id",
        )
    return result_text(called[message.tool_call_id], _text(message.content, i))


def _text(content: str | list[dict[str, Any]] | None, i: int) -> str:
    """A message's text: a string, or text parts joined; any other part is refused."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for j, part in enumerate(content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise bad_request(
                f"messages[{i}].content[{j}] is a {part.get('type')!r} part; BACO reads text "
                "parts only ({'type': 'text', 'text': ...})",
                f"messages[{i}].content[{j}]",
                "unsupported",
            )
        parts.append(part["text"])
    return "".join(parts)


def completion_prompts(prompt: object, max_prompts: int) -> list[Prompt]:
    """A completion's prompt: a string or a list of strings (token ids are refused)."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) > max_prompts:
            raise bad_request(
                f"prompt holds {len(prompt)} prompts, more than this server allows in one "
                f"request ({max_prompts}; ServerConfig.max_prompts)",
                "prompt",
            )
        return list(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(p, int | list) for p in prompt):
        raise bad_request(
            "prompt as token ids is not supported: the two models have their own tokenizers; "
            "send text",
            "prompt",
            "unsupported",
        )
    raise bad_request(
        f"prompt must be a string or a non-empty list of strings, got {type(prompt).__name__}",
        "prompt",
    )
