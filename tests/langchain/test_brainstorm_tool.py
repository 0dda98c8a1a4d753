"""BacoBrainstormTool: n semantically distinct ideas on the tiny pair (near-duplicates are
constructed by the embedder), valid structured ideas, sync and async, routing overrides, and
a clear failure when n cannot be reached."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import jsonschema
import numpy as np
import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, ToolException
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field, ValidationError

from baco_integrations import BacoEngine, GenerationSettings
from baco_integrations.brainstorm import DEFAULT_THRESHOLD, BrainstormArgs, NotEnoughIdeas
from baco_integrations.langchain import BacoBrainstormTool, BacoLLM, ChatBaco

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


class SameEmbedder:
    """Every text is a near-duplicate of every other."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.ones((len(texts), 4))


class Calls:
    """The settings of every engine call, and which entry point made it."""

    def __init__(self, engine: BacoEngine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.settings: list[GenerationSettings] = []
        self.entry: list[str] = []
        generate, agenerate = engine.generate, engine.agenerate

        def spy_generate(prompts: Any, *, settings: Any = None, **kw: Any) -> Any:
            if settings is not None:  # not the engine's own calibration call
                self.settings.append(settings)
                self.entry.append("generate")
            return generate(prompts, settings=settings, **kw)

        async def spy_agenerate(prompts: Any, *, settings: Any = None, **kw: Any) -> Any:
            self.settings.append(settings)
            self.entry.append("agenerate")
            return await agenerate(prompts, settings=settings, **kw)

        monkeypatch.setattr(engine, "generate", spy_generate)
        monkeypatch.setattr(engine, "agenerate", spy_agenerate)


@pytest.fixture
def calls(engine: BacoEngine, monkeypatch: pytest.MonkeyPatch) -> Calls:
    return Calls(engine, monkeypatch)


def texts_of(ideas: list[dict[str, Any]]) -> list[str]:
    return [i["idea"] for i in ideas]


def check_ideas(ideas: Any, n: int, embedder: PairingEmbedder) -> None:
    assert isinstance(ideas, list) and len(ideas) == n
    for idea in ideas:
        assert set(idea) == {"idea", "base_fraction"}
        assert isinstance(idea["idea"], str) and idea["idea"]
        assert 0.0 <= idea["base_fraction"] <= 1.0
    # No two kept ideas are one constructed pair (a near-duplicate and its original).
    pairs = [embedder.pair(text) for text in texts_of(ideas)]
    assert len(set(pairs)) == n


def test_tool_identity_and_schema(engine: BacoEngine) -> None:
    tool = BacoBrainstormTool(llm=ChatBaco(engine=engine))
    assert isinstance(tool, BaseTool)
    assert tool.name == "brainstorm"
    assert tool.args_schema is BrainstormArgs
    function = convert_to_openai_tool(tool)["function"]
    assert function["name"] == "brainstorm"
    assert "distinct ideas" in function["description"]
    params = function["parameters"]
    assert params["required"] == ["topic"]
    assert {"topic", "n", "idea_schema", "router", "gamma", "base_share", "temperature"} == set(
        params["properties"]
    )
    assert tool.threshold == DEFAULT_THRESHOLD


@pytest.mark.parametrize("adapter", [ChatBaco, BacoLLM])
def test_n_distinct_ideas(engine: BacoEngine, calls: Calls, adapter: type) -> None:
    embedder = PairingEmbedder()
    llm = adapter(engine=engine, max_new_tokens=8, seed=0, n=3, system_prompt="Be brief.")
    tool = BacoBrainstormTool(llm=llm, embedder=embedder)
    ideas = tool.invoke({"topic": "a bakery", "n": 5})
    check_ideas(ideas, 5, embedder)
    # 7 samples hold 4 distinct ideas, so a second round (the missing one plus one) ran.
    assert calls.entry == ["generate", "generate"]
    assert [s.n for s in calls.settings] == [7, 2]
    assert [s.seed for s in calls.settings] == [0, 1]
    assert all(s.max_new_tokens == 8 and s.system_prompt == "Be brief." for s in calls.settings)
    assert llm.n == 3 and llm.seed == 0  # the model is left as it was
    # Seeded: the same call gives the same ideas.
    assert tool.invoke({"topic": "a bakery", "n": 5}) == ideas


async def test_async_uses_the_engines_async_call(engine: BacoEngine, calls: Calls) -> None:
    embedder = PairingEmbedder()
    tool = BacoBrainstormTool(
        llm=ChatBaco(engine=engine, max_new_tokens=8, seed=0), embedder=embedder
    )
    ideas = await tool.ainvoke({"topic": "a bakery", "n": 5})
    check_ideas(ideas, 5, embedder)
    assert calls.entry == ["agenerate", "agenerate"]
    sync = BacoBrainstormTool(
        llm=ChatBaco(engine=engine, max_new_tokens=8, seed=0), embedder=PairingEmbedder()
    )
    assert sync.invoke({"topic": "a bakery", "n": 5}) == ideas


def test_structured_ideas_from_a_json_schema_argument(engine: BacoEngine, calls: Calls) -> None:
    llm = ChatBaco(engine=engine, max_new_tokens=64, seed=0, router="P", gamma=0.5)
    tool = BacoBrainstormTool(llm=llm, embedder=PairingEmbedder())
    ideas = tool.invoke({"topic": "a bakery", "n": 3, "idea_schema": SCHEMA})
    assert len(ideas) == 3
    for idea in ideas:
        jsonschema.validate(idea["idea"], SCHEMA)
        assert set(idea["idea"]) == {"title", "risk"}
    assert calls.settings[0].constraint is not None
    assert calls.settings[0].constraint.json_schema == SCHEMA


async def test_structured_ideas_from_a_pydantic_model_field(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, max_new_tokens=64, seed=1, router="P", gamma=0.5)
    tool = BacoBrainstormTool(llm=llm, idea_schema=Idea, embedder=PairingEmbedder())
    ideas = await tool.ainvoke({"topic": "a bakery", "n": 3})
    assert len(ideas) == 3
    for idea in ideas:
        assert isinstance(idea["idea"], dict)  # JSON, what an agent reads
        Idea.model_validate(idea["idea"])
    json.dumps(ideas)


def test_routing_overrides_reach_the_engine(engine: BacoEngine, calls: Calls) -> None:
    llm = ChatBaco(engine=engine, max_new_tokens=8, seed=0, router="P", gamma=0.7)
    tool = BacoBrainstormTool(llm=llm, embedder=PairingEmbedder())
    tool.invoke({"topic": "a bakery", "n": 1, "router": "H", "gamma": 2.0, "temperature": 0.8})
    settings = calls.settings[0]
    assert (settings.router, settings.gamma, settings.temperature) == ("H", 2.0, 0.8)
    tool.invoke({"topic": "a bakery", "n": 1, "base_share": 0.4})
    assert (calls.settings[-1].router, calls.settings[-1].gamma) == ("P", None)
    assert calls.settings[-1].base_share == 0.4
    assert (llm.router, llm.gamma) == ("P", 0.7)


def test_a_tool_call_gets_a_tool_message(engine: BacoEngine) -> None:
    tool = BacoBrainstormTool(
        llm=ChatBaco(engine=engine, max_new_tokens=8, seed=0), embedder=PairingEmbedder()
    )
    call = {"type": "tool_call", "id": "c1", "name": "brainstorm", "args": {"topic": "x", "n": 2}}
    message = tool.invoke(call)
    assert isinstance(message, ToolMessage) and message.tool_call_id == "c1"
    ideas = json.loads(message.content)  # type: ignore[arg-type]
    assert len(ideas) == 2 and all("base_fraction" in i for i in ideas)


def test_falling_short_is_a_tool_exception_with_the_ideas_found(
    engine: BacoEngine, calls: Calls
) -> None:
    llm = ChatBaco(engine=engine, max_new_tokens=8, seed=0)
    tool = BacoBrainstormTool(llm=llm, embedder=SameEmbedder(), max_rounds=2)
    with pytest.raises(
        ToolException, match=r"found 1 distinct idea\(s\) of the 3 asked for"
    ) as caught:
        tool.invoke({"topic": "a bakery", "n": 3})
    cause = caught.value.__cause__
    assert isinstance(cause, NotEnoughIdeas)
    assert len(cause.ideas) == 1 and cause.rounds == 2 and len(calls.settings) == 2
    assert json.dumps(cause.ideas, ensure_ascii=False) in str(caught.value)
    # An agent gets the message as the tool's (error) result.
    handled = BacoBrainstormTool(
        llm=llm, embedder=SameEmbedder(), max_rounds=1, handle_tool_error=True
    )
    call = {"type": "tool_call", "id": "c2", "name": "brainstorm", "args": {"topic": "x", "n": 2}}
    message = handled.invoke(call)
    assert message.status == "error" and "distinct ideas found" in message.content


@pytest.mark.parametrize(
    "args",
    [
        {"topic": "x", "n": 0},
        {"topic": "x", "n": 21},
        {"topic": ""},
        {"n": 3},
        {"topic": "x", "router": "no-such-router"},
        {"topic": "x", "base_share": 1.5},
        {"topic": "x", "idea_schema": {"type": "no-such-type"}},
        {"topic": "x", "router": "P", "gamma": 3.0},  # a P threshold is a probability
    ],
)
def test_bad_arguments_raise(engine: BacoEngine, calls: Calls, args: dict[str, Any]) -> None:
    tool = BacoBrainstormTool(
        llm=ChatBaco(engine=engine, max_new_tokens=8), embedder=PairingEmbedder()
    )
    with pytest.raises((ValidationError, ValueError)):
        tool.invoke(args)
    assert calls.settings == []  # refused before decoding


def test_llm_must_be_a_baco_model() -> None:
    with pytest.raises(ValidationError):
        BacoBrainstormTool(llm="not a model")


@pytest.fixture(scope="module")
def wide_engine(tmp_path_factory: pytest.TempPathFactory) -> BacoEngine:
    """A tiny pair with a 2,048-token window: the tools' prompt (the tool's description and
    argument schema) is longer than the default pair's 512 tokens."""
    from baco_integrations.testing import make_tiny_pair

    pair = make_tiny_pair(tmp_path_factory.mktemp("wide_pair"), max_position_embeddings=2048)
    return BacoEngine.from_pretrained(pair.base_dir, pair.aligned_dir)


def test_a_langgraph_agent_calls_the_brainstorm_tool(wide_engine: BacoEngine) -> None:
    import warnings

    from langchain_core.messages import AIMessage, HumanMessage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from langgraph.prebuilt import create_react_agent

    tool = BacoBrainstormTool(
        llm=ChatBaco(engine=wide_engine, max_new_tokens=8, seed=0),
        embedder=PairingEmbedder(),
        handle_tool_error=True,
    )
    caller = ChatBaco(engine=wide_engine, max_new_tokens=256, seed=1)
    answerer = ChatBaco(engine=wide_engine, max_new_tokens=16, seed=1)

    def select(state: Any, runtime: Any) -> Any:
        """The first turn must call the tool, the next one answers."""
        if any(isinstance(m, ToolMessage) for m in state["messages"]):
            return answerer.bind_tools([tool], tool_choice="none")
        return caller.bind_tools([tool], tool_choice="required")

    agent = create_react_agent(select, [tool])
    state = agent.invoke({"messages": [HumanMessage("Brainstorm names for a bakery.")]})
    messages = state["messages"]
    calls = [m for m in messages if isinstance(m, AIMessage) and m.tool_calls]
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert calls and results
    call = calls[0].tool_calls[0]
    assert call["name"] == "brainstorm" and results[0].tool_call_id == call["id"]
    if results[0].status == "success":  # the model's random arguments may be refused
        assert len(json.loads(results[0].content)) == call["args"].get("n", 5)  # type: ignore[arg-type]
    assert isinstance(messages[-1], AIMessage) and not messages[-1].tool_calls
