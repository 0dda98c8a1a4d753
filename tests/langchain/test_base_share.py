"""``base_share`` and ``guard`` through the LangChain and LlamaIndex adapters: model fields
and per-call settings, the same samples as the engine gives, and clear refusals."""

from __future__ import annotations

import pytest

from baco_integrations import BacoEngine
from baco_integrations.langchain import BacoLLM, ChatBaco
from baco_integrations.llama_index import BacoLLM as LlamaIndexBaco

PROMPT = "Ideas for a coffee shop"


def test_chat_model_field_and_per_call_override(engine: BacoEngine) -> None:
    chat = ChatBaco(engine=engine, router="P", base_share=0.3, guard=0.1, max_new_tokens=24)
    reply = chat.invoke(PROMPT, seed=2)
    ((expected,),) = engine.generate(
        [{"role": "user", "content": PROMPT}],  # what the chat model sends: one conversation
        router="P",
        base_share=0.3,
        guard=0.1,
        max_new_tokens=24,
        seed=2,
    )
    assert reply.content == expected.text
    assert reply.response_metadata["base_fraction"] == expected.base_fraction
    other = chat.invoke(PROMPT, seed=2, base_share=0.6)  # the per-call value wins
    ((expected,),) = engine.generate(
        [{"role": "user", "content": PROMPT}],
        router="P",
        base_share=0.6,
        guard=0.1,
        max_new_tokens=24,
        seed=2,
    )
    assert other.response_metadata["base_fraction"] == expected.base_fraction
    assert other.content == expected.text


def test_completion_llm_takes_base_share(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, router="random", base_share=0.5, max_new_tokens=16)
    result = llm.generate([PROMPT], seed=1)
    ((expected,),) = engine.generate(
        PROMPT, router="random", base_share=0.5, max_new_tokens=16, seed=1
    )
    generation = result.generations[0][0]
    assert generation.text == expected.text
    assert generation.generation_info["base_fraction"] == expected.base_fraction


@pytest.mark.parametrize(
    ("fields", "call", "message"),
    [
        ({"base_share": 0.3}, {"gamma": 0.4}, "both given"),
        ({}, {"base_share": 2.0}, "base_share"),
        ({"router": "PUNC"}, {"base_share": 0.3}, "has none"),
        ({}, {"guard": -1}, "guard"),
    ],
)
def test_bad_values_are_refused(engine: BacoEngine, fields: dict, call: dict, message: str) -> None:
    chat = ChatBaco(engine=engine, max_new_tokens=4, **fields)
    with pytest.raises(ValueError, match=message):
        chat.invoke(PROMPT, **call)
    with pytest.raises(ValueError, match="base_share"):
        ChatBaco(engine=engine, base_share=-0.5)


def test_llama_index_takes_base_share_and_guard(engine: BacoEngine) -> None:
    llm = LlamaIndexBaco(engine=engine, router="P-PUNC", base_share=0.4, max_new_tokens=16)
    response = llm.complete(PROMPT, seed=3, guard=0.2)
    ((expected,),) = engine.generate(
        PROMPT, router="P-PUNC", base_share=0.4, guard=0.2, max_new_tokens=16, seed=3
    )
    assert response.text == expected.text
    with pytest.raises(ValueError, match="both given"):
        llm.complete(PROMPT, gamma=0.2)
