"""Token log-probs through the LlamaIndex adapter: ``CompletionResponse.logprobs`` and
``ChatResponse.logprobs`` as ``List[List[LogProb]]`` (filled as LlamaIndex's OpenAI LLM fills
them), the OpenAI chat shape in ``additional_kwargs``, streamed and not."""

from __future__ import annotations

import math
from typing import Any

import pytest
from llama_index.core.base.llms.types import LogProb
from llama_index.core.llms import ChatMessage, CompletionResponse

from baco_integrations import BacoEngine
from baco_integrations.config import MAX_TOP_LOGPROBS
from baco_integrations.llama_index import BacoLLM
from baco_integrations.outputs import BacoOutput, TokenLogProb
from baco_integrations.testing import openai_logprob_content

PROMPT = "Write a poem."
CONVERSATION = [{"role": "user", "content": "Hi"}]
#: P-PUNC at gamma 0.5 on the tiny pair: both models write, so entries come from both.
SETTINGS: dict[str, Any] = dict(router="P-PUNC", gamma=0.5, max_new_tokens=16, seed=3)


def _bytes(entry: Any) -> list[int]:
    return list(entry.bytes) if entry.bytes else list(entry.token.encode("utf-8"))


def expected_logprobs(entries: tuple[TokenLogProb, ...] | None, top: int) -> list[list[LogProb]]:
    """One list per token: its ``top`` alternatives, or the drawn token alone when top is 0."""
    assert entries is not None
    return [
        [
            LogProb(token=t.token, logprob=t.logprob, bytes=_bytes(t))
            for t in (e.top_logprobs if top else (e,))
        ]
        for e in entries
    ]


def expected_content(entries: tuple[TokenLogProb, ...] | None) -> list[dict[str, Any]]:
    """The engine's entries as OpenAI's chat ``logprobs.content``, written out apart."""
    return openai_logprob_content(entries)


def check_means(info: dict[str, Any], output: BacoOutput) -> None:
    for key in ("aligned_mean_logprob", "base_mean_logprob"):
        value = info[key]
        assert isinstance(value, float) and math.isfinite(value) and value < 0.0
        assert value == getattr(output, key)


@pytest.fixture
def llm(engine: BacoEngine) -> BacoLLM:
    return BacoLLM(engine=engine, **SETTINGS)


def engine_outputs(engine: BacoEngine, prompt: Any, **settings: Any) -> list[BacoOutput]:
    return engine.generate([prompt], **{**SETTINGS, **settings})[0]


# ------------------------------------------------------------------------ responses


def test_complete_reports_the_engines_entries(llm: BacoLLM, engine: BacoEngine) -> None:
    response = llm.complete(PROMPT, logprobs=True, top_logprobs=3)
    (output,) = engine_outputs(engine, PROMPT, logprobs=True, top_logprobs=3)
    assert response.text == output.text
    assert response.logprobs == expected_logprobs(output.logprobs, top=3)
    assert len(response.logprobs) == len(output.logprobs or ())
    for alternatives in response.logprobs:
        values = [a.logprob for a in alternatives]
        assert len(values) == 3 and values == sorted(values, reverse=True)
    info = response.additional_kwargs
    assert info["logprobs"] == {"content": expected_content(output.logprobs)}
    check_means(info, output)
    # both models wrote: the entries are the writers' own tokens
    assert {e.source for e in output.logprobs or ()} == {"base", "aligned"}


def test_without_alternatives_each_token_lists_itself(llm: BacoLLM, engine: BacoEngine) -> None:
    response = llm.complete(PROMPT, logprobs=True)
    (output,) = engine_outputs(engine, PROMPT, logprobs=True)
    assert response.logprobs == expected_logprobs(output.logprobs, top=0)
    assert all(len(token) == 1 for token in response.logprobs)
    spelled = b"".join(bytes(token[0].bytes) for token in response.logprobs)
    assert spelled.decode("utf-8", errors="replace") == response.text


def test_fields_and_samples(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, logprobs=True, top_logprobs=2, **SETTINGS)
    response = llm.complete(PROMPT, n=2)
    outputs = engine_outputs(engine, PROMPT, n=2, logprobs=True, top_logprobs=2)
    assert response.logprobs == expected_logprobs(outputs[0].logprobs, top=2)
    for sample, output in zip(response.additional_kwargs["samples"], outputs, strict=True):
        assert sample["logprobs"] == {"content": expected_content(output.logprobs)}
        check_means(sample, output)


def test_chat_reports_them_too(llm: BacoLLM, engine: BacoEngine) -> None:
    messages = [ChatMessage(role="user", content="Hi")]
    reply = llm.chat(messages, logprobs=True, top_logprobs=2)
    (output,) = engine_outputs(engine, CONVERSATION, logprobs=True, top_logprobs=2)
    assert reply.message.content == output.text
    assert reply.logprobs == expected_logprobs(output.logprobs, top=2)
    check_means(reply.additional_kwargs, output)


def test_stream_complete_holds_every_token_so_far(llm: BacoLLM) -> None:
    complete = llm.complete(PROMPT, logprobs=True, top_logprobs=2)
    responses = list(llm.stream_complete(PROMPT, logprobs=True, top_logprobs=2))
    assert len(responses) > 1
    final = complete.logprobs
    assert final is not None
    for response in responses:
        # running, as the text is: a prefix of the whole answer's
        assert response.logprobs is not None
        assert response.logprobs == final[: len(response.logprobs)]
        content = response.additional_kwargs["logprobs"]["content"]
        assert content == complete.additional_kwargs["logprobs"]["content"][: len(content)]
    assert responses[-1].logprobs == final
    assert responses[-1].additional_kwargs["logprobs"] == complete.additional_kwargs["logprobs"]
    for key in ("aligned_mean_logprob", "base_mean_logprob"):
        assert responses[-1].additional_kwargs[key] == complete.additional_kwargs[key]
        assert all(key not in r.additional_kwargs for r in responses[:-1])


async def test_async_and_chat_streams_match(llm: BacoLLM) -> None:
    messages = [ChatMessage(role="user", content="Hi")]
    reply = llm.chat(messages, logprobs=True, top_logprobs=2)
    assert (await llm.achat(messages, logprobs=True, top_logprobs=2)).logprobs == reply.logprobs
    streamed = list(llm.stream_chat(messages, logprobs=True, top_logprobs=2))
    assert streamed[-1].logprobs == reply.logprobs
    gen = await llm.astream_chat(messages, logprobs=True, top_logprobs=2)
    responses = [r async for r in gen]
    assert responses[-1].logprobs == reply.logprobs
    assert responses[-1].additional_kwargs["logprobs"] == reply.additional_kwargs["logprobs"]
    complete = await llm.acomplete(PROMPT, logprobs=True)
    gen = await llm.astream_complete(PROMPT, logprobs=True)
    assert [r async for r in gen][-1].logprobs == complete.logprobs


def test_off_by_default(llm: BacoLLM) -> None:
    response = llm.complete(PROMPT)
    assert response.logprobs is None
    keys = {"logprobs", "aligned_mean_logprob", "base_mean_logprob"}
    assert not keys & set(response.additional_kwargs)
    assert not keys & set(response.additional_kwargs["samples"][0])
    assert llm.chat([ChatMessage(role="user", content="Hi")]).logprobs is None
    responses: list[CompletionResponse] = list(llm.stream_complete(PROMPT))
    assert all(r.logprobs is None and "logprobs" not in r.additional_kwargs for r in responses)


# ------------------------------------------------------------------------ bad settings

BAD = [
    ({"logprobs": True, "top_logprobs": MAX_TOP_LOGPROBS + 5}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ({"top_logprobs": 3}, "top_logprobs=3 needs logprobs=True"),
    ({"logprobs": "sometimes"}, "logprobs"),
]


@pytest.mark.parametrize(("bad", "match"), BAD)
async def test_bad_settings_are_refused(
    engine: BacoEngine, bad: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        BacoLLM(engine=engine, **bad)
    llm = BacoLLM(engine=engine, max_new_tokens=2)
    messages = [ChatMessage(role="user", content="Hi")]
    with pytest.raises(ValueError, match=match):
        llm.complete(PROMPT, **bad)
    with pytest.raises(ValueError, match=match):
        llm.stream_complete(PROMPT, **bad)  # at the call, before iteration
    with pytest.raises(ValueError, match=match):
        llm.chat(messages, **bad)
    with pytest.raises(ValueError, match=match):
        llm.stream_chat(messages, **bad)
    with pytest.raises(ValueError, match=match):
        await llm.acomplete(PROMPT, **bad)
    with pytest.raises(ValueError, match=match):
        await llm.astream_chat(messages, **bad)


def test_bad_assignment_is_refused(engine: BacoEngine) -> None:
    llm = BacoLLM(engine=engine, logprobs=True, top_logprobs=2)
    with pytest.raises(ValueError, match="top_logprobs"):
        llm.top_logprobs = MAX_TOP_LOGPROBS + 1
    with pytest.raises(ValueError, match="needs logprobs=True"):
        llm.logprobs = False
    assert (llm.logprobs, llm.top_logprobs) == (True, 2)
