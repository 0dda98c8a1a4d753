"""llama.cpp's llama-server on 127.0.0.1, serving the offline pair's GGUF files
(:mod:`baco_integrations.llama_server`).

The binary comes from ``scripts/build_llama_server.sh`` (``.ci/run`` builds it once; it is
kept in ``$BACO_CACHE``) and the GGUF files from ``python -m baco_integrations.offline
--no-convert`` with ``BACO_REMOTE_CACHE`` naming their cache (``.ci/run`` prepares them
there, apart from the default cache, so that the other real-pair tests stay skipped in CI).
Tests skip when either is missing. The servers start once per session, each on a free port.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from baco_integrations import llama_server
from baco_integrations.llama_server import RunningServer
from baco_integrations.offline import OfflinePair, offline_pair

__all__ = ["RunningServer"]


@pytest.fixture(scope="session")
def remote_pair() -> OfflinePair:
    cache = os.environ.get("BACO_REMOTE_CACHE")
    try:
        return offline_pair(cache, install=False)
    except FileNotFoundError as exc:
        pytest.skip(f"offline pair's GGUF files not prepared: {exc}")


@pytest.fixture(scope="session")
def llama_servers(remote_pair: OfflinePair) -> Iterator[dict[str, RunningServer]]:
    """One llama-server per model of the offline pair: ``{"base": ..., "aligned": ...}``."""
    executable = llama_server.binary()
    if executable is None:
        pytest.skip("llama-server not built (scripts/build_llama_server.sh)")
    ggufs = {"base": remote_pair.base_path, "aligned": remote_pair.aligned_path}
    with llama_server.serving(executable, ggufs) as servers:
        yield servers
