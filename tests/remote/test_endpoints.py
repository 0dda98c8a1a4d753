"""BACO over two llama-server endpoints serving the offline pair (Gemma-3-270m base,
SmolLM2-135M-Instruct), and the remote runner's faults."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from transformers import AutoTokenizer

from baco_integrations import ROUTER_NAMES, BacoEngine
from baco_integrations.offline import OfflinePair

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
