"""Run the app on 127.0.0.1 in a background thread: for tests, benchmarks and notebooks.

::

    with running_server(engine, ServerConfig(model_name="tiny")) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")

The server listens on a socket bound here to 127.0.0.1 and a free port (no race for the
port), and stops by ``should_exit`` plus a join of its thread, so no thread or socket is left.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from ..engine import BacoEngine
from ..testing import HANG_GUARD_S
from .app import create_app
from .config import ServerConfig
from .run import uvicorn_config


class LiveServer:
    """uvicorn serving ``create_app(engine, config)`` on 127.0.0.1, in a thread."""

    def __init__(self, engine: BacoEngine, config: ServerConfig, **uvicorn_options: Any) -> None:
        self.engine = engine
        self.config = config
        self.app = create_app(engine, config)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]
        options = {"log_level": "warning", **uvicorn_options}
        self.server = uvicorn.Server(uvicorn_config(self.app, config, **options))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="baco-test-server"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What OpenAI clients take as ``base_url``."""
        return f"{self.url}/v1"

    def start(self) -> LiveServer:
        """Start serving; return once the server listens."""
        self.thread.start()
        pause = threading.Event()  # never set: a short wait between checks
        while not self.server.started and self.thread.is_alive():
            pause.wait(0.005)
        if not self.server.started:
            self.socket.close()
            raise RuntimeError("the server did not start (see its log)")
        return self

    def stop(self, timeout: float = HANG_GUARD_S) -> None:
        """Shut down as on SIGTERM (live requests get ``config.shutdown_timeout_s``)."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"the server did not stop within {timeout} s")
        self.socket.close()


@contextmanager
def running_server(
    engine: BacoEngine, config: ServerConfig | None = None, **uvicorn_options: Any
) -> Iterator[LiveServer]:
    """A :class:`LiveServer` for the ``with`` block."""
    server = LiveServer(engine, config or ServerConfig(), **uvicorn_options).start()
    try:
        yield server
    finally:
        server.stop()


def baco_block(choice: Any) -> dict[str, Any]:
    """A choice's provenance as the openai client keeps it (an extra field, in
    ``model_extra``)."""
    extra = choice.model_extra or {}
    assert "baco" in extra, choice
    block: dict[str, Any] = extra["baco"]
    return block
