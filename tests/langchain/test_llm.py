"""BacoLLM: LCEL chains, per-call overrides, stop strings, callbacks, metadata, caching."""

from __future__ import annotations

from statistics import mean
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import LLMResult
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import ConfigurableField
from pydantic import ValidationError

from baco_integrations import BacoEngine, GenerationSettings, RouterConfig
from baco_integrations.config import SETTING_NAMES
from baco_integrations.langchain import BacoLLM, ChatBaco
from baco_integrations.outputs import Usage

PROMPT = PromptTemplate.from_template("Brainstorm names for a {thing}.")
TOPICS = [{"thing": "coffee shop"}, {"thing": "pet rabbit"}, {"thing": "rainy day"}]


class Recorder(BaseCallbackHandler):
    """Records streamed tokens and finished results."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.results: list[LLMResult] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        self.results.append(response)


class StartRecorder(BaseCallbackHandler):
    """Records what LangChain reports when a run starts (what tracers see)."""

    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], **kwargs: Any) -> None:
        self.starts.append(kwargs)

    def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, **kwargs: Any) -> None:
        self.starts.append(kwargs)


class AsyncRecorder(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


@pytest.fixture
def llm(engine: BacoEngine) -> BacoLLM:
    return BacoLLM(engine=engine, router="P-PUNC", gamma=0.3, max_new_tokens=12, seed=0)


def chain_of(llm: BacoLLM):
    return PROMPT | llm | StrOutputParser()


# ------------------------------------------------------------------------ LCEL chain


def test_chain_invoke_batch_stream_agree(llm: BacoLLM) -> None:
    chain = chain_of(llm)
    text = chain.invoke(TOPICS[0])
    assert isinstance(text, str) and text
    # Same seed and settings: streaming decodes exactly what invoke decoded.
    assert "".join(chain.stream(TOPICS[0])) == text
    batch = chain.batch(TOPICS)
    assert len(batch) == len(TOPICS) and all(isinstance(t, str) for t in batch)


async def test_chain_ainvoke_and_astream(llm: BacoLLM) -> None:
    chain = chain_of(llm)
    text = await chain.ainvoke(TOPICS[1])
    assert text == chain.invoke(TOPICS[1])
    pieces = [piece async for piece in chain.astream(TOPICS[1])]
    assert len(pieces) > 1
    assert "".join(pieces) == text
    assert await chain.abatch(TOPICS) == chain.batch(TOPICS)


def test_batch_is_one_engine_call(
    llm: BacoLLM, engine: BacoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    real_generate = engine.generate

    def spy(prompts: Any, **kwargs: Any) -> Any:
        calls.append(prompts)
        return real_generate(prompts, **kwargs)

    monkeypatch.setattr(engine, "generate", spy)
    out = chain_of(llm).batch(TOPICS)
    assert len(calls) == 1 and len(calls[0]) == len(TOPICS)
    assert len(out) == len(TOPICS)


# ------------------------------------------------------------------------ settings


def test_fields_are_the_generation_settings(llm: BacoLLM) -> None:
    assert set(SETTING_NAMES) <= set(BacoLLM.model_fields)
    assert isinstance(llm.generation_settings, GenerationSettings)
    assert llm.generation_settings.gamma == 0.3
    # the engine's validators run on the adapter's fields: canonical router names ...
    assert BacoLLM(engine=llm.engine, router="p-punc").router == "P-PUNC"
    # ... and range checks
    with pytest.raises(ValidationError, match="gamma"):
        BacoLLM(engine=llm.engine, router="P", gamma=1.5)
    with pytest.raises(ValidationError, match="top_p"):
        BacoLLM(engine=llm.engine, top_p=0)


def test_unknown_settings_are_errors(llm: BacoLLM) -> None:
    with pytest.raises(ValidationError, match="gama"):
        BacoLLM(engine=llm.engine, gama=0.3)
    with pytest.raises(ValueError, match="gama"):
        llm.invoke("hi", gama=0.3)
    with pytest.raises(ValueError, match="gama"):
        list(llm.stream("hi", gama=0.3))
    with pytest.raises(ValueError, match="gama"):
        llm.batch(["hi", "yo"], gama=0.3)
    with pytest.raises(ValueError, match="out of range"):
        llm.invoke("hi", gamma=7.0)


async def test_unknown_settings_are_errors_async(llm: BacoLLM) -> None:
    with pytest.raises(ValueError, match="gama"):
        await llm.ainvoke("hi", gama=0.3)
    with pytest.raises(ValueError, match="gama"):
        [c async for c in llm.astream("hi", gama=0.3)]


def test_per_call_gamma_changes_routing(engine: BacoEngine) -> None:
    """Router P sends a word to the base model when the gate's top-1 probability < gamma."""
    llm = BacoLLM(engine=engine, router="P", gamma=0.05, n=4, max_new_tokens=12, seed=0)
    prompts = [PROMPT.format(**t) for t in TOPICS]

    def base_fraction(**overrides: Any) -> float:
        result = llm.generate(prompts, **overrides)
        return mean(g.generation_info["base_fraction"] for gens in result.generations for g in gens)

    low, high = base_fraction(), base_fraction(gamma=0.9)
    assert high > low
    assert llm.gamma == 0.05  # an override changes the call, not the instance

    # the same through invoke (the kwargs path of LCEL)
    recorder = Recorder()
    llm.invoke(prompts[0], config={"callbacks": [recorder]}, gamma=0.0, n=1)
    llm.invoke(prompts[0], config={"callbacks": [recorder]}, gamma=1.0, n=1)
    fractions = [r.generations[0][0].generation_info["base_fraction"] for r in recorder.results]
    assert fractions[0] == 0.0 and fractions[1] == 1.0

    # and through a bound runnable
    bound = llm.bind(gamma=1.0, n=1)
    assert bound.invoke(prompts[0]) == llm.invoke(prompts[0], gamma=1.0, n=1)


@pytest.mark.parametrize("adapter", [BacoLLM, ChatBaco])
def test_assignment_is_validated_and_leaves_no_bad_state(engine: BacoEngine, adapter: type) -> None:
    llm = adapter(engine=engine, router="P", gamma=0.3, max_new_tokens=4, seed=0)
    with pytest.raises(ValueError, match="gamma"):
        llm.gamma = 7  # out of range for router P: refused now, not at the next call
    assert llm.gamma == 0.3
    llm.router = "h"  # validated values are stored as validated: canonical name
    assert llm.router == "H"
    llm.gamma = 7  # an entropy threshold may be 7
    with pytest.raises(ValueError, match="gamma"):
        llm.router = "P"  # ... but not a probability
    assert (llm.router, llm.gamma) == ("H", 7)
    with pytest.raises(ValueError, match="top_p"):
        llm.top_p = 0
    llm.stop = "zzz"
    assert llm.stop == ["zzz"]
    assert llm.invoke("Hi") is not None  # the instance still works
    llm.streaming = True  # a LangChain field, not a setting: assigned as LangChain does
    assert llm.streaming


def test_router_config_and_max_tokens_alias(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, router=RouterConfig(strategy="H", gamma=0.5), max_tokens=5)
    assert llm.max_new_tokens == 5
    result = llm.generate(["Hello"], max_tokens=3, seed=1)
    assert result.generations[0][0].generation_info["num_tokens"] <= 3
    with pytest.raises(ValidationError, match="alias"):
        BacoLLM(engine=engine, max_tokens=5, max_new_tokens=6)


# ------------------------------------------------------------------------ outputs


def test_n_samples_and_generation_info(llm: BacoLLM) -> None:
    result = llm.generate(["Name a cat", "Ideas for a party"], n=3, seed=5)
    assert [len(gens) for gens in result.generations] == [3, 3]
    for gens in result.generations:
        assert [g.generation_info["sample_index"] for g in gens] == [0, 1, 2]
        for g in gens:
            info = g.generation_info
            assert len(info["sources"]) == len(info["token_ids"]) == info["num_tokens"]
            assert (
                llm.engine.aligned_tokenizer.decode(info["token_ids"], skip_special_tokens=True)
                == g.text
            )
            assert set(info["sources"]) <= {"base", "aligned"}
            expected = info["sources"].count("base") / len(info["sources"])
            assert info["base_fraction"] == pytest.approx(expected)
            assert info["finish_reason"] in {"stop", "length"}
    usage = result.llm_output["token_usage"]
    completion = sum(g.generation_info["num_tokens"] for gens in result.generations for g in gens)
    assert usage["completion_tokens"] == completion
    # a prompt is counted once, whatever n: its samples share one prefill
    prompt_tokens = sum(gens[0].generation_info["prompt_tokens"] for gens in result.generations)
    assert usage["prompt_tokens"] == prompt_tokens > 0
    assert usage["total_tokens"] == prompt_tokens + completion
    settings = llm.settings_for_call({"n": 3, "seed": 5})
    outputs = llm.engine.generate(["Name a cat", "Ideas for a party"], settings=settings)
    assert usage == Usage.of(o for samples in outputs for o in samples).as_dict()
    assert result.llm_output["models"] == llm.engine.model_names
    # invoke returns the first sample
    alone = llm.generate(["Name a cat"], n=3, seed=5).generations[0][0].text
    assert llm.invoke("Name a cat", n=3, seed=5) == alone


def test_streamed_generation_info(llm: BacoLLM) -> None:
    recorder = Recorder()
    text = "".join(llm.stream("Name a cat", config={"callbacks": [recorder]}))
    (result,) = recorder.results
    (generation,) = result.generations[0]
    assert generation.text == text
    reference = llm.generate(["Name a cat"])
    # The stream's last chunk carries the finished sample: nothing is added up by hand.
    assert generation.generation_info == reference.generations[0][0].generation_info
    streaming = llm.model_copy(update={"streaming": True})
    assert streaming.generate(["Name a cat"]).llm_output == reference.llm_output


def test_streaming_n_above_one_is_refused(llm: BacoLLM) -> None:
    with pytest.raises(ValueError, match="n=2"):
        list(llm.stream("hi", n=2))


def test_identifying_params_carry_every_setting(llm: BacoLLM) -> None:
    params = llm._identifying_params
    assert set(SETTING_NAMES) <= set(params)
    assert params["gamma"] == 0.3 and params["router"] == "P-PUNC"
    assert params["base_model"] == llm.engine.model_names["base"]
    assert params["aligned_model"] == llm.engine.model_names["aligned"]
    ls = llm._get_ls_params(stop=["\n"])
    assert ls["ls_provider"] == "baco" and ls["ls_model_type"] == "llm"
    assert ls["ls_max_tokens"] == 12 and ls["ls_stop"] == ["\n"]


def test_cache_keys_on_per_call_settings(
    engine: BacoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = BacoLLM(engine=engine, router="P", gamma=0.0, max_new_tokens=8, cache=InMemoryCache())
    calls = 0
    real_generate = engine.generate

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(engine, "generate", counting)
    recorder = Recorder()
    config = {"callbacks": [recorder]}
    first = llm.invoke("Name a cat", config=config)
    assert llm.invoke("Name a cat") == first and calls == 1  # cached
    llm.invoke("Name a cat", config=config, gamma=1.0)  # another setting: not the cached entry
    assert calls == 2
    fractions = [r.generations[0][0].generation_info["base_fraction"] for r in recorder.results]
    assert fractions == [0.0, 1.0]
    llm.invoke("Name a cat", gamma=1.0)
    assert calls == 2  # cached under its own key
    llm.invoke("Name a cat", stop=["zzz"])
    assert calls == 3


def test_get_num_tokens_uses_the_real_tokenizer(llm: BacoLLM, engine: BacoEngine) -> None:
    text = "Brainstorm three names for a coffee shop"
    expected = len(engine.aligned_tokenizer(text, add_special_tokens=False)["input_ids"])
    assert llm.get_num_tokens(text) == expected
    assert llm.get_token_ids(text) == engine.aligned_tokenizer.encode(
        text, add_special_tokens=False
    )


# ------------------------------------------------------------------------ stop strings


@pytest.mark.parametrize("adapter", [BacoLLM, ChatBaco])
def test_bad_stop_is_refused_before_langchain_reads_it(engine: BacoEngine, adapter: type) -> None:
    llm = adapter(engine=engine, max_new_tokens=4)
    recorder = StartRecorder()
    config = {"callbacks": [recorder]}
    calls = {
        "invoke": lambda stop: llm.invoke("hi", config=config, stop=stop),
        "stream": lambda stop: list(llm.stream("hi", config=config, stop=stop)),
        "batch": lambda stop: llm.batch(["hi", "yo"], config=config, stop=stop),
    }
    for name, call in calls.items():
        for bad in (5, ["x", 3]):
            with pytest.raises(ValueError, match="stop must be a string or a list of strings"):
                call(bad)
            assert recorder.starts == [], (name, bad)  # no run was started, nothing traced


@pytest.mark.parametrize("adapter", [BacoLLM, ChatBaco])
async def test_bad_stop_is_refused_async(engine: BacoEngine, adapter: type) -> None:
    llm = adapter(engine=engine, max_new_tokens=4)
    with pytest.raises(ValueError, match="stop must be"):
        await llm.ainvoke("hi", stop=5)
    with pytest.raises(ValueError, match="stop must be"):
        [c async for c in llm.astream("hi", stop=5)]
    with pytest.raises(ValueError, match="stop must be"):
        await llm.abatch(["hi"], stop=5)


@pytest.mark.parametrize("adapter", [BacoLLM, ChatBaco])
@pytest.mark.parametrize("entry", ["invoke", "stream", "batch"])
def test_a_string_stop_is_one_stop_string_in_traces(
    engine: BacoEngine, adapter: type, entry: str
) -> None:
    llm = adapter(engine=engine, max_new_tokens=4)
    recorder = StartRecorder()
    config = {"callbacks": [recorder]}
    if entry == "invoke":
        llm.invoke("hi", config=config, stop="abc")
    elif entry == "stream":
        list(llm.stream("hi", config=config, stop="abc"))
    else:
        llm.batch(["hi"], config=config, stop="abc")
    (start,) = recorder.starts
    assert start["invocation_params"]["stop"] == ["abc"]
    assert start["options"]["stop"] == ["abc"]
    assert start["metadata"]["ls_stop"] == ["abc"]


def _stop_window(text: str, engine: BacoEngine) -> tuple[str, int]:
    """A multi-token substring of ``text`` whose first occurrence is at index k > 0."""
    for k in range(2, len(text) - 6):
        stop = text[k : k + 6]
        if "\ufffd" in stop or text.find(stop) != k or engine.count_tokens(stop) < 2:
            continue
        return stop, k
    raise AssertionError(f"no usable stop window in {text!r}")


def test_multi_token_stop_strings(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, temperature=0, max_new_tokens=24, seed=0)
    prompt = "Brainstorm names for a coffee shop."
    full = llm.invoke(prompt)
    stop, k = _stop_window(full, engine)
    assert llm.invoke(prompt, stop=[stop]) == full[:k]
    assert "".join(llm.stream(prompt, stop=[stop])) == full[:k]
    # the stop field, and a call's stop replacing it
    with_field = BacoLLM(engine=engine, temperature=0, max_new_tokens=24, stop=[stop])
    assert with_field.invoke(prompt) == full[:k]
    assert with_field.invoke(prompt, stop=["\x00never"]) == full
    result = llm.generate([prompt], stop=[stop])
    assert result.generations[0][0].generation_info["finish_reason"] == "stop"


async def test_multi_token_stop_strings_async(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, temperature=0, max_new_tokens=24)
    prompt = "Brainstorm names for a coffee shop."
    full = await llm.ainvoke(prompt)
    stop, k = _stop_window(full, engine)
    assert await llm.ainvoke(prompt, stop=[stop]) == full[:k]
    assert "".join([c async for c in llm.astream(prompt, stop=[stop])]) == full[:k]


# ------------------------------------------------------------------------ callbacks


def test_callbacks_see_every_streamed_token(llm: BacoLLM) -> None:
    recorder = Recorder()
    pieces = list(llm.stream("Name a cat", config={"callbacks": [recorder]}))
    assert recorder.tokens == pieces
    assert "".join(recorder.tokens) == llm.invoke("Name a cat")


async def test_async_callbacks_see_every_streamed_token(llm: BacoLLM) -> None:
    recorder = AsyncRecorder()
    pieces = [p async for p in llm.astream("Name a cat", config={"callbacks": [recorder]})]
    assert recorder.tokens == pieces and len(pieces) > 1


async def test_streaming_flag_streams_invoke_through_callbacks(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, max_new_tokens=12, seed=3, streaming=True)
    recorder = Recorder()
    text = llm.invoke("Name a cat", config={"callbacks": [recorder]})
    assert len(recorder.tokens) > 1 and "".join(recorder.tokens) == text
    result = recorder.results[0]
    assert result.llm_output["token_usage"]["completion_tokens"] > 0
    arecorder = AsyncRecorder()
    assert await llm.ainvoke("Name a cat", config={"callbacks": [arecorder]}) == text
    assert "".join(arecorder.tokens) == text
    # a batch still goes to the engine in one call, without streaming
    assert len(llm.batch(["a", "b"])) == 2


def test_from_model_ids(tiny_pair) -> None:
    with pytest.raises(ValueError, match="gama"):
        BacoLLM.from_model_ids(tiny_pair.base_dir, tiny_pair.aligned_dir, gama=0.3)
    llm = BacoLLM.from_model_ids(
        base=tiny_pair.base_dir,
        aligned=tiny_pair.aligned_dir,
        device="cpu",
        dtype="float32",
        router="P",
        gamma=0.4,
        max_new_tokens=4,
    )
    assert llm.router == "P" and llm.gamma == 0.4
    assert isinstance(llm.invoke("Hi"), str)


def test_configurable_fields(engine: BacoEngine) -> None:
    """LangChain's runtime configuration reaches the settings (e.g. for a gamma sweep)."""
    llm = BacoLLM(engine=engine, router="P", gamma=0.0, max_new_tokens=8, seed=0)
    sweepable = llm.configurable_fields(gamma=ConfigurableField(id="gamma"))
    recorder = Recorder()
    for gamma in (0.0, 1.0):
        sweepable.invoke("hi", config={"configurable": {"gamma": gamma}, "callbacks": [recorder]})
    fractions = [r.generations[0][0].generation_info["base_fraction"] for r in recorder.results]
    assert fractions == [0.0, 1.0]


def test_a_cross_family_pair_works_through_the_adapter(cross_engine: BacoEngine) -> None:
    """Models whose tokenizers differ: ids, sources, stops and streaming as for one family."""
    llm = BacoLLM(engine=cross_engine, router="P-PUNC", gamma=0.5, max_new_tokens=16, seed=4)
    assert not llm.engine.shares_tokenizer
    (generation,) = llm.generate(["Ideas for a party"]).generations[0]
    info = generation.generation_info
    assert len(info["token_ids"]) == len(info["sources"]) == info["num_tokens"]
    decoded = llm.engine.aligned_tokenizer.decode(
        info["token_ids"], skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    assert decoded == generation.text
    assert "".join(llm.stream("Ideas for a party")) == generation.text
    assert len(generation.text) > 4, generation.text
    stop = generation.text[2:4]  # a stop string cuts the text before it
    cut = llm.invoke("Ideas for a party", stop=[stop])
    assert cut == generation.text[: generation.text.index(stop)]
