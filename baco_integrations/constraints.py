"""Structured output: what every sample must match (a JSON schema, any JSON object, a regular
expression or a choice among strings), validated once as a setting.

The grammar engine is llguidance (used by llama.cpp, vLLM and SGLang): it compiles each of
these to a grammar over bytes, so a matcher can follow any tokenization of the text, which is
what a cross-family pair needs (each model re-tokenizes the committed text and its matcher
rolls back to the common prefix; see docs/structured.md for the comparison with xgrammar).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["JSON_LAYOUT", "Constraint"]

#: How constrained JSON is laid out: one line, a space after ``:`` and ``,``. Free white space
#: is where a base model's words would wander off (pages of newlines until the token budget
#: ends); a schema's own ``"x-guidance"`` options take precedence.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _closed(schema: Any) -> Any:
    """``schema`` with ``"additionalProperties": false`` on every object that has properties and
    does not say (as OpenAI's strict structured outputs): a sample holds the fields asked for,
    not keys the model invents."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


def _llmatcher() -> Any:
    try:
        from llguidance import LLMatcher
    except ImportError as exc:  # pragma: no cover - llguidance is a core dependency
        raise ValueError("constraint needs the llguidance package: pip install llguidance") from exc
    return LLMatcher


class Constraint(BaseModel):
    """What every sample of a call must match; set exactly one of the fields.

    * ``json_schema``: a JSON schema (a dict; :meth:`from_schema` also takes a pydantic model);
    * ``json_object``: any JSON object;
    * ``regex``: a regular expression the whole output matches (Rust ``regex`` syntax);
    * ``choices``: one of these strings, exactly;
    * ``lark``: a grammar in llguidance's Lark dialect (``%json {...}`` embeds a JSON schema;
      tool calling builds "free text, or a call to one of these tools" with it).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    regex: str | None = None
    choices: tuple[str, ...] | None = None
    lark: str | None = None

    @classmethod
    def from_schema(cls, schema: type[BaseModel] | Mapping[str, Any]) -> Constraint:
        """A JSON-schema constraint from a pydantic model class or a schema dict."""
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            return cls(json_schema=schema.model_json_schema())
        if isinstance(schema, Mapping):
            return cls(json_schema=dict(schema))
        raise ValueError(
            "constraint schema must be a pydantic model class or a dict, got "
            f"{type(schema).__name__}"
        )

    @classmethod
    def coerce(cls, value: object) -> object:
        """What a ``constraint=`` setting may be: a Constraint, a pydantic model class (its
        JSON schema), or a mapping of these fields."""
        if isinstance(value, type) and issubclass(value, BaseModel) and value is not cls:
            return cls.from_schema(value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Constraint:
        given = [
            name
            for name, value in (
                ("json_schema", self.json_schema),
                ("json_object", self.json_object or None),
                ("regex", self.regex),
                ("choices", self.choices),
                ("lark", self.lark),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "constraint needs exactly one of json_schema, json_object, regex, choices, lark; "
                f"got {', '.join(given) or 'none'}"
            )
        if self.choices is not None and not (self.choices and all(self.choices)):
            raise ValueError("constraint choices must be non-empty strings, at least one")
        error = _llmatcher().validate_grammar(self.grammar())
        if error:
            raise ValueError(f"constraint is not a valid {given[0]}: {error}")
        return self

    def grammar(self) -> str:
        """The llguidance grammar of this constraint."""
        matcher = _llmatcher()
        if self.json_schema is not None:
            schema = _closed(self.json_schema)
            return str(matcher.grammar_from_json_schema(schema, defaults=JSON_LAYOUT))
        if self.json_object:
            return str(matcher.grammar_from_json_schema({"type": "object"}, defaults=JSON_LAYOUT))
        if self.regex is not None:
            return str(matcher.grammar_from_regex(self.regex))
        if self.lark is not None:
            return str(matcher.grammar_from_lark(self.lark))
        assert self.choices is not None
        return str(matcher.grammar_from_lark("start: " + " | ".join(map(json.dumps, self.choices))))
