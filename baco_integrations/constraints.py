"""Structured output: what every sample must match (a JSON schema, any JSON object, a regular
expression or a choice among strings), validated once as a setting.

The grammar engine is llguidance (used by llama.cpp, vLLM and SGLang): it compiles each of
these to a grammar over bytes, so a matcher can follow any tokenization of the text, which is
what a cross-family pair needs (each model re-tokenizes the committed text and its matcher
rolls back to the common prefix; see docs/structured.md for the comparison with xgrammar).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["JSON_LAYOUT", "NUMBER_LIMIT", "NUMBER_STEP", "Constraint"]

#: How constrained JSON is laid out: one line, a space after ``:`` and ``,``. Free white space
#: is where a base model's words would wander off (pages of newlines until the token budget
#: ends); a schema's own ``"x-guidance"`` options take precedence.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


#: The bound an integer or number gets on each side its schema leaves open: 15 digits, so a
#: model cannot write digits until the token budget ends (``"minutes": 1232424580172...``).
#: Every integer of up to 15 digits is exact as a double (< 2**53: JavaScript's safe
#: integers, JSON parsers that read numbers as doubles) and fits int64.
NUMBER_LIMIT = 10**15 - 1
#: The ``multipleOf`` a number gets when its schema gives none: at most 9 decimals (the
#: fraction is unbounded otherwise, ``0.3333...``). Bounded numbers take no exponent.
NUMBER_STEP = 1e-9

#: Keywords whose values are data, not schemas: :func:`_closed` leaves them as they are.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
#: Keywords whose values map names to schemas (a property may be called ``default``).
_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)


def _bound(schema: Mapping[str, Any], *keys: str) -> float | None:
    """The schema's own bound on one side (``minimum``/``exclusiveMinimum`` or the maximum
    pair), or None; draft 4's boolean ``exclusiveMinimum`` goes with ``minimum``."""
    for key in keys:
        value = schema.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    return None


def _bounded(schema: dict[str, Any]) -> dict[str, Any]:
    """An integer or number ``schema`` with bounds on the sides it leaves open
    (:data:`NUMBER_LIMIT`) and, for a number, :data:`NUMBER_STEP` as its ``multipleOf`` if it
    has none. The schema's own bounds win: only a missing side is filled, and not where that
    would leave no value (a ``minimum`` above the limit)."""
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if not isinstance(kinds, list) or "enum" in schema or "const" in schema:
        return schema
    if "integer" not in kinds and "number" not in kinds:
        return schema
    bounded = dict(schema)
    low = _bound(schema, "minimum", "exclusiveMinimum")
    high = _bound(schema, "maximum", "exclusiveMaximum")
    if low is None and (high is None or high > -NUMBER_LIMIT):
        bounded["minimum"] = -NUMBER_LIMIT
    if high is None and (low is None or low < NUMBER_LIMIT):
        bounded["maximum"] = NUMBER_LIMIT
    if "number" in kinds and "multipleOf" not in schema and _has_step(bounded):
        bounded["multipleOf"] = NUMBER_STEP
    return bounded


def _has_step(schema: Mapping[str, Any]) -> bool:
    """Whether the range of ``schema`` holds a multiple of :data:`NUMBER_STEP` (a range
    narrower than that, ``[0.1234567891, 0.1234567892]``, keeps its own decimals)."""
    low = _bound(schema, "minimum", "exclusiveMinimum")
    high = _bound(schema, "maximum", "exclusiveMaximum")
    if low is None or high is None:
        return True
    step, low_, high_ = Decimal(str(NUMBER_STEP)), Decimal(str(low)), Decimal(str(high))
    # the first multiple of the step in the range (above low, when low is exclusive)
    if "minimum" in schema:
        first = math.ceil(low_ / step) * step
    else:
        first = (math.floor(low_ / step) + 1) * step
    return first <= high_ if "maximum" in schema else first < high_


def _closed(schema: Any) -> Any:
    """``schema`` as it is compiled: ``"additionalProperties": false`` on every object that has
    properties and does not say (as OpenAI's strict structured outputs): a sample holds the
    fields asked for, not keys the model invents; and every integer or number bounded on the
    sides it leaves open (:func:`_bounded`)."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DATA_KEYWORDS:
            closed[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            closed[key] = {name: _closed(item) for name, item in value.items()}
        else:
            closed[key] = _closed(value)
    if "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return _bounded(closed)


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
