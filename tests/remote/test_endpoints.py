"""BACO over two real engines (llama-server on the offline pair's GGUF files by default:
Gemma-3-270m base, SmolLM2-135M-Instruct; see conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from baco_integrations import ROUTER_NAMES, BacoEngine
from baco_integrations.runners.remote import Endpoint, EndpointError, EndpointRunner

from .conftest import ServedPair

PROMPT = "Brainstorm names for a coffee shop."


@pytest.fixture(scope="module")
def remote_engine(served_pair: ServedPair) -> Iterator[BacoEngine]:
    engine = BacoEngine.from_endpoints(
        served_pair.urls["base"],
        served_pair.urls["aligned"],
        base_tokenizer=served_pair.tokenizers["base"],
        aligned_tokenizer=served_pair.tokenizers["aligned"],
    )
    yield engine
    engine.shutdown()


@pytest.mark.parametrize("side", ["aligned", "base"])
def test_single_model_router_equals_the_endpoints_own_greedy_output(
    remote_engine: BacoEngine, served_pair: ServedPair, side: str
) -> None:
    ids = remote_engine.encode_prompts(PROMPT)[side]
    reply = httpx.post(
        f"{served_pair.urls[side]}/completions",
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


@pytest.fixture(scope="module")
def local_engine(served_pair: ServedPair) -> Iterator[BacoEngine]:
    """The same pair in this process (from the same GGUF files, or hub ids)."""
    engine = served_pair.load_local()
    yield engine
    engine.shutdown()


def test_the_base_share_tracks_the_in_process_engines(
    remote_engine: BacoEngine, local_engine: BacoEngine
) -> None:
    prompts = [PROMPT, "List ideas for a rainy weekend."]
    settings = {"router": "P-PUNC", "gamma": 0.3, "n": 6, "max_new_tokens": 24, "seed": 5}
    shares = {}
    for name, engine in (("remote", remote_engine), ("local", local_engine)):
        outs = [o for per_prompt in engine.generate(prompts, **settings) for o in per_prompt]
        shares[name] = sum(o.base_fraction for o in outs) / len(outs)
    # The routers read the aligned model's top-20 (renormalised) over HTTP and its whole
    # distribution here; the samples differ, the share they settle on must not drift far.
    assert 0 < shares["remote"] < 1
    print(f"base share over endpoints {shares['remote']:.3f}, in process {shares['local']:.3f}")
    assert abs(shares["remote"] - shares["local"]) < 0.15, shares


def test_baco_serve_in_front_of_two_engines_answers_the_openai_client(
    served_pair: ServedPair,
) -> None:
    openai = pytest.importorskip("openai")
    from baco_integrations.cli import build_parser
    from baco_integrations.server.run import config_from_args, engine_from_args
    from baco_integrations.server.testing import running_server

    args = build_parser().parse_args(
        ["serve", "--base-url", served_pair.urls["base"],
         "--aligned-url", served_pair.urls["aligned"],
         "--base-tokenizer", served_pair.tokenizer_specs["base"],
         "--aligned-tokenizer", served_pair.tokenizer_specs["aligned"]]
    )  # fmt: skip
    engine, name = engine_from_args(args)
    config = config_from_args(args).updated(model_name=name, port=0)
    try:
        with running_server(engine, config) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
            chat = client.chat.completions.create(
                model=name,
                messages=[{"role": "user", "content": PROMPT}],
                max_tokens=12,
                seed=1,
                extra_body={"router": "P-PUNC", "gamma": 0.3},
            )
            assert chat.choices[0].message.content
            chunks = client.chat.completions.create(
                model=name,
                messages=[{"role": "user", "content": PROMPT}],
                max_tokens=12,
                stream=True,
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text
    finally:
        engine.shutdown()


def test_a_tokenizer_that_is_not_the_servers_is_refused(served_pair: ServedPair) -> None:
    if served_pair.tokenizers["base"].get_vocab() == served_pair.tokenizers["aligned"].get_vocab():
        pytest.skip("a same-family pair: the other model's tokenizer is this one's")
    with pytest.raises(EndpointError, match="tokenizes text differently"):
        EndpointRunner(Endpoint(url=served_pair.urls["base"]), served_pair.tokenizers["aligned"])
