"""Structured output in LlamaIndex: structured_predict and as_structured_llm decode under the
output class's JSON schema; constraint= per call.

The tiny models are random, so the text inside the JSON is gibberish; what is tested is what
decoding under a grammar guarantees: every reply that finished parses and validates.
Schemas bound their strings (maxLength) so that random models finish quickly.
"""

from __future__ import annotations

import json
from typing import Literal

import pytest
from llama_index.core.llms import ChatMessage, ChatResponse
from llama_index.core.prompts import PromptTemplate
from pydantic import BaseModel, Field

from baco_integrations import BacoEngine
from baco_integrations.constraints import Constraint
from baco_integrations.llama_index import BacoLLM

from .conftest import EngineCalls

PROMPT = PromptTemplate("Brainstorm a product idea about {topic}.")


class Idea(BaseModel):
    """A product idea."""

    title: str = Field(max_length=24, description="a short name")
    kind: Literal["app", "shop", "service"]
    risk: int = Field(ge=1, le=5, description="1 (safe) to 5 (risky)")


@pytest.fixture
def idea_llm(engine: BacoEngine) -> BacoLLM:
    return BacoLLM(engine=engine, max_new_tokens=120, seed=0)


def test_structured_predict_decodes_under_the_schema(
    idea_llm: BacoLLM, engine_calls: EngineCalls
) -> None:
    idea = idea_llm.structured_predict(Idea, PROMPT, topic="tea")
    assert isinstance(idea, Idea)
    prompt, settings = engine_calls.last
    assert settings.constraint == Constraint.from_schema(Idea)
    # LlamaIndex's program still tells the model the schema, in the prompt
    assert "maxLength" in json.dumps(prompt)


def test_llm_kwargs_are_settings(idea_llm: BacoLLM, engine_calls: EngineCalls) -> None:
    idea_llm.structured_predict(
        Idea, PROMPT, llm_kwargs={"temperature": 0.5, "router": "P"}, topic="tea"
    )
    settings = engine_calls.last[1]
    assert (settings.temperature, settings.router) == (0.5, "P")
    assert settings.constraint == Constraint.from_schema(Idea)
    # an explicit constraint wins (here: one that the class still parses)
    only_apps = dict(Idea.model_json_schema())
    only_apps["properties"] = {**only_apps["properties"], "kind": {"const": "app"}}
    idea = idea_llm.structured_predict(
        Idea, PROMPT, llm_kwargs={"constraint": Constraint(json_schema=only_apps)}, topic="x"
    )
    assert idea.kind == "app"


async def test_async_and_streams(idea_llm: BacoLLM) -> None:
    idea = idea_llm.structured_predict(Idea, PROMPT, topic="tea")
    assert await idea_llm.astructured_predict(Idea, PROMPT, topic="tea") == idea
    partials = list(idea_llm.stream_structured_predict(Idea, PROMPT, topic="tea"))
    assert len(partials) > 1 and partials[-1] == idea  # partial objects, then the whole
    stream = await idea_llm.astream_structured_predict(Idea, PROMPT, topic="tea")
    assert [p async for p in stream][-1] == idea


async def test_as_structured_llm(idea_llm: BacoLLM) -> None:
    structured = idea_llm.as_structured_llm(Idea)
    response = structured.chat([ChatMessage(role="user", content="An idea about tea.")])
    assert isinstance(response, ChatResponse)
    assert isinstance(response.raw, Idea)
    assert Idea.model_validate_json(response.message.content) == response.raw
    completion = structured.complete("An idea about tea.")
    assert isinstance(Idea.model_validate_json(completion.text), Idea)
    response = await structured.achat([ChatMessage(role="user", content="An idea about tea.")])
    assert isinstance(response.raw, Idea)


def test_n_samples_through_complete(idea_llm: BacoLLM) -> None:
    with pytest.raises(ValueError, match=r"returns one Idea, but n=3.*constraint=Idea, n=3"):
        idea_llm.structured_predict(Idea, PROMPT, llm_kwargs={"n": 3}, topic="tea")
    response = idea_llm.complete("Brainstorm a product idea.", constraint=Idea, n=3)
    samples = response.additional_kwargs["samples"]
    assert len(samples) == 3
    assert all(s["finish_reason"] == "stop" for s in samples)
    ideas = [Idea.model_validate_json(s["text"]) for s in samples]
    assert len(ideas) == 3


def test_errors(idea_llm: BacoLLM) -> None:
    with pytest.raises(ValueError, match=r"reached max_new_tokens=3 \(raise it\)"):
        idea_llm.structured_predict(Idea, PROMPT, llm_kwargs={"max_new_tokens": 3}, topic="x")
    with pytest.raises(ValueError, match="pydantic model class or a dict"):
        idea_llm.as_structured_llm(str)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown setting"):
        idea_llm.structured_predict(Idea, PROMPT, llm_kwargs={"gama": 1}, topic="x")


def test_constraint_per_call(idea_llm: BacoLLM) -> None:
    reply = idea_llm.chat(
        [ChatMessage(role="user", content="Good?")], constraint=Constraint(choices=("yes", "no"))
    )
    assert reply.message.content in {"yes", "no"}
    Idea.model_validate_json(idea_llm.complete("An idea.", constraint=Idea).text)
    idea_llm.constraint = Idea  # the field: every call
    Idea.model_validate_json(idea_llm.complete("An idea.").text)


def test_cross_family_pair(cross_engine: BacoEngine) -> None:
    llm = BacoLLM(engine=cross_engine, max_new_tokens=120, seed=0, router="random", gamma=0.5)
    assert isinstance(llm.structured_predict(Idea, PROMPT, topic="tea"), Idea)
    response = llm.complete("An idea.", constraint=Idea, n=3)
    for sample in response.additional_kwargs["samples"]:
        Idea.model_validate_json(sample["text"])
