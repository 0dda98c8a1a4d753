"""Structured output in LangChain: ChatBaco.with_structured_output and constraint= per call.

The tiny models are random, so the text inside the JSON is gibberish; what is tested is what
decoding under a grammar guarantees: every reply that finished parses and validates.
Schemas bound their strings (maxLength) so that random models finish quickly.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import PydanticOutputParser
from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel, Field, TypeAdapter
from typing_extensions import TypedDict  # pydantic validates these on Python < 3.12

from baco_integrations import BacoEngine
from baco_integrations.constraints import Constraint
from baco_integrations.langchain import BacoLLM, ChatBaco
from baco_integrations.langchain.structured import json_schema_of

PROMPT = "Brainstorm a product idea."


class Idea(BaseModel):
    """A product idea."""

    title: str = Field(max_length=24, description="a short name")
    kind: Literal["app", "shop", "service"]
    risk: int = Field(ge=1, le=5, description="1 (safe) to 5 (risky)")


class IdeaDict(TypedDict):
    """A product idea."""

    kind: Annotated[Literal["app", "shop", "service"], ..., "what it is"]
    risk: Annotated[int, ..., "1 (safe) to 5 (risky)"]


IDEA_DICT = TypeAdapter(IdeaDict)

#: Idea as an OpenAI tool dict (what convert_to_openai_tool gives).
IDEA_TOOL = {
    "type": "function",
    "function": {
        "name": "Idea",
        "description": "A product idea.",
        "parameters": Idea.model_json_schema(),
    },
}


@pytest.fixture
def chat(engine: BacoEngine) -> ChatBaco:
    # Bounded strings: a random tiny model finishes well within this budget.
    return ChatBaco(engine=engine, max_new_tokens=120, seed=0)


def _is_compact_json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    assert isinstance(value, dict)
    assert "\n" not in text  # one line: the engine's compact layout (constraints.JSON_LAYOUT)
    return value


# ------------------------------------------------------------------------ json_schema


def test_pydantic_schema_gives_a_validated_object(chat: ChatBaco) -> None:
    idea = chat.with_structured_output(Idea).invoke(PROMPT)
    assert isinstance(idea, Idea)

    result = chat.with_structured_output(Idea, include_raw=True).invoke(PROMPT)
    assert set(result) == {"raw", "parsed", "parsing_error"}
    assert result["parsing_error"] is None
    raw = result["raw"]
    assert isinstance(raw, AIMessage)
    assert raw.response_metadata["finish_reason"] == "stop"
    assert _is_compact_json_object(raw.content) == result["parsed"].model_dump()
    assert result["parsed"] == idea  # same seed, same reply


@pytest.mark.parametrize(
    "schema",
    [Idea.model_json_schema(), IdeaDict, IDEA_TOOL],
    ids=["json_schema_dict", "typeddict", "openai_tool"],
)
def test_other_schemas_give_dicts(chat: ChatBaco, schema: Any) -> None:
    result = chat.with_structured_output(schema).invoke(PROMPT)
    assert isinstance(result, dict)
    if schema is IdeaDict:
        IDEA_DICT.validate_python(result)
        assert set(result) <= {"kind", "risk"}  # objects are closed to other keys
    else:
        Idea.model_validate(result)
        assert set(result) == {"title", "kind", "risk"}


def test_schema_conversion() -> None:
    assert json_schema_of(Idea) == Idea.model_json_schema()  # $defs and constraints kept
    assert json_schema_of(IDEA_TOOL)["properties"].keys() == {"title", "kind", "risk"}
    assert json_schema_of(IdeaDict)["required"] == ["kind", "risk"]
    bare = {"type": "object", "properties": {"x": {"type": "integer"}}}
    assert json_schema_of(bare) == bare


def test_streams_partial_dicts_then_the_whole(chat: ChatBaco) -> None:
    structured = chat.with_structured_output(Idea.model_json_schema())
    chunks = list(structured.stream(PROMPT))
    assert len(chunks) > 1  # partial objects as the JSON grows
    assert all(isinstance(chunk, dict) for chunk in chunks)
    assert chunks[-1] == structured.invoke(PROMPT)


async def test_async(chat: ChatBaco) -> None:
    structured = chat.with_structured_output(Idea)
    assert await structured.ainvoke(PROMPT) == structured.invoke(PROMPT)
    chunks = [chunk async for chunk in structured.astream(PROMPT)]
    assert chunks[-1] == structured.invoke(PROMPT)


def test_in_a_chain_with_bound_settings(chat: ChatBaco) -> None:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Reply with JSON."), ("human", "An idea about {topic}.")]
    )
    chain = prompt | chat.with_structured_output(Idea, temperature=0.7, router="P", gamma=0.4)
    assert isinstance(chain.invoke({"topic": "tea"}), Idea)


# ------------------------------------------------------------------------ n samples


def test_n_samples_give_a_list(chat: ChatBaco, engine: BacoEngine) -> None:
    ideas = chat.with_structured_output(Idea, n=3).invoke(PROMPT)
    assert isinstance(ideas, list) and len(ideas) == 3
    assert all(isinstance(idea, Idea) for idea in ideas)
    # the samples of one call: the same as the engine's n samples with those settings
    outputs = engine.generate(
        [[{"role": "user", "content": PROMPT}]],
        constraint=Idea,
        n=3,
        max_new_tokens=120,
        seed=0,
    )[0]
    assert [Idea.model_validate_json(o.text) for o in outputs] == ideas

    # n as the model's field; include_raw gives one standard dict per sample
    results = (
        ChatBaco(engine=engine, n=2, max_new_tokens=120, seed=0)
        .with_structured_output(Idea, include_raw=True)
        .invoke(PROMPT)
    )
    assert [r["parsed"] for r in results] == ideas[:2]
    assert all(r["parsing_error"] is None and isinstance(r["raw"], AIMessage) for r in results)


async def test_n_samples_async_and_streaming_field(engine: BacoEngine) -> None:
    # streaming=True streams single samples; n samples are still one call
    chat = ChatBaco(engine=engine, n=2, max_new_tokens=120, seed=0, streaming=True)
    ideas = await chat.with_structured_output(Idea).ainvoke(PROMPT)
    assert len(ideas) == 2 and all(isinstance(idea, Idea) for idea in ideas)
    assert chat.with_structured_output(Idea).invoke(PROMPT) == ideas


# ------------------------------------------------------------------------ json_mode


def test_json_mode(chat: ChatBaco) -> None:
    # any JSON object; a random model invents its keys, so no schema parses it here
    value = chat.with_structured_output(method="json_mode", max_new_tokens=300).invoke(PROMPT)
    assert isinstance(value, dict)
    result = chat.with_structured_output(
        Idea, method="json_mode", include_raw=True, max_new_tokens=300
    ).invoke(PROMPT)
    _is_compact_json_object(result["raw"].content)
    assert (result["parsed"] is None) == (result["parsing_error"] is not None)


# ------------------------------------------------------------------------ errors


def test_a_cut_reply_is_a_parsing_error_that_says_so(chat: ChatBaco) -> None:
    cut = chat.with_structured_output(Idea.model_json_schema(), max_new_tokens=3)
    # LangChain's JSON parser would complete '{"title' into {}: a cut reply must not pass
    with pytest.raises(OutputParserException, match="raise max_new_tokens"):
        cut.invoke(PROMPT)
    result = chat.with_structured_output(Idea, include_raw=True, max_new_tokens=3).invoke(PROMPT)
    assert result["parsed"] is None
    assert result["raw"].response_metadata["finish_reason"] == "length"
    assert "finish_reason='length'" in str(result["parsing_error"])


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((Idea,), {"method": "function_calling"}, "no tool calling.*json_schema.*json_mode"),
        ((Idea,), {"method": "xml"}, "unknown structured output method 'xml'"),
        ((), {}, "needs a schema"),
        ((Idea,), {"method": "json_mode", "strict": True}, "strict"),
        (("Idea",), {}, "schema must be a pydantic model class"),
        (({"type": "no-such-type"},), {}, "constraint is not a valid json_schema"),
        ((Idea,), {"gama": 0.3}, "unknown setting.*gama"),
        ((Idea,), {"gamma": 7}, "gamma"),
    ],
)
def test_errors_raise_when_built(
    chat: ChatBaco, args: tuple[Any, ...], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        chat.with_structured_output(*args, **kwargs)


def test_strict_is_accepted_for_json_schema(chat: ChatBaco) -> None:
    for strict in (None, False, True):
        assert isinstance(chat.with_structured_output(Idea, strict=strict).invoke(PROMPT), Idea)


def test_callbacks_see_the_schema(chat: ChatBaco) -> None:
    class Options(BaseCallbackHandler):
        def __init__(self) -> None:
            self.options: list[Any] = []

        def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
            self.options.append(kwargs.get("options"))

    handler = Options()
    chat.with_structured_output(Idea).invoke(PROMPT, config={"callbacks": [handler]})
    (options,) = handler.options
    assert options["ls_structured_output_format"]["kwargs"]["method"] == "json_schema"
    assert options["ls_structured_output_format"]["schema"]["properties"].keys() == {
        "title",
        "kind",
        "risk",
    }


# ------------------------------------------------------------------------ constraint= per call


def test_constraint_per_call_in_chat_model(chat: ChatBaco) -> None:
    reply = chat.invoke([HumanMessage(PROMPT)], constraint=Idea)
    Idea.model_validate_json(reply.content)
    bound = chat.bind(constraint={"choices": ["yes", "no"]})
    assert bound.invoke("Is it good?").content in {"yes", "no"}
    assert chat.invoke("Is it good?", constraint=Constraint(regex="[a-z]{1,8}")).content.isalpha()


def test_constraint_per_call_in_llm(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, max_new_tokens=120, seed=0)
    Idea.model_validate_json(llm.invoke(PROMPT, constraint=Idea))
    Idea.model_validate_json(llm.bind(constraint=Idea).invoke(PROMPT))
    chain = llm.bind(constraint=Idea) | PydanticOutputParser(pydantic_object=Idea)
    assert isinstance(chain.invoke(PROMPT), Idea)
    result = llm.generate([PROMPT, "Another idea."], constraint=Idea, n=2)
    for generations in result.generations:
        assert len(generations) == 2
        for generation in generations:
            assert generation.generation_info["finish_reason"] == "stop"
            Idea.model_validate_json(generation.text)
    # the field, and its validation
    llm.constraint = Idea
    Idea.model_validate_json(llm.invoke(PROMPT))
    with pytest.raises(ValueError, match="constraint"):
        llm.constraint = {"regex": "[", "choices": ["a"]}


def test_cross_family_pair(cross_engine: BacoEngine) -> None:
    """Each model re-tokenizes the other's text; its matcher rolls back to the common prefix."""
    chat = ChatBaco(engine=cross_engine, max_new_tokens=120, seed=0, router="random", gamma=0.5)
    results = chat.with_structured_output(Idea, n=3, include_raw=True).invoke(PROMPT)
    assert all(isinstance(r["parsed"], Idea) for r in results)
    sources = [s for r in results for s in r["raw"].response_metadata["sources"]]
    assert {"base", "aligned"} <= set(sources)  # both models wrote under the grammar
