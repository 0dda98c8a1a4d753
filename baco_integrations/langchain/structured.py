"""``ChatBaco.with_structured_output``: decoding constrained to a schema, then parsed.

BACO has no tool calling, so LangChain's ``function_calling`` method does not apply; the two
methods it supports decode under a grammar (see docs/structured.md):

* ``json_schema`` (the default): every sample is JSON valid against the schema, by
  construction, unless the token budget ends it first (``finish_reason == "length"``);
* ``json_mode``: every sample is a JSON object; the schema, if any, only parses it.

The runnable follows LangChain's contract (``BaseChatModel.with_structured_output``): a pydantic
schema gives a pydantic object, any other schema (JSON schema dict, TypedDict class, OpenAI
function/tool dict) a dict; ``include_raw=True`` gives ``{"raw", "parsed", "parsing_error"}``.
With ``n > 1`` it returns a list of ``n`` such results, one per sample.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from operator import itemgetter
from typing import Any, Literal, cast, get_args

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, Generation
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableLambda,
    RunnableMap,
    RunnablePassthrough,
)
from langchain_core.utils.function_calling import convert_to_json_schema
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel
from typing_extensions import is_typeddict

from ..constraints import Constraint

StructuredMethod = Literal["json_schema", "json_mode"]
#: The ``method`` values ChatBaco supports.
STRUCTURED_METHODS: tuple[str, ...] = get_args(StructuredMethod)


def is_pydantic_class(schema: object) -> bool:
    """Whether ``schema`` is a pydantic model class (v2, or ``pydantic.v1``)."""
    return isinstance(schema, type) and is_basemodel_subclass(schema)


def _is_tool_dict(schema: Mapping[str, Any]) -> bool:
    """An OpenAI function/tool or Anthropic tool dict, rather than a bare JSON schema."""
    if schema.get("type") == "function" and isinstance(schema.get("function"), Mapping):
        return True
    return "name" in schema and ("parameters" in schema or "input_schema" in schema)


def json_schema_of(schema: object) -> dict[str, Any]:
    """The JSON schema that samples are decoded under, from any schema LangChain accepts.

    A pydantic class gives its own JSON schema (``$defs``, constraints and all); a TypedDict
    class or an OpenAI function/tool dict goes through LangChain's ``convert_to_json_schema``;
    any other dict is taken as a JSON schema as it is.
    """
    if is_pydantic_class(schema):
        assert isinstance(schema, type)
        if issubclass(schema, BaseModel):
            return schema.model_json_schema()
        return dict(schema.schema())  # type: ignore[attr-defined]  # pydantic.v1
    if is_typeddict(schema):
        return convert_to_json_schema(cast("type", schema))
    if isinstance(schema, Mapping):
        return convert_to_json_schema(dict(schema)) if _is_tool_dict(schema) else dict(schema)
    raise ValueError(
        "schema must be a pydantic model class, a TypedDict class, a JSON schema dict or an "
        f"OpenAI function/tool dict, got {type(schema).__name__}"
    )


def check_finished(result: list[Generation]) -> None:
    """Raise ``OutputParserException`` for a reply the token budget cut before its JSON was
    complete.

    LangChain's JSON parsing completes partial JSON (``{"title": "Caf`` parses as
    ``{"title": "Caf"}``), so a cut reply would pass for a dict schema, or for a pydantic one
    whose missing fields are optional. A constrained reply that finished (``"stop"``) is
    valid by construction; one that ran out of tokens (``"length"``) is checked here.
    """
    generation = result[0] if result else None
    if not isinstance(generation, ChatGeneration):
        return
    metadata = generation.message.response_metadata
    if metadata.get("finish_reason") != "length":
        return
    try:
        json.loads(generation.text)
    except ValueError:
        tokens = len(metadata.get("token_ids") or ())
        raise OutputParserException(
            f"the reply reached the token budget ({tokens} tokens, finish_reason='length') "
            "before its JSON was complete: raise max_new_tokens (a constrained reply is valid "
            f"by construction only when it finishes). The reply: {generation.text[:200]!r}",
            llm_output=generation.text,
        ) from None


class _Finished:
    """A parser mixin: a reply cut by the token budget is an error that says so
    (:func:`check_finished`), not a silently completed partial object."""

    def parse_result(self, result: list[Generation], *, partial: bool = False) -> Any:
        if not partial:
            check_finished(result)
        return super().parse_result(result, partial=partial)  # type: ignore[misc]


class BacoJsonOutputParser(_Finished, JsonOutputParser):
    """LangChain's ``JsonOutputParser``; a reply cut by the token budget is named as such."""


class BacoPydanticOutputParser(_Finished, PydanticOutputParser):  # type: ignore[type-arg]
    """LangChain's ``PydanticOutputParser``; a reply cut by the token budget is named as
    such."""


def constraint_for(schema: object, method: str, strict: bool | None) -> Constraint:
    """The constraint of a ``with_structured_output`` call, checked now (a bad schema or
    method raises ``ValueError`` here, not at the first call)."""
    if method == "function_calling":
        raise ValueError(
            "ChatBaco has no tool calling, so with_structured_output(method='function_calling') "
            "is not supported; use method='json_schema' (the default: every sample is decoded "
            "under the schema) or method='json_mode' (every sample is a JSON object)"
        )
    if method not in STRUCTURED_METHODS:
        raise ValueError(
            f"unknown structured output method {method!r}; ChatBaco supports "
            f"{', '.join(map(repr, STRUCTURED_METHODS))}"
        )
    if method == "json_mode":
        if strict is not None:
            raise ValueError("strict is not supported with method='json_mode'")
        return Constraint(json_object=True)
    if schema is None:
        raise ValueError("with_structured_output(method='json_schema') needs a schema")
    return Constraint.from_schema(json_schema_of(schema))


def _parser(schema: object) -> Runnable[Any, Any]:
    if is_pydantic_class(schema):
        return BacoPydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
    return BacoJsonOutputParser()


def _with_raw(parser: Runnable[Any, Any]) -> Runnable[Any, Any]:
    """``{"raw": message}`` -> ``{"raw", "parsed", "parsing_error"}``, as LangChain's own."""
    parse = RunnablePassthrough.assign(
        parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
    )
    failed = RunnablePassthrough.assign(parsed=lambda _: None)
    return parse.with_fallbacks([failed], exception_key="parsing_error")


def _all_samples(model: BaseChatModel, bound: dict[str, Any]) -> Runnable[Any, list[AIMessage]]:
    """A runnable that returns every one of the ``n`` replies (``invoke`` keeps the first).

    ``bound`` are the runnable's settings; the keyword arguments of a call (``invoke(prompt,
    seed=11)``, ``batch``, ``ainvoke``, ``stream``: LangChain hands them to a sequence's first
    step) override them, as they do on ``model.bind(**bound)``."""

    def call(kwargs: dict[str, Any]) -> dict[str, Any]:
        # stream=False: streaming=True streams single samples only; n replies are one call.
        return {**bound, **kwargs, "stream": False}

    def samples(
        input: LanguageModelInput, config: RunnableConfig, **kwargs: Any
    ) -> list[AIMessage]:
        result = model.generate_prompt(
            [model._convert_input(input)], callbacks=config.get("callbacks"), **call(kwargs)
        )
        return [_message(generation) for generation in result.generations[0]]

    async def asamples(
        input: LanguageModelInput, config: RunnableConfig, **kwargs: Any
    ) -> list[AIMessage]:
        result = await model.agenerate_prompt(
            [model._convert_input(input)], callbacks=config.get("callbacks"), **call(kwargs)
        )
        return [_message(generation) for generation in result.generations[0]]

    return RunnableLambda(samples, asamples, name="ChatBacoSamples")


def _message(generation: Generation) -> AIMessage:
    assert isinstance(generation, ChatGeneration)
    message: BaseMessage = generation.message
    assert isinstance(message, AIMessage)
    return message


def structured_output(
    model: BaseChatModel,
    schema: object,
    *,
    constraint: Constraint,
    n: int,
    method: str,
    include_raw: bool,
    strict: bool | None,
    settings: Mapping[str, Any],
) -> Runnable[LanguageModelInput, Any]:
    """The runnable of :meth:`ChatBaco.with_structured_output` (see there): ``constraint``
    is :func:`constraint_for` the schema, ``n`` the samples per call once ``settings`` apply."""
    bound: dict[str, Any] = {**settings, "constraint": constraint}
    if schema is not None:
        # LangChain reports this to callbacks and tracers (on_chat_model_start's options).
        bound["ls_structured_output_format"] = {
            "kwargs": {"method": method, "strict": strict},
            "schema": schema,
        }
    parser = _parser(schema)
    if n > 1:
        per_sample = _with_raw(parser) if include_raw else parser
        if include_raw:
            per_sample = RunnableMap(raw=RunnablePassthrough()) | per_sample
        return _all_samples(model, bound) | per_sample.map()
    llm = model.bind(**bound)
    if include_raw:
        # Not LangChain's RunnableMap(raw=llm): a map drops the keyword arguments of a call,
        # and a sequence hands them to its first step, the model (invoke(prompt, seed=11)).
        return llm | RunnableMap(raw=RunnablePassthrough()) | _with_raw(parser)
    return llm | parser
