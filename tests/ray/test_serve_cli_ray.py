"""``baco serve --ray --replicas 2``: serves on --host/--port, and stopping the command stops
every Ray process it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

pytest.importorskip("ray.serve")

import httpx  # noqa: E402
import psutil  # type: ignore[import-untyped]  # noqa: E402

from baco_integrations.server.ray_app import REPLICA_HEADER  # noqa: E402
from baco_integrations.testing import HANG_GUARD_S, TinyPair  # noqa: E402

#: Bound on Ray's start plus the replicas' loading (a bug makes the test fail, not hang).
START_GUARD_S = 4 * HANG_GUARD_S


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_ray_command(tiny_pair: TinyPair) -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "baco_integrations.cli", "serve", "--ray", "--replicas", "2",
        "--base", str(tiny_pair.base_dir), "--aligned", str(tiny_pair.aligned_dir),
        "--host", "127.0.0.1", "--port", str(port), "--model-name", "tiny",
        "--default-max-tokens", "4",
    ]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    serving = threading.Event()

    def read() -> None:
        for line in child.stderr:  # type: ignore[union-attr]
            if line.startswith(b"baco: serving"):
                serving.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        pause = threading.Event()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=HANG_GUARD_S) as http:
            reply = None
            for _ in range(int(START_GUARD_S / 0.5)):
                assert child.poll() is None, "baco serve --ray exited early"
                try:
                    reply = http.post(
                        "/v1/completions", json={"model": "tiny", "prompt": "Hi", "seed": 1}
                    )
                except httpx.TransportError:
                    reply = None
                if reply is not None and reply.status_code == 200:
                    break
                pause.wait(0.5)
            assert reply is not None and reply.status_code == 200, reply
            assert reply.headers[REPLICA_HEADER]
            assert reply.json()["model"] == "tiny"
        # SIGTERM is the command's to handle once it says it serves (before, Ray's own are set).
        assert serving.wait(START_GUARD_S), "baco serve --ray never said it serves"
        started = psutil.Process(child.pid).children(recursive=True)
        assert started, "no Ray process was started"
        child.send_signal(signal.SIGTERM)
        assert child.wait(START_GUARD_S) == 0
        _, alive = psutil.wait_procs(started, timeout=HANG_GUARD_S)
        assert not alive, f"left behind: {alive}"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        reader.join(HANG_GUARD_S)
