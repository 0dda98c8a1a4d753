"""Two real engines serving a pair, for tests/remote/test_endpoints.py.

By default: llama.cpp's llama-server (:mod:`baco_integrations.llama_server`) on 127.0.0.1,
serving the offline pair's GGUF files. The binary comes from ``scripts/build_llama_server.sh``
(``.ci/run`` builds it once; it is kept in ``$BACO_CACHE``) and the GGUF files from ``python
-m baco_integrations.offline --no-convert`` with ``BACO_REMOTE_CACHE`` naming their cache
(``.ci/run`` prepares them there, apart from the default cache, so that the other real-pair
tests stay skipped in CI). The tests skip when either is missing.

With ``BACO_REMOTE_BASE_URL``/``BACO_REMOTE_ALIGNED_URL`` and ``BACO_REMOTE_BASE_MODEL``/
``BACO_REMOTE_ALIGNED_MODEL`` (hub ids) set, the tests run against those servers instead
(``scripts/gpu_remote_check.sh`` starts two vLLM servers on a GPU machine).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from baco_integrations import BacoEngine, llama_server
from baco_integrations.offline import converted_pair, offline_pair


@dataclass
class ServedPair:
    """Where the two models are served, their tokenizers (and what ``--*-tokenizer`` takes
    for them), and a way to load the same pair in this process."""

    urls: dict[str, str]
    tokenizer_specs: dict[str, str]
    tokenizers: dict[str, Any]
    load_local: Callable[[], BacoEngine]


def _given_servers() -> ServedPair | None:
    env = {k: os.environ.get(f"BACO_REMOTE_{k.upper()}") for k in (
        "base_url", "aligned_url", "base_model", "aligned_model")}  # fmt: skip
    if not env["base_url"]:
        return None
    models = {"base": str(env["base_model"]), "aligned": str(env["aligned_model"])}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return ServedPair(
        urls={"base": str(env["base_url"]), "aligned": str(env["aligned_url"])},
        tokenizer_specs=models,
        tokenizers={side: AutoTokenizer.from_pretrained(m) for side, m in models.items()},
        load_local=lambda: BacoEngine.from_pretrained(
            models["base"], models["aligned"], device=device
        ),
    )


@pytest.fixture(scope="session")
def served_pair() -> Iterator[ServedPair]:
    given = _given_servers()
    if given is not None:
        yield given
        return
    try:
        pair = offline_pair(os.environ.get("BACO_REMOTE_CACHE"), install=False)
    except FileNotFoundError as exc:
        pytest.skip(f"offline pair's GGUF files not prepared: {exc}")
    executable = llama_server.binary()
    if executable is None:
        pytest.skip("llama-server not built (scripts/build_llama_server.sh)")
    paths = {"base": pair.base_path, "aligned": pair.aligned_path}
    with llama_server.serving(executable, paths) as servers:
        yield ServedPair(
            urls={side: server.url for side, server in servers.items()},
            tokenizer_specs={side: str(path) for side, path in paths.items()},
            tokenizers={
                side: AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
                for side, path in paths.items()
            },
            load_local=_converted_offline_pair,
        )


def _converted_offline_pair() -> BacoEngine:
    """The offline pair in this process, from its converted checkpoints in the default cache
    (loading the GGUF files would dequantise them for a minute and a half each run); skips
    where they were not prepared, as the other slow real-pair tests do (CI)."""
    try:
        converted = converted_pair(install=False, convert=False)
    except FileNotFoundError as exc:
        pytest.skip(f"the converted offline pair is not in the default cache: {exc}")
    return BacoEngine.from_pretrained(converted.base_dir, converted.aligned_dir)
