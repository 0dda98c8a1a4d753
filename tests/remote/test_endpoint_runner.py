"""The remote runner's protocol and faults, with no server: ``httpx.MockTransport`` handlers,
and a llama.cpp-shaped engine over the tiny pair (:mod:`.fake_engine`)."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from baco_integrations import ROUTER_NAMES, BacoEngine, DecodingCancelled
from baco_integrations.runners import RowSettings, RowsFailed
from baco_integrations.runners.remote import Endpoint, EndpointError, EndpointRunner
from baco_integrations.testing import TinyPair

from .fake_engine import FakeEngine

URL = "http://127.0.0.1:9/v1"


class _FakeTokenizer:
    def __len__(self) -> int:
        return 100

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [1, 2, 3]


_OPEN: list[EndpointRunner] = []


@pytest.fixture(autouse=True)
def _close_runners() -> Any:
    yield
    while _OPEN:
        _OPEN.pop().close()
    assert not [t for t in threading.enumerate() if t.name == "baco-endpoint"]


def _runner(handler: Any, **settings: Any) -> EndpointRunner:
    endpoint = Endpoint(url=URL, max_retries=1, **{"top_logprobs": 3, **settings})
    transport = httpx.MockTransport(handler)
    runner = EndpointRunner(endpoint, _FakeTokenizer(), transport=transport)  # type: ignore[arg-type]
    _OPEN.append(runner)
    return runner


def _models(request: httpx.Request) -> httpx.Response | None:
    if request.url.path.endswith("/models"):
        return httpx.Response(200, json={"data": [{"id": "m", "owned_by": "llamacpp"}]})
    if request.url.path == "/tokenize":
        return httpx.Response(404)
    return None


def _draft(*positions: list[int]) -> dict[str, Any]:
    """A llama.cpp reply drafting one token per position: the first id listed is drawn."""
    content = [
        {
            "id": ids[0],
            "logprob": -1.0,
            "top_logprobs": [{"id": i, "logprob": -1.0 - n} for n, i in enumerate(ids)],
        }
        for ids in positions
    ]
    return {"choices": [{"logprobs": {"content": content}}]}


def test_a_draft_serves_the_positions_the_response_follows() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if (known := _models(request)) is not None:
            return known
        bodies.append(__import__("json").loads(request.content))
        return httpx.Response(200, json=_draft([5, 7, 9], [6, 5, 9], [8, 9, 7]))

    runner = _runner(handler, draft_tokens=3)
    settings = [RowSettings(temperature=0.7, top_p=0.9, seed=s) for s in (1, 2)]
    runner.add_rows([[1, 2, 3]], [2], capacity=8, sampling=settings)
    assert not bodies  # rows draft when first needed, each with its own seed
    dist = runner.distributions([0, 1])
    assert dist.logits.shape == (2, 100) and dist.rest_mass is not None
    assert dist.proposals is not None and dist.proposals.tolist() == [5, 5]
    assert len(bodies) == 2 and bodies[0]["seed"] != bodies[1]["seed"]
    assert bodies[0]["temperature"] == 0.7 and bodies[0]["top_p"] == 0.9
    assert bodies[0]["max_tokens"] == 3 and bodies[0]["n_probs"] == 3
    runner.append(0, [5])  # the drawn token: the draft goes on, no request
    assert runner.distributions([0]).proposals.tolist()[0] == 6  # type: ignore[union-attr]
    assert len(bodies) == 2
    runner.append(0, [9])  # another model wrote: row 0 leaves its draft
    runner.distributions([0])
    assert len(bodies) == 3 and bodies[2]["prompt"] == [1, 2, 3, 5, 9]
    runner.rewind(0, 2)  # a re-tokenization that keeps the whole row keeps its draft
    runner.distributions([0])
    assert len(bodies) == 3
    runner.rewind(0, 1)  # one that cuts into what the draft was asked from forgets it
    runner.append(0, [9])
    runner.distributions([0])
    assert len(bodies) == 4


@pytest.mark.parametrize(
    ("handler", "message", "sent"),
    [
        (lambda r: httpx.Response(500, text="boom"), "answered 500: boom", 2),
        (lambda r: httpx.Response(429, text="slow down"), "answered 429: slow down", 2),
        (lambda r: httpx.Response(200, text="{not json"), "malformed JSON", 1),
        (lambda r: httpx.Response(200, json={"choices": []}), "expected shape", 1),
        (lambda r: httpx.Response(200, json=_draft([5, 700, 9])), "outside the local", 1),
        (lambda r: httpx.Response(200, json=_draft([5, 7])), "returned 2 log-probs", 1),
        (lambda r: httpx.Response(400, text="bad prompt"), "answered 400: bad prompt", 1),
    ],
)
def test_faults_name_the_endpoint(handler: Any, message: str, sent: int) -> None:
    calls: list[str] = []

    def counted(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return _models(request) or handler(request)

    runner = _runner(counted)
    runner.add_rows([[1, 2]], [1], capacity=4)
    with pytest.raises(RowsFailed) as caught:
        runner.distributions([0])
    error = caught.value.errors[0]
    assert isinstance(error, EndpointError) and URL in str(error)
    assert message in str(error)
    # Only what cannot change the answer is sent again: transport errors, 408/429/5xx.
    assert calls.count("/v1/completions") == sent


def test_an_endpoint_that_is_down_is_named() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(EndpointError, match=r"http://127.0.0.1:9/v1/models cannot be reached"):
        _runner(down)
    assert not [t for t in threading.enumerate() if t.name == "baco-endpoint"]


def test_a_tokenizer_that_is_not_the_endpoints_is_refused() -> None:
    def other_ids(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/tokenize":
            return httpx.Response(200, json={"tokens": [4, 5]})
        return _models(request) or httpx.Response(500)

    with pytest.raises(EndpointError, match="tokenizes text differently"):
        _runner(other_ids)


def test_bad_endpoint_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="url must start with http"):
        Endpoint(url="127.0.0.1:8080")
    with pytest.raises(ValueError, match="top_logprobs"):
        Endpoint(url="http://127.0.0.1:8080/v1", top_logprobs=50)
    with pytest.raises(ValueError, match="draft_tokens"):
        Endpoint(url="http://127.0.0.1:8080/v1", draft_tokens=0)
    with pytest.raises(ValueError, match="base must be a base URL"):
        BacoEngine.from_endpoints(5, "http://x/v1", base_tokenizer="a", aligned_tokenizer="b")  # type: ignore[arg-type]


# ------------------------------------------------- an engine over two fake llama.cpp engines


@pytest.fixture(scope="module")
def fakes(tiny_pair: TinyPair) -> dict[str, FakeEngine]:
    return {
        side: FakeEngine(
            AutoModelForCausalLM.from_pretrained(directory).eval(),
            AutoTokenizer.from_pretrained(directory),
            name=side,
        )
        for side, directory in (("base", tiny_pair.base_dir), ("aligned", tiny_pair.aligned_dir))
    }


def _remote_engine(fakes: dict[str, FakeEngine], **settings: Any) -> BacoEngine:
    runners = [
        EndpointRunner(
            Endpoint(url=f"http://127.0.0.1:9/{side}/v1", **settings),
            fakes[side].tokenizer,
            transport=fakes[side].transport(),
        )
        for side in ("base", "aligned")
    ]
    return BacoEngine.from_runners(runners[0], runners[1], fakes["base"].tokenizer)


@pytest.fixture(scope="module")
def remote(fakes: dict[str, FakeEngine]) -> Any:
    engine = _remote_engine(fakes)
    yield engine
    engine.shutdown()
    assert not [t for t in threading.enumerate() if t.name == "baco-endpoint"]


@pytest.mark.parametrize("side", ["aligned", "base"])
def test_greedy_single_model_routers_equal_the_in_process_engine(
    remote: BacoEngine, engine: BacoEngine, side: str
) -> None:
    prompts = ["The quick brown fox", "Ideas for a garden:"]
    here = engine.generate(prompts, router=side, temperature=0, max_new_tokens=24)
    there = remote.generate(prompts, router=side, temperature=0, max_new_tokens=24)
    assert [o[0].token_ids for o in there] == [o[0].token_ids for o in here]
    assert all(set(o[0].sources) <= {side} for o in there)


def test_a_writer_drafts_many_tokens_per_round_trip(remote: BacoEngine) -> None:
    (outs,) = remote.generate("Ideas for a garden:", router="aligned", max_new_tokens=32, seed=4)
    stats = remote.last_stats
    tokens = len(outs[0].token_ids)
    assert stats.base_forward_passes == 0
    assert stats.aligned_forward_passes <= -(-tokens // 16) + 1


@pytest.mark.parametrize("router", ROUTER_NAMES)
def test_every_router_runs_with_provenance(remote: BacoEngine, router: str) -> None:
    gamma = 1.5 if router.startswith("H") else 0.4
    (outs,) = remote.generate(
        "Ideas for a garden:", router=router, gamma=gamma, n=2, max_new_tokens=12, seed=3
    )
    for out in outs:
        assert len(out.sources) == len(out.token_ids) and out.text is not None
    again = remote.generate(
        "Ideas for a garden:", router=router, gamma=gamma, n=2, max_new_tokens=12, seed=3
    )[0]
    assert [o.token_ids for o in again] == [o.token_ids for o in outs]  # seeded: reproducible


def test_a_failing_request_leaves_the_others_in_the_batch(fakes: dict[str, FakeEngine]) -> None:
    poison = fakes["base"].tokenizer.encode("zebra", add_special_tokens=False)[0]
    fakes["base"].fail = lambda ids: 500 if poison in ids else None
    engine = _remote_engine(fakes, max_retries=0)
    try:
        results: dict[str, Any] = {}

        def call(name: str, prompt: str) -> None:
            try:
                results[name] = engine.generate(prompt, router="base", max_new_tokens=8, seed=1)
            except Exception as exc:  # noqa: BLE001 - the test reads it
                results[name] = exc

        threads = [
            threading.Thread(target=call, args=("bad", "zebra zebra")),
            threading.Thread(target=call, args=("good", "The quick brown fox")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert isinstance(results["bad"], EndpointError)
        assert "http://127.0.0.1:9/base/v1/completions answered 500" in str(results["bad"])
        assert results["good"][0][0].token_ids
    finally:
        fakes["base"].fail = lambda ids: None
        engine.shutdown()


def test_cancelling_a_call_cancels_its_in_flight_request(fakes: dict[str, FakeEngine]) -> None:
    fakes["aligned"].fail = lambda ids: "hang" if len(ids) > 0 else None
    fakes["aligned"].hanging.clear()
    fakes["aligned"].cancelled.clear()
    engine = _remote_engine(fakes)
    cancel = threading.Event()
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            engine.generate("Ideas", router="aligned", max_new_tokens=8, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            outcome.append(exc)

    thread = threading.Thread(target=call)
    try:
        thread.start()
        assert fakes["aligned"].hanging.wait(60)
        cancel.set()
        assert fakes["aligned"].cancelled.wait(60)  # the HTTP request itself was cancelled
        thread.join(60)
        assert not thread.is_alive() and isinstance(outcome[0], DecodingCancelled)
    finally:
        fakes["aligned"].fail = lambda ids: None
        cancel.set()
        engine.shutdown()
    assert not [t for t in threading.enumerate() if t.name == "baco-endpoint"]


def test_structured_output_over_endpoints_is_refused(remote: BacoEngine) -> None:
    with pytest.raises(ValueError, match="constraint: structured output needs the aligned model"):
        remote.generate("Yes or no?", constraint={"regex": "(yes|no)"}, max_new_tokens=4)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.5])
def test_routers_read_top_k_probabilities_exact_at_t1_and_bounded_otherwise(
    temperature: float,
) -> None:
    import torch

    from baco_integrations.decoding.step import _top_k_probabilities
    from baco_integrations.runners import Distributions

    torch.manual_seed(0)
    raw = torch.log_softmax(torch.randn(3, 1000) * 3, dim=-1)
    top = raw.topk(20, dim=-1)
    dist = Distributions.from_top_k(top.indices, top.values, 1000)
    assert dist.rest_mass is not None
    got = _top_k_probabilities(dist.logits / temperature, dist.rest_mass, temperature)
    truth = torch.softmax(raw / temperature, dim=-1)
    listed = torch.isfinite(dist.logits)
    if temperature == 1.0:
        torch.testing.assert_close(got[listed], truth[listed])
    elif temperature < 1:  # the unlisted mass is over-estimated: listed ones are lower bounds
        assert bool((got[listed] <= truth[listed] + 1e-6).all())
    else:
        assert bool((got[listed] >= truth[listed] - 1e-6).all())
    assert bool((got[~listed] == 0).all())


def test_a_custom_router_is_told_what_a_top_k_endpoint_gives(remote: BacoEngine) -> None:
    import torch

    from baco_integrations import RouterInputs

    seen: list[tuple[float, float]] = []

    def router(inputs: RouterInputs) -> torch.Tensor:
        assert inputs.aligned_rest_mass is not None and inputs.aligned_probs is not None
        total = inputs.aligned_probs.sum(dim=-1) + inputs.aligned_rest_mass
        seen.append((float(total.min()), float(total.max())))
        return torch.zeros_like(inputs.prev_sources, dtype=torch.bool)

    remote.generate("Ideas", router=router, max_new_tokens=4, seed=1)
    assert seen and all(abs(lo - 1) < 1e-4 and abs(hi - 1) < 1e-4 for lo, hi in seen)
