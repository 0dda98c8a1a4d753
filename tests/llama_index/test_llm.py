"""BacoLLM's synchronous surface: settings, metadata, complete/chat and their streams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from llama_index.core.base.llms.types import ImageBlock
from llama_index.core.llms import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CustomLLM,
    MessageRole,
)
from llama_index.core.prompts import PromptTemplate
from pydantic import ValidationError

from baco_integrations import (
    BacoEngine,
    BacoOutput,
    GenerationSettings,
    RouterConfig,
    RouterInputs,
)
from baco_integrations._adapter import display_name
from baco_integrations.config import SETTING_NAMES
from baco_integrations.llama_index import BacoLLM, to_conversation
from baco_integrations.outputs import Usage
from baco_integrations.testing import TinyPair

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def check_response(response: CompletionResponse | ChatResponse, n: int = 1) -> None:
    """The metadata every finished response carries, consistent with itself."""
    info = response.additional_kwargs
    sources = info["sources"]
    assert set(sources) <= {"base", "aligned"}
    assert info["base_fraction"] == pytest.approx(
        sources.count("base") / len(sources) if sources else 0.0
    )
    assert info["finish_reason"] in {"stop", "length"}
    assert len(info["samples"]) == n
    assert info["samples"][0]["sources"] == sources
    assert info["completion_tokens"] == sum(s["num_tokens"] for s in info["samples"])
    assert info["prompt_tokens"] > 0
    assert info["total_tokens"] == info["prompt_tokens"] + info["completion_tokens"]
    # LlamaIndex's token counter reads raw["usage"].
    assert response.raw["usage"] == {k: info[k] for k in USAGE_KEYS}


# ----------------------------------------------------------------- construction and settings


def test_is_a_custom_llm_with_every_setting_as_a_field(llm: BacoLLM) -> None:
    assert isinstance(llm, CustomLLM)
    assert set(GenerationSettings.model_fields) <= set(BacoLLM.model_fields)
    # One field, one meaning: LlamaIndex's system_prompt is the engine's (its definition wins).
    field = BacoLLM.model_fields["system_prompt"]
    assert field.description == GenerationSettings.model_fields["system_prompt"].description
    assert llm.generation_settings == GenerationSettings(max_new_tokens=8, seed=0)


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"gamma": 2.0}, "gamma"),  # out of range for the default P-PUNC router
        ({"router": "nope"}, "router"),
        ({"temperature": -1.0}, "temperature"),
        ({"base_template": "no placeholder"}, "base_template"),
        ({"max_new_token": 5}, "max_new_token"),  # a typo is an error, not ignored
    ],
)
def test_bad_fields_fail_at_construction(engine: BacoEngine, fields: dict, name: str) -> None:
    with pytest.raises(ValidationError, match=name):
        BacoLLM(engine=engine, **fields)


def test_assignment_is_validated(llm: BacoLLM) -> None:
    llm.gamma = 0.7
    assert llm.generation_settings.gamma == 0.7
    with pytest.raises(ValidationError, match="temperature"):
        llm.temperature = -1.0
    assert llm.temperature == 1.0  # a failed assignment leaves nothing behind
    llm.router = "h"
    llm.gamma = 7  # an entropy threshold may be 7 ...
    with pytest.raises(ValueError, match="gamma"):
        llm.router = "P"  # ... a probability may not: the settings are checked together
    assert (llm.router, llm.gamma) == ("H", 7)
    assert llm.complete("Hi").text is not None


def test_max_tokens_is_the_alias_of_max_new_tokens(engine: BacoEngine, engine_calls) -> None:
    """As in LangChain: construction and per call; disagreeing with max_new_tokens raises."""
    llm = BacoLLM(engine=engine, max_tokens=5, seed=0)
    assert llm.max_new_tokens == 5 and llm.metadata.num_output == 5
    response = llm.complete("Hi", max_tokens=3)
    assert engine_calls.last[1].max_new_tokens == 3
    assert response.additional_kwargs["completion_tokens"] <= 3
    llm.chat([ChatMessage(role="user", content="Hi")], max_tokens=2)
    assert engine_calls.last[1].max_new_tokens == 2
    with pytest.raises(ValueError, match="alias"):
        llm.complete("Hi", max_tokens=3, max_new_tokens=4)
    with pytest.raises(ValidationError, match="alias"):
        BacoLLM(engine=engine, max_tokens=3, max_new_tokens=4)


def test_from_model_ids_checks_fields_before_loading(tiny_pair: TinyPair) -> None:
    with pytest.raises(ValueError, match="colour"):
        BacoLLM.from_model_ids("/nonexistent/base", "/nonexistent/aligned", colour="red")
    with pytest.raises(ValidationError, match="gamma"):
        BacoLLM.from_model_ids("/nonexistent/base", "/nonexistent/aligned", gamma=3.0)
    llm = BacoLLM.from_model_ids(
        tiny_pair.base_dir, tiny_pair.aligned_dir, router="P", gamma=0.4, max_tokens=4
    )
    assert (llm.router, llm.gamma, llm.max_new_tokens) == ("P", 0.4, 4)
    assert llm.complete("Hi").additional_kwargs["completion_tokens"] <= 4


def test_metadata_reports_the_pair(llm: BacoLLM, engine: BacoEngine) -> None:
    metadata = llm.metadata
    assert metadata.context_window == engine.context_window == 512
    assert metadata.num_output == llm.max_new_tokens == 8
    assert metadata.is_chat_model is True  # the aligned tokenizer has a chat template
    assert metadata.is_function_calling_model is True  # chat_with_tools, FunctionAgent
    names = engine.model_names
    assert metadata.model_name == f"baco:{names['base']}+{names['aligned']}"
    assert llm.model_names == names
    payload = llm.to_payload()
    assert payload["router"] == "P-PUNC" and payload["seed"] == 0
    assert payload["base_model"] == names["base"] and "engine" not in payload
    assert "engine" not in llm.to_dict()
    assert llm.class_name() == "BacoLLM" == llm.to_dict()["class_name"]


def test_without_chat_template_it_is_not_a_chat_model(
    llm: BacoLLM, engine: BacoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine.aligned_tokenizer, "chat_template", None)
    assert llm.metadata.is_chat_model is False


def test_a_callable_router_is_kept_and_described(engine: BacoEngine) -> None:
    def always_base(inputs: RouterInputs) -> torch.Tensor:
        return inputs.prev_sources >= -10  # True everywhere: the base model writes

    llm = BacoLLM(engine=engine, router=RouterConfig(strategy=always_base), max_new_tokens=6)
    response = llm.complete("Hi", seed=1)
    assert set(response.additional_kwargs["sources"]) <= {"base"}
    assert "always_base" in llm.to_payload()["router"]


# ----------------------------------------------------------------- complete


def test_complete_is_the_engine_sample(llm: BacoLLM, engine: BacoEngine) -> None:
    response = llm.complete("Brainstorm names for a cat.")
    check_response(response)
    (expected,) = engine.generate("Brainstorm names for a cat.", max_new_tokens=8, seed=0)[0]
    assert response.text == expected.text
    assert response.additional_kwargs["sources"] == list(expected.sources)
    assert response.raw["outputs"] == [expected]


def test_per_call_overrides(llm: BacoLLM, engine_calls) -> None:
    response = llm.complete("Ideas", n=3, max_new_tokens=4, router="p", gamma=0.9, top_k=5)
    check_response(response, n=3)
    assert all(s["num_tokens"] <= 4 for s in response.additional_kwargs["samples"])
    _, settings = engine_calls.last
    assert (settings.n, settings.router, settings.gamma, settings.top_k) == (3, "P", 0.9, 5)
    # Overrides apply to that call only.
    assert (llm.n, llm.max_new_tokens, llm.router, llm.gamma) == (1, 8, "P-PUNC", None)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"temprature": 0.5}, "temprature"), ({"callback_manager": None}, "callback_manager")],
)
def test_unknown_per_call_settings_raise(llm: BacoLLM, kwargs: dict, name: str) -> None:
    for call in (llm.complete, llm.stream_complete):
        with pytest.raises(ValueError, match=name):
            call("Hi", **kwargs)
    with pytest.raises(ValueError, match=name):
        llm.chat([ChatMessage(role="user", content="Hi")], **kwargs)


def test_bad_per_call_values_raise(llm: BacoLLM) -> None:
    with pytest.raises(ValueError, match="gamma"):
        llm.complete("Hi", router="P", gamma=1.5)
    with pytest.raises(ValueError, match="top_p"):
        llm.stream_chat([ChatMessage(role="user", content="Hi")], top_p=0.0)


def test_stop_string_from_a_greedy_run(llm: BacoLLM) -> None:
    greedy = llm.complete("Once upon a time", temperature=0, max_new_tokens=12).text
    # A character that first appears after the start: the output is cut right before it.
    stop = next(
        (c for i, c in enumerate(greedy) if i and c.isalnum() and greedy.index(c) == i), None
    )
    if stop is None:
        pytest.skip("the greedy run has no usable stop character")
    response = llm.complete("Once upon a time", temperature=0, max_new_tokens=12, stop=[stop])
    assert response.text == greedy[: greedy.index(stop)]
    assert response.additional_kwargs["finish_reason"] == "stop"


def test_complete_prompt_formatting(engine: BacoEngine, engine_calls) -> None:
    llm = BacoLLM(
        engine=engine,
        max_new_tokens=2,
        system_prompt="Be brief.",
        completion_to_prompt=lambda p: f"Q: {p}",
    )
    llm.complete("hello")
    prompt, settings = engine_calls.last
    assert (prompt, settings.system_prompt) == ("Q: hello", "Be brief.")
    # formatted=True: LlamaIndex already formatted it, system prompt included (_extend_prompt).
    llm.complete("hello", formatted=True)
    prompt, settings = engine_calls.last
    assert (prompt, settings.system_prompt) == ("hello", None)
    llm.complete("hello", formatted=True, system_prompt="Explicit.")
    assert engine_calls.last[1].system_prompt == "Explicit."


# ----------------------------------------------------------------- chat


def test_chat_passes_the_conversation(llm: BacoLLM, engine_calls) -> None:
    messages = [
        ChatMessage(role="user", content="Name a colour."),
        ChatMessage(role="assistant", content="Blue."),
        ChatMessage(role="user", content="Another one?"),
    ]
    response = llm.chat(messages)
    assert isinstance(response, ChatResponse)
    assert response.message.role == MessageRole.ASSISTANT
    assert response.message.content == response.raw["outputs"][0].text
    check_response(response)
    prompt, _ = engine_calls.last
    assert prompt == [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
    ]


def test_chat_renders_chat_template_and_transcript(engine: BacoEngine) -> None:
    """What the two models read: the engine's renderings of the conversation chat() passes."""
    conversation = to_conversation(
        [
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Hi"),
            ChatMessage(role="assistant", content="Hello!"),
            ChatMessage(role="user", content="Ideas?"),
        ]
    )
    encoded = engine.encode_prompts(conversation)
    aligned = engine.aligned_tokenizer.decode(encoded["aligned"])
    base = engine.base_tokenizer.decode(encoded["base"])
    assert aligned == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nIdeas?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert base == "User: Hi\n\nAssistant: Hello!\n\nUser: Ideas?\n\nAssistant:"


def test_system_prompt_is_applied_once(engine: BacoEngine, engine_calls) -> None:
    llm = BacoLLM(engine=engine, max_new_tokens=2, system_prompt="Be brief.")
    llm.chat([ChatMessage(role="user", content="Hi")])
    conversation, settings = engine_calls.last
    assert settings.system_prompt == "Be brief."  # the engine adds it for the aligned model
    aligned = engine.encode_prompts(conversation, settings.system_prompt)["aligned"]
    assert engine.aligned_tokenizer.decode(aligned).count("Be brief.") == 1

    # predict() (what query engines call) puts it in front of the template's messages itself.
    llm.predict(PromptTemplate("Tell me about {topic}."), topic="cats")
    conversation, settings = engine_calls.last
    assert conversation == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me about cats."},
    ]
    aligned = engine.encode_prompts(conversation, settings.system_prompt)["aligned"]
    assert engine.aligned_tokenizer.decode(aligned).count("Be brief.") == 1


def test_to_conversation_merges_roles_and_rejects_what_it_cannot_read() -> None:
    conversation = to_conversation(
        [
            ChatMessage(role="system", content="A."),
            ChatMessage(role="developer", content="B."),
            ChatMessage(role="user", content="Hi"),
        ]
    )
    assert conversation == [
        {"role": "system", "content": "A.\n\nB."},
        {"role": "user", "content": "Hi"},
    ]
    with pytest.raises(ValueError, match="'function' messages"):
        to_conversation([ChatMessage(role="function", content="42")])
    with pytest.raises(ValueError, match="ImageBlock"):
        to_conversation([ChatMessage(role="user", blocks=[ImageBlock(url="http://x/y.png")])])
    with pytest.raises(ValueError, match="at least one"):
        to_conversation([])


# ----------------------------------------------------------------- streams


def test_stream_complete_gives_deltas_and_running_text(llm: BacoLLM) -> None:
    responses = list(llm.stream_complete("Write a poem."))
    assert responses
    text = ""
    for response in responses:
        text += response.delta
        assert response.text == text
        sources = response.additional_kwargs["sources"]
        assert response.additional_kwargs["base_fraction"] == pytest.approx(
            sources.count("base") / len(sources) if sources else 0.0
        )
    last = responses[-1].additional_kwargs
    assert all("finish_reason" not in r.additional_kwargs for r in responses[:-1])
    assert last["finish_reason"] in {"stop", "length"}
    assert last["completion_tokens"] == len(last["sources"])
    assert responses[-1].raw["usage"] == {k: last[k] for k in USAGE_KEYS}
    # The same sample as complete() with the same seed; the last response carries it whole.
    complete = llm.complete("Write a poem.")
    assert text == complete.text
    assert responses[-1].raw["outputs"] == complete.raw["outputs"]
    assert last["sources"] == complete.additional_kwargs["sources"]
    assert responses[-1].raw["usage"] == complete.raw["usage"]


def test_stream_chat(llm: BacoLLM) -> None:
    messages = [ChatMessage(role="user", content="Hi")]
    responses = list(llm.stream_chat(messages))
    assert all(r.message.role == MessageRole.ASSISTANT for r in responses)
    assert "".join(r.delta for r in responses) == responses[-1].message.content
    assert responses[-1].message.content == llm.chat(messages).message.content
    assert responses[-1].additional_kwargs["finish_reason"] in {"stop", "length"}


def test_streams_validate_at_the_call(llm: BacoLLM, watch: Any) -> None:
    with pytest.raises(ValueError, match="n=2"):
        llm.stream_complete("Hi", n=2)
    with pytest.raises(ValueError, match="too long"):
        llm.stream_chat([ChatMessage(role="user", content="word " * 600)])
    watch.wait_idle()
    assert watch.steps == 0  # refused before any decoding


def test_closing_a_stream_early_stops_decoding(
    long_llm: BacoLLM, engine_calls: Any, watch: Any, make_gate: Callable[..., Any]
) -> None:
    """Closed while decoding is held at a known step (a DecodingGate router, conftest.py),
    the stream leaves the engine's batch at the end of that step, however fast the machine."""
    gate = make_gate(hold_from_step=1)
    stream = long_llm.stream_complete("Tell me a story.", router=gate)
    first = next(stream)
    assert first.delta
    gate.wait_until_held()
    stream.close()
    assert engine_calls.closed_streams == 1  # closed at once, not when garbage-collected
    gate.go.set()
    watch.wait_idle()
    assert gate.went and watch.steps == gate.held_at + 1


def test_a_cross_family_pair_works_through_the_adapter(cross_engine: BacoEngine) -> None:
    """Models whose tokenizers differ: complete, its stream and chat behave as for one family."""
    llm = BacoLLM(engine=cross_engine, router="P-PUNC", gamma=0.5, max_new_tokens=16, seed=4)
    assert not llm.engine.shares_tokenizer
    response = llm.complete("Ideas for a party")
    check_response(response)
    streamed = list(llm.stream_complete("Ideas for a party"))
    assert streamed[-1].text == response.text
    assert "".join(r.delta or "" for r in streamed) == response.text
    reply = llm.chat([ChatMessage(role=MessageRole.USER, content="Ideas for a party")])
    assert reply.message.content == response.text  # the same prompt through the chat template


# ----------------------------------------------------------------- facts shared with LangChain


def test_both_adapters_state_the_core_facts_alike(engine: BacoEngine) -> None:
    """Name, usage, settings in traces, turn merging and the streaming check are defined once
    (in the core) and read the same through LlamaIndex and LangChain."""
    from langchain_core.messages import HumanMessage, SystemMessage

    from baco_integrations.langchain import BacoLLM as LangChainLLM
    from baco_integrations.langchain import ChatBaco
    from baco_integrations.langchain.chat_models import to_conversation as langchain_conversation

    settings = {"max_new_tokens": 6, "seed": 0, "n": 2, "router": "P", "gamma": 0.4}
    llama = BacoLLM(engine=engine, **settings)
    chain = LangChainLLM(engine=engine, **settings)
    assert llama.model_name == chain.model_name == ChatBaco(engine=engine).model_name
    assert llama.model_name == display_name(engine.model_names)

    completion, generation = llama.complete("Hi"), chain.generate(["Hi"])
    assert completion.raw["usage"] == generation.llm_output["token_usage"]
    assert completion.raw["usage"] == Usage.of(completion.raw["outputs"]).as_dict()

    payload, params = llama.to_payload(), chain._identifying_params
    assert {k: payload[k] for k in SETTING_NAMES} == {k: params[k] for k in SETTING_NAMES}

    with pytest.raises(ValueError) as from_llama:
        llama.stream_complete("Hi")
    with pytest.raises(ValueError) as from_chain:
        list(chain.stream("Hi"))
    assert str(from_llama.value) == str(from_chain.value)

    merged = to_conversation(
        [
            ChatMessage(role="system", content="A."),
            ChatMessage(role="developer", content="B."),
            ChatMessage(role="user", content="Hi"),
        ]
    )
    assert merged == langchain_conversation(
        [SystemMessage("A."), SystemMessage("B."), HumanMessage("Hi")]
    )


def test_usage_counts_each_prompt_once_and_refuses_mixed_calls() -> None:
    def output(prompt_index: int, prompt_tokens: int, tokens: int) -> BacoOutput:
        return BacoOutput(
            text="x" * tokens,
            token_ids=(1,) * tokens,
            sources=("base",) * tokens,
            finish_reason="length",
            prompt_index=prompt_index,
            prompt_tokens=prompt_tokens,
        )

    one_call = [output(0, 5, 2), output(0, 5, 3), output(1, 7, 4)]  # n=2 and n=1
    usage = Usage.of(one_call)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 9, 21)
    assert usage + Usage.of([output(0, 3, 1)]) == Usage(prompt_tokens=15, completion_tokens=10)
    assert Usage.from_dict(usage.as_dict()) == usage
    with pytest.raises(ValueError, match="different engine calls"):
        Usage.of([output(0, 5, 2), output(0, 3, 1)])  # prompt 0 of two calls
