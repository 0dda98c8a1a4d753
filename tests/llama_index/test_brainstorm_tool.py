"""BacoToolSpec: to_tool_list() gives a brainstorm tool that returns n semantically distinct
ideas on the tiny pair (near-duplicates are constructed by the embedder), valid structured
ideas, sync and async, and a clear failure when n cannot be reached."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import jsonschema
import numpy as np
import pytest
from llama_index.core.tools import FunctionTool
from llama_index.core.tools.tool_spec.base import BaseToolSpec
from pydantic import BaseModel, Field

from baco_integrations import BacoEngine
from baco_integrations.brainstorm import BrainstormArgs, NotEnoughIdeas
from baco_integrations.llama_index import BacoLLM, BacoToolSpec

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 12},
        "risk": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["title", "risk"],
}


class Idea(BaseModel):
    title: str = Field(max_length=12)
    risk: int = Field(ge=1, le=5)


class PairingEmbedder:
    """Texts in order of first sight: every second one is a near-duplicate (cosine 0.9) of
    the one before it, all others are orthogonal. So a round of 7 new samples holds 4
    distinct ideas, whatever the (random) texts are."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            k = self.index.setdefault(text, len(self.index))
            row = np.zeros(256)
            row[k // 2] = 1.0
            if k % 2:
                row[k // 2], row[128 + k // 2] = 0.9, math.sqrt(1 - 0.9**2)
            rows.append(row)
        return np.stack(rows)

    def pair(self, text: str) -> int:
        return self.index[text] // 2


def brainstorm_tool(llm: BacoLLM, **kwargs: Any) -> FunctionTool:
    tools = BacoToolSpec(llm=llm, **kwargs).to_tool_list()
    assert len(tools) == 1
    return tools[0]


def check_ideas(ideas: Any, n: int, embedder: PairingEmbedder) -> None:
    assert isinstance(ideas, list) and len(ideas) == n
    for idea in ideas:
        assert set(idea) == {"idea", "base_fraction"}
        assert isinstance(idea["idea"], str) and idea["idea"]
        assert 0.0 <= idea["base_fraction"] <= 1.0
    assert len({embedder.pair(i["idea"]) for i in ideas}) == n  # no constructed pair kept


def test_tool_list(llm: BacoLLM) -> None:
    spec = BacoToolSpec(llm=llm)
    assert isinstance(spec, BaseToolSpec)
    tool = brainstorm_tool(llm)
    assert isinstance(tool, FunctionTool)
    assert tool.metadata.name == "brainstorm"
    assert tool.metadata.fn_schema is BrainstormArgs
    assert "distinct ideas" in tool.metadata.description
    function = tool.metadata.to_openai_tool()["function"]
    assert function["name"] == "brainstorm"
    assert function["parameters"]["required"] == ["topic"]


def test_n_distinct_ideas(llm: BacoLLM, engine_calls: Any) -> None:
    embedder = PairingEmbedder()
    output = brainstorm_tool(llm, embedder=embedder).call(topic="a bakery", n=5)
    check_ideas(output.raw_output, 5, embedder)
    assert not output.is_error
    assert "base_fraction" in output.content
    # 7 samples hold 4 distinct ideas, so a second round (the missing one plus one) ran, with
    # the model's settings and the round's own n and seed.
    settings = [s for _, s in engine_calls.generate]
    assert [(s.n, s.seed, s.max_new_tokens) for s in settings] == [(7, 0, 8), (2, 1, 8)]
    assert engine_calls.asynchronous == []


async def test_async_uses_the_engines_async_call(llm: BacoLLM, engine_calls: Any) -> None:
    embedder = PairingEmbedder()
    output = await brainstorm_tool(llm, embedder=embedder).acall(topic="a bakery", n=5)
    check_ideas(output.raw_output, 5, embedder)
    assert engine_calls.asynchronous == ["agenerate", "agenerate"]
    sync = brainstorm_tool(llm, embedder=PairingEmbedder()).call(topic="a bakery", n=5)
    assert sync.raw_output == output.raw_output  # seeded: the same ideas


def test_structured_ideas(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, max_new_tokens=64, seed=0, router="P", gamma=0.5)
    tool = brainstorm_tool(llm, embedder=PairingEmbedder())
    ideas = tool.call(topic="a bakery", n=3, idea_schema=SCHEMA).raw_output
    assert len(ideas) == 3
    for idea in ideas:
        jsonschema.validate(idea["idea"], SCHEMA)
        assert set(idea["idea"]) == {"title", "risk"}


async def test_structured_ideas_from_a_pydantic_model(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, max_new_tokens=64, seed=2, router="P", gamma=0.5)
    tool = brainstorm_tool(llm, idea_schema=Idea, embedder=PairingEmbedder())
    ideas = (await tool.acall(topic="a bakery", n=3)).raw_output
    assert len(ideas) == 3
    for idea in ideas:
        Idea.model_validate(idea["idea"])
    json.dumps(ideas)


def test_routing_overrides(llm: BacoLLM, engine_calls: Any) -> None:
    tool = brainstorm_tool(llm, embedder=PairingEmbedder())
    tool.call(topic="a bakery", n=1, router="H", gamma=2.0)
    _, settings = engine_calls.last
    assert (settings.router, settings.gamma) == ("H", 2.0)
    assert llm.router == "P-PUNC"


def test_falling_short_raises_with_the_ideas_found(llm: BacoLLM) -> None:
    class Same:
        def embed(self, texts: Sequence[str]) -> np.ndarray:
            return np.ones((len(texts), 4))

    tool = brainstorm_tool(llm, embedder=Same(), max_rounds=2)
    with pytest.raises(NotEnoughIdeas, match=r"found 1 distinct idea\(s\) of the 3") as caught:
        tool.call(topic="a bakery", n=3)
    assert len(caught.value.ideas) == 1
    assert json.dumps(caught.value.ideas, ensure_ascii=False) in str(caught.value)


@pytest.mark.parametrize("args", [{"n": 0}, {"n": 21}, {"topic": ""}, {"router": "nope"}])
def test_bad_arguments(llm: BacoLLM, engine_calls: Any, args: dict[str, Any]) -> None:
    tool = brainstorm_tool(llm, embedder=PairingEmbedder())
    with pytest.raises(ValueError):
        tool.call(**{"topic": "x", **args})
    assert engine_calls.generate == []


def test_llm_must_be_a_baco_model() -> None:
    with pytest.raises(ValueError, match="BACO model"):
        BacoToolSpec(llm="not a model")  # type: ignore[arg-type]


async def test_a_function_agent_calls_the_brainstorm_tool(wide_engine: BacoEngine) -> None:
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.base.llms.types import ToolCallBlock

    tools = BacoToolSpec(
        llm=BacoLLM(engine=wide_engine, max_new_tokens=8, seed=0), embedder=PairingEmbedder()
    ).to_tool_list()
    llm = BacoLLM(engine=wide_engine, max_new_tokens=256, seed=1)
    agent = FunctionAgent(tools=tools, llm=llm, initial_tool_choice="brainstorm")
    handler = agent.run("Brainstorm names for a bakery.", max_iterations=6)
    results = []
    async for event in handler.stream_events():
        if type(event).__name__ == "ToolCallResult":
            results.append(event)
    response = await handler
    assert results and results[0].tool_name == "brainstorm"
    output = results[0].tool_output
    if not output.is_error:  # the model's random arguments may be refused
        assert len(output.raw_output) == results[0].tool_kwargs.get("n", 5)
    assert not any(isinstance(block, ToolCallBlock) for block in response.response.blocks)
