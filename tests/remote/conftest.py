"""llama.cpp's llama-server on 127.0.0.1, serving the offline pair's GGUF files.

The binary comes from ``scripts/build_llama_server.sh`` (``.ci/run`` builds it once; it is
kept in ``$BACO_CACHE``) and the GGUF files from ``python -m baco_integrations.offline
--no-convert`` with ``BACO_REMOTE_CACHE`` naming their cache (``.ci/run`` prepares them
there, apart from the default cache, so that the other real-pair tests stay skipped in CI).
Tests skip when either is missing. Each server is started on a free port, waited for on its
``/health`` route, and stopped at the end of the module.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from baco_integrations.offline import OfflinePair, default_cache_dir, offline_pair

LLAMA_SERVER_VERSION = "11434.0.0"


def llama_server_binary() -> Path | None:
    cache = Path(os.environ.get("BACO_CACHE") or default_cache_dir())
    path = cache / f"llama-server-{LLAMA_SERVER_VERSION}" / "llama-server"
    return path if path.is_file() else None


@dataclass
class RunningServer:
    url: str  # the OpenAI base URL, ending in /v1
    process: subprocess.Popen[bytes]
    gguf: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(binary: Path, gguf: Path, slots: int = 4) -> RunningServer:
    port = _free_port()
    process = subprocess.Popen(
        [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
         "-np", str(slots), "-c", str(2048 * slots), "-t", "1", "--no-webui"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    # Ready when its log says it listens (after the model loaded): an event, not elapsed time.
    # A server that exits first fails the fixture.
    assert process.stderr is not None
    for raw in process.stderr:
        if b"listening on http" in raw:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # drain the pipe
            return RunningServer(f"http://127.0.0.1:{port}/v1", process, gguf)
    raise RuntimeError(f"llama-server exited before it was ready (status {process.wait()})")


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


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
    binary = llama_server_binary()
    if binary is None:
        pytest.skip("llama-server not built (scripts/build_llama_server.sh)")
    servers: dict[str, RunningServer] = {}
    try:
        for side, gguf in (("base", remote_pair.base_path), ("aligned", remote_pair.aligned_path)):
            servers[side] = start_server(binary, gguf)
        yield servers
    finally:
        for server in servers.values():
            stop_server(server)
