"""Errors as OpenAI clients handle them: a 400 that names the field (never a 500 or 422), 404
for an unknown model, 401 without the key, 413 for a large body, 503 with Retry-After when the
engine's queue is full."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from baco_integrations import BacoEngine, EngineLimits
from baco_integrations.server import ServerConfig
from baco_integrations.server.testing import LiveServer, running_server
from baco_integrations.testing import HANG_GUARD_S, DecodingGate, TinyPair

MODEL = "baco-tiny"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]


def chat(http: httpx.Client, **fields: Any) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": MODEL, "messages": HELLO, **fields})


def error_of(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"gamma": 7}, "gamma", "gamma=7.0 is out of range"),
        ({"router": "no-such"}, "router", "not a known router"),
        ({"temperature": -1}, "temperature", "greater than or equal to 0"),
        ({"top_p": 0}, "top_p", "greater than 0"),
        ({"top_k": "many"}, "top_k", "expected a number"),
        ({"min_p": 2}, "min_p", "less than or equal to 1"),
        ({"seed": -1}, "seed", "seed=-1 is out of range"),
        ({"n": 0}, "n", "greater than or equal to 1"),
        ({"stop": 5}, "stop", "stop must be a string or a list of strings"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"max_completion_tokens": True}, "max_completion_tokens", "expected a number"),
        ({"base_template": "no field"}, "base_template", "has no '{prompt}' field"),
        ({"max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens", "disagree"),
        ({"max_tokens": 65}, "max_tokens", "more than this server allows (64"),
        ({"n": 17}, "n", "more than this server allows (16"),
        ({"frobnicate": 1}, "frobnicate", "unknown field 'frobnicate'"),
        ({"stream_options": {"include_usage": True, "x": 1}}, "stream_options.x", "unknown"),
        ({"stream": "yes"}, "stream", "valid boolean"),
        ({"messages": []}, "messages", "messages is empty"),
        ({"messages": [{"role": "tool", "content": "4"}]}, "messages[0].role", "not supported"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role", "missing"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0]",
            "text parts only",
        ),
        ({"logprobs": "yes"}, "logprobs", "valid boolean"),
        ({"top_logprobs": 2}, "top_logprobs", "needs logprobs=True"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "less than or equal to 20"),
        ({"tools": [{"type": "function"}]}, "tools[0].function", "must be an object"),
        ({"response_format": {"type": "xml"}}, "response_format.type", "not supported"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema.schema",
            "must be a JSON schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 5}}}},
            "response_format",
            "constraint",
        ),
        (
            {"response_format": {"type": "json_object"}, "constraint": {"regex": "a+"}},
            "constraint",
            "give one",
        ),
        ({"presence_penalty": 0.5}, "presence_penalty", "no penalties"),
    ],
)
def test_bad_request_names_the_field(
    http: httpx.Client, fields: dict[str, Any], param: str, says: str
) -> None:
    error = error_of(chat(http, **fields), 400)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert says in error["message"]


def test_off_values_of_unsupported_features_are_accepted(http: httpx.Client) -> None:
    fields = {
        "logprobs": False,
        "tools": [],
        "tool_choice": "none",
        "response_format": {"type": "text"},
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "logit_bias": {},
        "user": "someone",
        "store": False,
        "parallel_tool_calls": True,
    }
    assert chat(http, **fields).status_code == 200


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"prompt": [1, 2, 3]}, "prompt", "token ids is not supported"),
        ({"prompt": 5}, "prompt", "must be a string"),
        ({"prompt": ["a"] * 17}, "prompt", "more than this server allows"),
        ({"prompt": "hi", "echo": True}, "echo", "not supported"),
        ({"prompt": "hi", "logprobs": 21}, "logprobs", "less than or equal to 20"),
        ({"prompt": "hi", "best_of": 3}, "best_of", "not supported"),
        ({"prompt": "hi", "suffix": "end"}, "suffix", "not supported"),
        ({"prompt": "hi", "gamma": -1}, "gamma", "out of range"),
        ({}, "prompt", "missing"),
    ],
)
def test_completion_errors(
    http: httpx.Client, fields: dict[str, Any], param: str, says: str
) -> None:
    answer = http.post("/v1/completions", json={"model": MODEL, **fields})
    error = error_of(answer, 400)
    assert error["param"] == param and says in error["message"]


def test_malformed_bodies_are_400s(http: httpx.Client) -> None:
    answer = http.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert error_of(answer, 400)["code"] == "invalid_json"
    assert error_of(http.post("/v1/chat/completions", json=[1, 2]), 400)["type"] == (
        "invalid_request_error"
    )
    missing = error_of(http.post("/v1/chat/completions", json={"messages": HELLO}), 400)
    assert missing["param"] == "model"


def test_prompt_too_long(engine: BacoEngine, test_config: ServerConfig) -> None:
    config = test_config.updated(max_prompt_tokens=20)
    long = [{"role": "user", "content": "word " * 40}]
    with running_server(engine, config) as server, httpx.Client(base_url=server.url) as http:
        error = error_of(chat(http, messages=long), 400)
        assert error["param"] == "messages" and error["code"] == "context_length_exceeded"
        answer = http.post("/v1/completions", json={"model": MODEL, "prompt": "word " * 40})
        assert error_of(answer, 400)["param"] == "prompt"
        assert chat(http).status_code == 200  # a short prompt is fine
    # Past the models' own window (512 tokens for the tiny pair), whatever the server allows.
    roomy = test_config.updated(max_prompt_tokens=100_000)
    with running_server(engine, roomy) as server, httpx.Client(base_url=server.url) as http:
        huge = [{"role": "user", "content": "word " * 600}]
        error = error_of(chat(http, messages=huge), 400)
        assert error["param"] == "messages" and error["code"] == "context_length_exceeded"
        assert "context window" in error["message"]


def test_unknown_model_and_route(http: httpx.Client) -> None:
    error = error_of(chat(http, model="gpt-4o"), 404)
    assert error["param"] == "model" and error["code"] == "model_not_found"
    assert "baco-tiny" in error["message"]
    assert error_of(http.get("/v1/nothing-here"), 404)["code"] == "not_found"
    assert error_of(http.get("/v1/chat/completions"), 405)["code"] == "method_not_allowed"


def test_openai_client_raises_bad_request(server: LiveServer) -> None:
    with openai.OpenAI(base_url=server.base_url, api_key="k", timeout=HANG_GUARD_S) as client:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model=MODEL, messages=HELLO, extra_body={"gamma": 3.5, "router": "P"}
            )
        assert info.value.status_code == 400
        assert isinstance(info.value.body, dict) and info.value.body["param"] == "gamma"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="other", messages=HELLO)


def test_base_share_and_guard_in_extra_body(server: LiveServer) -> None:
    with openai.OpenAI(base_url=server.base_url, api_key="k", timeout=HANG_GUARD_S) as client:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            n=2,
            max_tokens=24,
            seed=1,
            extra_body={"router": "P", "base_share": 0.4, "guard": 0.1},
        )
        assert len(reply.choices) == 2  # accepted: both settings reached the engine
        for choice in reply.choices:
            assert isinstance((choice.model_extra or {})["baco"]["base_fraction"], float)
        for extra, param in (
            ({"base_share": 0.3, "gamma": 0.5}, "both given"),
            ({"base_share": 1.5}, "base_share"),
            ({"guard": 2}, "guard"),
            ({"base_share": 0.3, "router": "aligned"}, "has none"),
        ):
            with pytest.raises(openai.BadRequestError) as info:
                client.chat.completions.create(model=MODEL, messages=HELLO, extra_body=extra)
            assert param in str(info.value.body), extra


def test_body_size_cap(engine: BacoEngine, test_config: ServerConfig) -> None:
    config = test_config.updated(max_body_bytes=1000)
    with running_server(engine, config) as server, httpx.Client(base_url=server.url) as http:
        big = chat(http, messages=[{"role": "user", "content": "x" * 2000}])
        assert error_of(big, 413)["code"] == "request_too_large"

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"model": "baco-tiny", "messages": [{"role": "user", "content": "'
            yield b"y" * 2000
            yield b'"}]}'

        streamed = http.post("/v1/chat/completions", content=chunked())
        assert error_of(streamed, 413)["code"] == "request_too_large"
        assert chat(http).status_code == 200


def test_api_key(engine: BacoEngine, test_config: ServerConfig, api_key: str) -> None:
    config = test_config.updated(api_key=api_key)
    with running_server(engine, config) as server, httpx.Client(base_url=server.url) as http:
        assert error_of(chat(http), 401)["code"] == "invalid_api_key"
        wrong = http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": HELLO},
            headers={"Authorization": "Bearer nope"},
        )
        assert error_of(wrong, 401)["code"] == "invalid_api_key"
        assert wrong.headers["www-authenticate"] == "Bearer"
        assert http.get("/v1/models").status_code == 401
        assert http.get("/health").status_code == 200  # probes need no key
        with openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0) as client:
            assert client.chat.completions.create(model=MODEL, messages=HELLO).choices
        with (
            openai.OpenAI(base_url=server.base_url, api_key="bad", max_retries=0) as client,
            pytest.raises(openai.AuthenticationError),
        ):
            client.models.list()


@pytest.fixture
def small_engine(tiny_pair: TinyPair) -> Iterator[BacoEngine]:
    """An engine that decodes one row at a time and queues one call."""
    engine = BacoEngine.from_pretrained(
        tiny_pair.base_dir,
        tiny_pair.aligned_dir,
        limits=EngineLimits(max_live_rows=1, max_waiting=1),
    )
    yield engine
    engine.scheduler.shutdown()


def test_full_queue_is_503_with_retry_after(
    small_engine: BacoEngine,
    test_config: ServerConfig,
    gate_calls: Callable[[BacoEngine], DecodingGate],
    wait_for: Callable[[Callable[[], bool], str], None],
) -> None:
    gate = gate_calls(small_engine)
    scheduler = small_engine.scheduler
    chat_body = {"model": MODEL, "messages": HELLO, "max_tokens": 2, "stream": True}
    completion_body = {"model": MODEL, "prompt": "x", "max_tokens": 2, "stream": True}
    with (
        running_server(small_engine, test_config) as server,
        httpx.Client(base_url=server.url, timeout=HANG_GUARD_S) as http,
        http.stream("POST", "/v1/chat/completions", json=chat_body) as first,
    ):
        gate.wait_until_held()  # the first call holds the only live row
        with (
            httpx.Client(base_url=server.url, timeout=HANG_GUARD_S) as other,
            other.stream("POST", "/v1/completions", json=completion_body) as queued,
        ):
            assert queued.status_code == 200
            wait_for(lambda: scheduler.waiting == 1, "the second call to queue")
            for stream in (False, True):
                busy = chat(http, stream=stream)
                error = error_of(busy, 503)
                assert error["code"] == "engine_overloaded"
                assert busy.headers["retry-after"] == str(test_config.retry_after_s)
            with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as c:
                with pytest.raises(openai.InternalServerError) as info:
                    c.chat.completions.create(model=MODEL, messages=HELLO)
                assert info.value.status_code == 503
            gate.go.set()
            assert queued.read() and queued.status_code == 200
        assert first.status_code == 200
        assert [line for line in first.iter_lines() if line][-1] == "data: [DONE]"


def test_each_prompt_is_tokenized_once(http: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server counts a prompt's tokens for its cap; the engine reuses those ids."""
    from baco_integrations import prompts

    rendered: list[str] = []
    aligned_ids = prompts.aligned_ids

    def counting(tokenizer: Any, prompt: Any, *args: Any) -> list[int]:
        rendered.append(str(prompt))
        return aligned_ids(tokenizer, prompt, *args)

    monkeypatch.setattr(prompts, "aligned_ids", counting)
    body = {"model": "baco-tiny", "max_tokens": 2, "seed": 1}
    for content in ("Tokenize me once, please.", "And me, once too."):
        messages = [{"role": "user", "content": content}]
        reply = http.post("/v1/chat/completions", json={**body, "messages": messages})
        assert reply.status_code == 200, reply.text
    assert len(rendered) == 2
