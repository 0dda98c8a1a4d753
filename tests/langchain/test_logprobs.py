"""Token log-probs through the LangChain adapters: ChatOpenAI's ``response_metadata["logprobs"]``
shape on ChatBaco, the same shape in BacoLLM's ``generation_info``, streamed and not."""

from __future__ import annotations

import math
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.outputs import GenerationChunk

from baco_integrations import BacoEngine
from baco_integrations.config import MAX_TOP_LOGPROBS
from baco_integrations.langchain import BacoLLM, ChatBaco
from baco_integrations.outputs import BacoOutput, TokenLogProb
from baco_integrations.testing import openai_logprob_content

PROMPT = "Name a cat"
CONVERSATION = [{"role": "user", "content": PROMPT}]
#: P-PUNC at gamma 0.5 on the tiny pair: both models write, so entries come from both.
SETTINGS: dict[str, Any] = dict(router="P-PUNC", gamma=0.5, max_new_tokens=16, seed=3)

ENTRY_KEYS = {"token", "bytes", "logprob", "top_logprobs"}
TOP_KEYS = {"token", "bytes", "logprob"}


def _bytes(entry: Any) -> list[int]:
    return list(entry.bytes) if entry.bytes else list(entry.token.encode("utf-8"))


def expected_content(entries: tuple[TokenLogProb, ...] | None) -> list[dict[str, Any]]:
    """The engine's entries as OpenAI's chat ``logprobs.content``, written out apart."""
    return openai_logprob_content(entries)


def check_shape(logprobs: Any, top: int) -> None:
    """ChatOpenAI's shape: exactly its keys and types, alternatives most likely first."""
    assert set(logprobs) == {"content"}
    assert logprobs["content"]
    for entry in logprobs["content"]:
        assert set(entry) == ENTRY_KEYS
        assert isinstance(entry["token"], str) and isinstance(entry["logprob"], float)
        assert entry["logprob"] <= 0.0
        assert all(isinstance(b, int) and 0 <= b < 256 for b in entry["bytes"])
        assert len(entry["top_logprobs"]) == top
        for alternative in entry["top_logprobs"]:
            assert set(alternative) == TOP_KEYS
        values = [alternative["logprob"] for alternative in entry["top_logprobs"]]
        assert values == sorted(values, reverse=True)
    # OpenAI's own model of the shape accepts it, where the SDK is installed
    chat_completion = pytest.importorskip("openai.types.chat.chat_completion")
    chat_completion.ChoiceLogprobs.model_validate(logprobs)


def spelled(logprobs: dict[str, Any]) -> str:
    joined = b"".join(bytes(entry["bytes"]) for entry in logprobs["content"])
    return joined.decode("utf-8", errors="replace")


def check_means(metadata: dict[str, Any], output: BacoOutput) -> None:
    for key in ("aligned_mean_logprob", "base_mean_logprob"):
        value = metadata[key]
        assert isinstance(value, float) and math.isfinite(value) and value < 0.0
        assert value == getattr(output, key)


def summed(chunks: list[Any]) -> Any:
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


@pytest.fixture
def chat(engine: BacoEngine) -> ChatBaco:
    return ChatBaco(engine=engine, **SETTINGS)


def engine_output(engine: BacoEngine, prompt: Any, **settings: Any) -> BacoOutput:
    ((output,),) = engine.generate([prompt], **{**SETTINGS, **settings})
    return output


# ------------------------------------------------------------------------ ChatBaco


def test_chat_reports_the_engines_entries_in_chatopenai_shape(
    chat: ChatBaco, engine: BacoEngine
) -> None:
    reply = chat.invoke(PROMPT, logprobs=True, top_logprobs=3)
    output = engine_output(engine, CONVERSATION, logprobs=True, top_logprobs=3)
    meta = reply.response_metadata
    assert reply.content == output.text
    assert meta["logprobs"]["content"] == expected_content(output.logprobs)
    check_shape(meta["logprobs"], top=3)
    assert spelled(meta["logprobs"]) == reply.content
    # both models wrote: the entries are the writers' own tokens
    assert {e.source for e in output.logprobs or ()} == {"base", "aligned"}
    check_means(meta, output)


def test_fields_and_bound_settings_give_the_same(chat: ChatBaco, engine: BacoEngine) -> None:
    per_call = chat.invoke(PROMPT, logprobs=True, top_logprobs=2).response_metadata
    fields = ChatBaco(engine=engine, logprobs=True, top_logprobs=2, **SETTINGS)
    assert fields.invoke(PROMPT).response_metadata["logprobs"] == per_call["logprobs"]
    bound = chat.bind(logprobs=True, top_logprobs=2).invoke(PROMPT).response_metadata
    assert bound["logprobs"] == per_call["logprobs"]
    # a call can turn the field's alternatives off again
    plain = fields.invoke(PROMPT, top_logprobs=0).response_metadata["logprobs"]
    assert [e["top_logprobs"] for e in plain["content"]] == [[]] * len(plain["content"])
    assert [e["logprob"] for e in plain["content"]] == [
        e["logprob"] for e in per_call["logprobs"]["content"]
    ]


def test_stream_chunks_add_up_to_the_invoke(chat: ChatBaco) -> None:
    reply = chat.invoke(PROMPT, logprobs=True, top_logprobs=2)
    chunks = list(chat.stream(PROMPT, logprobs=True, top_logprobs=2))
    assert len(chunks) > 1
    assert all(isinstance(c, AIMessageChunk) and "logprobs" in c.response_metadata for c in chunks)
    # each chunk holds its own tokens' entries: none is repeated by the last chunk
    counts = [len(c.response_metadata["logprobs"]["content"]) for c in chunks]
    assert sum(counts) == len(reply.response_metadata["logprobs"]["content"])
    full = summed(chunks)
    assert full.content == reply.content
    assert full.response_metadata["logprobs"] == reply.response_metadata["logprobs"]
    for key in ("aligned_mean_logprob", "base_mean_logprob"):
        assert full.response_metadata[key] == reply.response_metadata[key]
        assert all(key not in c.response_metadata for c in chunks[:-1])


async def test_async_and_streaming_invoke_match(chat: ChatBaco) -> None:
    reply = chat.invoke(PROMPT, logprobs=True, top_logprobs=2)
    again = await chat.ainvoke(PROMPT, logprobs=True, top_logprobs=2)
    assert again.response_metadata["logprobs"] == reply.response_metadata["logprobs"]
    chunks = [c async for c in chat.astream(PROMPT, logprobs=True, top_logprobs=2)]
    assert summed(chunks).response_metadata["logprobs"] == reply.response_metadata["logprobs"]
    # streaming=True: invoke adds the chunks up itself
    streaming = chat.model_copy(update={"streaming": True})
    streamed = streaming.invoke(PROMPT, logprobs=True, top_logprobs=2)
    assert streamed.response_metadata["logprobs"] == reply.response_metadata["logprobs"]
    assert (
        streamed.response_metadata["base_mean_logprob"]
        == (reply.response_metadata["base_mean_logprob"])
    )


def test_n_samples_each_carry_their_own(chat: ChatBaco, engine: BacoEngine) -> None:
    result = chat.generate([[HumanMessage(PROMPT)]], n=2, logprobs=True, top_logprobs=1)
    outputs = engine.generate(
        [CONVERSATION], **{**SETTINGS, "n": 2, "logprobs": True, "top_logprobs": 1}
    )[0]
    for generation, output in zip(result.generations[0], outputs, strict=True):
        meta = generation.message.response_metadata
        assert meta["logprobs"]["content"] == expected_content(output.logprobs)
        check_means(meta, output)


def test_cross_family_entries_are_the_writers_tokens(cross_engine: BacoEngine) -> None:
    chat = ChatBaco(engine=cross_engine, **SETTINGS)
    reply = chat.invoke(PROMPT, logprobs=True, top_logprobs=2)
    output = engine_output(cross_engine, CONVERSATION, logprobs=True, top_logprobs=2)
    meta = reply.response_metadata
    assert meta["logprobs"]["content"] == expected_content(output.logprobs)
    assert spelled(meta["logprobs"]) == reply.content
    full = summed(list(chat.stream(PROMPT, logprobs=True, top_logprobs=2)))
    assert full.response_metadata["logprobs"] == meta["logprobs"]


def test_off_by_default(chat: ChatBaco) -> None:
    meta = chat.invoke(PROMPT).response_metadata
    assert not {"logprobs", "aligned_mean_logprob", "base_mean_logprob"} & set(meta)
    chunks = list(chat.stream(PROMPT))
    assert all("logprobs" not in c.response_metadata for c in chunks)
    assert "aligned_mean_logprob" not in summed(chunks).response_metadata


def test_cache_keys_tell_logprobs_apart(engine: BacoEngine) -> None:
    chat = ChatBaco(engine=engine, cache=InMemoryCache(), **SETTINGS)
    assert "logprobs" not in chat.invoke(PROMPT).response_metadata
    assert "logprobs" in chat.invoke(PROMPT, logprobs=True).response_metadata
    top = chat.invoke(PROMPT, logprobs=True, top_logprobs=2).response_metadata["logprobs"]
    assert len(top["content"][0]["top_logprobs"]) == 2


# ------------------------------------------------------------------------ BacoLLM


class ChunkRecorder(BaseCallbackHandler):
    """The chunks a stream reports to the callbacks."""

    def __init__(self) -> None:
        self.chunks: list[GenerationChunk] = []

    def on_llm_new_token(self, token: str, *, chunk: Any = None, **kwargs: Any) -> None:
        self.chunks.append(chunk)


def test_llm_generation_info_and_stream(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, **SETTINGS)
    result = llm.generate([PROMPT, "Ideas for a party"], n=2, logprobs=True, top_logprobs=3)
    outputs = engine.generate(
        [PROMPT, "Ideas for a party"],
        **{**SETTINGS, "n": 2, "logprobs": True, "top_logprobs": 3},
    )
    for gens, samples in zip(result.generations, outputs, strict=True):
        for generation, output in zip(gens, samples, strict=True):
            info = generation.generation_info
            assert info["logprobs"]["content"] == expected_content(output.logprobs)
            check_shape(info["logprobs"], top=3)
            check_means(info, output)
    # a stream's chunks add up to the generation_info of the same call unstreamed
    recorder = ChunkRecorder()
    list(llm.stream(PROMPT, config={"callbacks": [recorder]}, logprobs=True, top_logprobs=3))
    reference = llm.generate([PROMPT], logprobs=True, top_logprobs=3).generations[0][0]
    assert len(recorder.chunks) > 1
    assert summed(recorder.chunks).generation_info == reference.generation_info
    # off by default
    plain = llm.generate([PROMPT]).generations[0][0].generation_info
    assert not {"logprobs", "aligned_mean_logprob", "base_mean_logprob"} & set(plain)


# ------------------------------------------------------------------------ bad settings

BAD = [
    ({"logprobs": True, "top_logprobs": MAX_TOP_LOGPROBS + 5}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ({"top_logprobs": 3}, "top_logprobs=3 needs logprobs=True"),
    ({"logprobs": "sometimes"}, "logprobs"),
]


@pytest.mark.parametrize("cls", [ChatBaco, BacoLLM])
@pytest.mark.parametrize(("bad", "match"), BAD)
def test_bad_settings_are_refused(
    engine: BacoEngine, cls: type[ChatBaco | BacoLLM], bad: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        cls(engine=engine, **bad)
    model = cls(engine=engine, max_new_tokens=2)
    with pytest.raises(ValueError, match=match):
        model.invoke(PROMPT, **bad)
    with pytest.raises(ValueError, match=match):
        list(model.stream(PROMPT, **bad))
    with pytest.raises(ValueError, match=match):
        model.batch([PROMPT], **bad)


def test_bad_assignment_is_refused(engine: BacoEngine) -> None:
    chat = ChatBaco(engine=engine, logprobs=True, top_logprobs=2)
    with pytest.raises(ValueError, match="top_logprobs"):
        chat.top_logprobs = MAX_TOP_LOGPROBS + 1
    with pytest.raises(ValueError, match="needs logprobs=True"):
        chat.logprobs = False
    assert (chat.logprobs, chat.top_logprobs) == (True, 2)
