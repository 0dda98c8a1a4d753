"""BACO over two llama-server endpoints serving the offline pair (Gemma-3-270m base,
SmolLM2-135M-Instruct), and the remote runner's faults."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from transformers import AutoTokenizer

from baco_integrations import ROUTER_NAMES, BacoEngine
from baco_integrations.offline import OfflinePair
from baco_integrations.runners.remote import Endpoint, EndpointError, EndpointRunner

from .conftest import RunningServer

PROMPT = "Brainstorm names for a coffee shop."


@pytest.fixture(scope="module")
def tokenizers(remote_pair: OfflinePair) -> dict[str, Any]:
    return {
        "base": AutoTokenizer.from_pretrained(
            remote_pair.base_dir, gguf_file=remote_pair.base_gguf_file
        ),
        "aligned": AutoTokenizer.from_pretrained(
            remote_pair.aligned_dir, gguf_file=remote_pair.aligned_gguf_file
        ),
    }


@pytest.fixture(scope="module")
def remote_engine(
    llama_servers: dict[str, RunningServer], tokenizers: dict[str, Any]
) -> BacoEngine:
    return BacoEngine.from_endpoints(
        llama_servers["base"].url,
        llama_servers["aligned"].url,
        base_tokenizer=tokenizers["base"],
        aligned_tokenizer=tokenizers["aligned"],
    )


@pytest.mark.parametrize("side", ["aligned", "base"])
def test_single_model_router_equals_the_endpoints_own_greedy_output(
    remote_engine: BacoEngine, llama_servers: dict[str, RunningServer], side: str
) -> None:
    ids = remote_engine.encode_prompts(PROMPT)[side]
    reply = httpx.post(
        f"{llama_servers[side].url}/completions",
        json={"prompt": ids, "max_tokens": 16, "temperature": 0.0},
        timeout=120,
    ).json()
    (out,) = remote_engine.generate(PROMPT, router=side, temperature=0, max_new_tokens=16)[0]
    expected = reply["choices"][0]["text"]
    assert set(out.sources) <= {side}
    # The engine counts the limit in reported (aligned-tokenizer) ids, which may spell the
    # base model's words with more ids: its text is the endpoint's, cut there.
    if side == "aligned" or out.finish_reason == "stop":
        assert out.text == expected
    else:
        assert expected.startswith(out.text) and out.text


@pytest.mark.parametrize("router", ROUTER_NAMES)
def test_every_router_runs_with_provenance(remote_engine: BacoEngine, router: str) -> None:
    gamma = 1.5 if router.startswith("H") else 0.4
    (outs,) = remote_engine.generate(
        PROMPT, router=router, gamma=gamma, n=2, max_new_tokens=12, seed=3
    )
    for out in outs:
        assert out.text and len(out.sources) == len(out.token_ids)
    if router not in ("aligned", "base", "PUNC", "FC"):
        assert any(0 < o.base_fraction < 1 for o in outs) or router == "nudging"


# ---------------------------------------------------------------- faults (no server needed)


def _runner(handler: Any, **settings: Any) -> EndpointRunner:
    tokenizer = _FakeTokenizer()
    endpoint = Endpoint(url="http://127.0.0.1:9/v1", max_retries=1, **settings)
    return EndpointRunner(endpoint, tokenizer, transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


class _FakeTokenizer:
    def __len__(self) -> int:
        return 100


def _models(request: httpx.Request) -> httpx.Response | None:
    if request.url.path.endswith("/models"):
        return httpx.Response(200, json={"data": [{"id": "m", "owned_by": "llamacpp"}]})
    return None


def _top(ids: list[int]) -> dict[str, Any]:
    entries = [{"id": i, "token": str(i), "logprob": -1.0 - n} for n, i in enumerate(ids)]
    return {"choices": [{"logprobs": {"content": [{"top_logprobs": entries}]}}]}


def test_a_working_endpoint_gives_its_top_k() -> None:
    runner = _runner(lambda r: _models(r) or httpx.Response(200, json=_top([5, 7, 9])))
    runner.add_rows([[1, 2, 3]], [2], capacity=4)
    dist = runner.distributions([0, 1])
    assert dist.logits.shape == (2, 100)
    assert dist.logits[0].argmax() == 5 and dist.rest_mass is not None
    assert runner.counters().forward_passes == 1  # one call for the prompt's two samples


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (lambda r: httpx.Response(500, text="boom"), "answered 500: boom"),
        (lambda r: httpx.Response(200, text="{not json"), "malformed JSON"),
        (lambda r: httpx.Response(200, json={"choices": []}), "no next-token log-probs"),
        (lambda r: httpx.Response(200, json=_top([5, 700])), "outside the local tokenizer"),
        (lambda r: httpx.Response(400, text="bad prompt"), "answered 400: bad prompt"),
    ],
)
def test_faults_name_the_endpoint(handler: Any, message: str) -> None:
    calls: list[str] = []

    def counted(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return _models(request) or handler(request)

    runner = _runner(counted)
    with pytest.raises(EndpointError, match=message) as caught:
        runner.add_rows([[1, 2]], [1], capacity=4)
    assert "http://127.0.0.1:9/v1" in str(caught.value)
    assert runner.rows == 0  # a failed call adds no row
    sent = calls.count("/v1/completions")
    assert sent == (2 if "500" in message else 1)  # only a 5xx is sent again


def test_an_endpoint_that_is_down_is_named() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(EndpointError, match=r"http://127.0.0.1:9/v1/models cannot be reached"):
        _runner(down)


def test_bad_endpoint_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="url must start with http"):
        Endpoint(url="127.0.0.1:8080")
    with pytest.raises(ValueError, match="top_logprobs"):
        Endpoint(url="http://127.0.0.1:8080/v1", top_logprobs=50)
    with pytest.raises(ValueError, match="base must be a base URL"):
        BacoEngine.from_endpoints(5, "http://x/v1", base_tokenizer="a", aligned_tokenizer="b")  # type: ignore[arg-type]
