"""Constrained decoding: every sample matches its call's constraint, on both kinds of pair,
with routers that send most words to the base model, beside unconstrained calls."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from baco_integrations import BacoEngine, GenerationSettings
from baco_integrations.constraints import JSON_LAYOUT, Constraint

PROMPTS = ["Ideas for a coffee shop", "Names for a cat", "A plan for the weekend", "Why?"]


class Idea(BaseModel):
    title: str = Field(max_length=24)
    risk: int = Field(ge=0, le=9)
    tags: list[Annotated[str, Field(max_length=12)]] = Field(max_length=2)


def test_two_hundred_constrained_samples_all_validate(any_engine: BacoEngine) -> None:
    """Gibberish content, but every sample parses and validates, whoever wrote each word."""
    valid = base_words = words = 0
    for router, gamma in (("base", None), ("P", 0.9), ("random", 0.8), ("P-PUNC", 0.9)):
        outs = any_engine.generate(
            PROMPTS,
            router=router,
            gamma=gamma,
            n=13 if router != "base" else 11,
            max_new_tokens=96,
            seed=5,
            constraint=Idea,
        )
        for out in (o for row in outs for o in row):
            assert out.finish_reason == "stop", out.text
            Idea.model_validate_json(out.text)
            valid += 1
            base_words += out.sources.count("base")
            words += len(out.sources)
    assert valid >= 200
    assert base_words / words > 0.5  # most of it from the base model


@pytest.mark.parametrize(
    ("constraint", "check"),
    [
        ({"regex": r"[a-z]{3,8}-[0-9]{2}"}, lambda t: re.fullmatch(r"[a-z]{3,8}-[0-9]{2}", t)),
        ({"choices": ["red", "green", "dark blue"]}, lambda t: t in ("red", "green", "dark blue")),
        (
            {"json_schema": {"type": "array", "items": {"type": "integer"}, "maxItems": 3}},
            lambda t: all(isinstance(x, int) for x in json.loads(t)),
        ),
    ],
)
def test_regex_choice_and_json_constraints(any_engine: BacoEngine, constraint: Any, check) -> None:
    outs = any_engine.generate(
        PROMPTS[:2],
        router="random",
        gamma=0.7,
        n=4,
        max_new_tokens=64,
        seed=1,
        constraint=constraint,
    )
    for out in (o for row in outs for o in row):
        assert out.finish_reason == "stop" and check(out.text), out.text


def test_any_json_object(any_engine: BacoEngine) -> None:
    """Free keys and strings: a random tiny model may ramble past the budget, but what ends
    is a JSON object, and what the budget cut is a prefix of one."""
    outs = any_engine.generate(
        PROMPTS,
        router="random",
        gamma=0.7,
        n=4,
        max_new_tokens=96,
        seed=3,
        constraint={"json_object": True},
    )
    finished = [o for row in outs for o in row if o.finish_reason == "stop"]
    assert finished
    assert all(isinstance(json.loads(o.text), dict) for o in finished)
    assert all(o.text.startswith("{") for row in outs for o in row)


def test_constrained_and_free_calls_share_a_batch(any_engine: BacoEngine) -> None:
    calls: list[dict[str, Any]] = [
        {"constraint": Idea, "router": "P-PUNC", "gamma": 0.9},
        {"router": "P-PUNC", "gamma": 0.9},
        {"constraint": {"choices": ["yes", "no"]}, "router": "base"},
        {"constraint": {"regex": "[0-9]{4}"}, "router": "random", "gamma": 0.5},
    ]
    common = {"n": 3, "max_new_tokens": 64, "seed": 9}
    alone = [any_engine.generate(PROMPTS[0], **common, **kw) for kw in calls]
    with ThreadPoolExecutor(len(calls)) as pool:
        together = list(pool.map(lambda kw: any_engine.generate(PROMPTS[0], **common, **kw), calls))
    assert [[o.text for o in r[0]] for r in together] == [[o.text for o in r[0]] for r in alone]
    for out in together[0][0]:
        Idea.model_validate_json(out.text)
    assert {o.text for o in together[2][0]} <= {"yes", "no"}


def test_streamed_constrained_text_equals_generated(any_engine: BacoEngine) -> None:
    kwargs = {"router": "P", "gamma": 0.9, "max_new_tokens": 96, "seed": 2, "constraint": Idea}
    (out,) = any_engine.generate(PROMPTS[1], **kwargs)[0]
    chunks = list(any_engine.stream(PROMPTS[1], **kwargs))
    assert "".join(c.text for c in chunks) == out.text
    Idea.model_validate_json(out.text)


def test_lazy_and_lock_step_agree_under_a_constraint(any_engine: BacoEngine) -> None:
    kwargs = {"router": "P-PUNC", "gamma": 0.8, "n": 3, "max_new_tokens": 64, "seed": 4}
    lazy = any_engine.generate(PROMPTS[:2], constraint=Idea, lazy=True, **kwargs)
    eager = any_engine.generate(PROMPTS[:2], constraint=Idea, lazy=False, **kwargs)
    assert [[o.token_ids for o in r] for r in lazy] == [[o.token_ids for o in r] for r in eager]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({}, "exactly one of"),
        ({"regex": "[a-z", "choices": ["a"]}, "exactly one of"),
        ({"regex": "[a-z"}, "not a valid regex"),
        ({"choices": []}, "choices"),
        ({"json_schema": {"type": "strange"}}, "json_schema"),
        ({"unknown": 1}, "unknown"),
        (5, "constraint"),
    ],
)
def test_bad_constraints_are_refused_naming_the_setting(value: Any, match: str) -> None:
    with pytest.raises(ValidationError, match=match) as caught:
        GenerationSettings(constraint=value)
    assert "constraint" in str(caught.value)


def test_a_pydantic_model_class_is_its_schema() -> None:
    settings = GenerationSettings(constraint=Idea)
    assert settings.constraint == Constraint.from_schema(Idea)
    assert settings.constraint.json_schema == Idea.model_json_schema()


def test_a_lark_grammar_constrains_every_sample(engine: BacoEngine) -> None:
    """``lark``: llguidance's Lark dialect, with a JSON schema embedded by ``%json``."""
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer", "maximum": 99}},
        "required": ["a"],
        "x-guidance": JSON_LAYOUT,
    }
    constraint = Constraint(lark=f'start: "none" | %json {json.dumps(schema)}')
    outs = engine.generate("hi", constraint=constraint, n=6, seed=3, max_new_tokens=40)
    for out in outs[0]:
        if out.finish_reason == "stop":
            assert out.text == "none" or set(json.loads(out.text)) == {"a"}
    with pytest.raises(ValueError, match="exactly one of .*lark"):
        Constraint(lark="start: a", regex="a")
    with pytest.raises(ValueError, match="not a valid lark"):
        Constraint(lark="start: undefined_rule")
