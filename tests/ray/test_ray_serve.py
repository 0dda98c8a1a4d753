"""``baco serve`` on Ray Serve: a local CPU cluster on 127.0.0.1, two replicas of the tiny pair.

One module-scoped cluster (Ray's start is the slow part); it is shut down at the end and no
process of it may be left. No verdict depends on timing: a burst is sent until both replicas
have answered, with a bound on the number of bursts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("ray.serve")

import openai  # noqa: E402
import psutil  # type: ignore[import-untyped]  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402

from baco_integrations import BacoEngine  # noqa: E402
from baco_integrations.server import ServerConfig  # noqa: E402
from baco_integrations.server.ray_app import (  # noqa: E402
    APP_NAME,
    REPLICA_HEADER,
    RayServeArgs,
    build,
)
from baco_integrations.server.testing import running_server  # noqa: E402
from baco_integrations.testing import HANG_GUARD_S, TinyPair  # noqa: E402

MODEL = "baco-tiny"
KEY = "test-key"
HELLO: list[Any] = [{"role": "user", "content": "Hello, name a colour."}]
SERVER = {"model_name": MODEL, "default_max_tokens": 8, "max_tokens": 64, "api_key": KEY}
#: Bursts of concurrent requests sent at most, until both replicas have served some.
MAX_BURSTS = 8
BURST = 8


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def ray_url(tiny_pair: TinyPair) -> Iterator[str]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    ray.init(
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        spec = RayServeArgs(
            base=str(tiny_pair.base_dir),
            aligned=str(tiny_pair.aligned_dir),
            server=SERVER,
            num_replicas=2,
            num_cpus=0.5,
        )
        serve.run(build(spec), name=APP_NAME, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    gone, alive = psutil.wait_procs(left, timeout=HANG_GUARD_S)
    assert not alive, f"Ray left processes behind: {alive}"


def test_burst_is_served_by_both_replicas(ray_url: str) -> None:
    async def burst(client: openai.AsyncOpenAI) -> list[Any]:
        calls = [
            client.chat.completions.with_raw_response.create(
                model=MODEL, messages=HELLO, max_tokens=6, seed=i
            )
            for i in range(BURST)
        ]
        return list(await asyncio.gather(*calls))

    async def run() -> Counter[str]:
        served: Counter[str] = Counter()
        async with openai.AsyncOpenAI(
            base_url=f"{ray_url}/v1", api_key=KEY, max_retries=0, timeout=HANG_GUARD_S
        ) as client:
            for _ in range(MAX_BURSTS):
                for raw in await burst(client):
                    assert raw.http_response.status_code == 200
                    reply = raw.parse()
                    assert reply.model == MODEL
                    assert isinstance(reply.choices[0].message.content, str)
                    served[raw.headers[REPLICA_HEADER]] += 1
                if len(served) == 2:
                    break
        return served

    served = asyncio.run(run())
    assert len(served) == 2, f"one replica served every request: {served}"


def test_seeded_request_equals_in_process(ray_url: str, engine: BacoEngine) -> None:
    request: dict[str, Any] = {"model": MODEL, "messages": HELLO, "max_tokens": 8, "seed": 7}
    with openai.OpenAI(
        base_url=f"{ray_url}/v1", api_key=KEY, max_retries=0, timeout=HANG_GUARD_S
    ) as client:
        raw = client.chat.completions.with_raw_response.create(**request)
        on_ray = raw.parse()
        assert raw.headers[REPLICA_HEADER]
    with (
        running_server(engine, ServerConfig.model_validate(SERVER)) as local,
        openai.OpenAI(
            base_url=local.base_url, api_key=KEY, max_retries=0, timeout=HANG_GUARD_S
        ) as client,
    ):
        in_process = client.chat.completions.create(**request)
    ray_choice, local_choice = on_ray.choices[0], in_process.choices[0]
    assert ray_choice.message.content == local_choice.message.content
    assert ray_choice.finish_reason == local_choice.finish_reason
    assert (ray_choice.model_extra or {})["baco"] == (local_choice.model_extra or {})["baco"]
    assert on_ray.usage == in_process.usage


def test_stream_errors_and_key_behave_as_baco_serve(ray_url: str) -> None:
    with openai.OpenAI(
        base_url=f"{ray_url}/v1", api_key=KEY, max_retries=0, timeout=HANG_GUARD_S
    ) as client:
        chunks = list(
            client.chat.completions.create(
                model=MODEL, messages=HELLO, max_tokens=6, seed=1, stream=True
            )
        )
        assert chunks and chunks[-1].choices[0].finish_reason in {"stop", "length"}
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="other", messages=HELLO)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10_000)
    with (
        openai.OpenAI(
            base_url=f"{ray_url}/v1", api_key="wrong", max_retries=0, timeout=HANG_GUARD_S
        ) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.models.list()


def test_a_dead_replica_is_replaced(ray_url: str) -> None:
    """Runs last in the module: it kills a replica. Ray starts a new one; meanwhile the
    openai client (its default retries) is served by the other replica."""
    (victim, *_) = [
        actor
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith("SERVE_REPLICA::") and "BacoReplica" in actor["name"]
    ]
    killed = victim["name"].rsplit("#", 1)[-1]
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    seen: set[str] = set()
    pause = threading.Event()
    with openai.OpenAI(base_url=f"{ray_url}/v1", api_key=KEY, timeout=HANG_GUARD_S) as client:
        for _ in range(int(4 * HANG_GUARD_S / 0.25)):
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=HELLO, max_tokens=2
            )
            assert raw.http_response.status_code == 200
            seen.add(raw.headers[REPLICA_HEADER])
            if len(seen - {killed}) == 2:
                break
            pause.wait(0.25)
    assert len(seen - {killed}) == 2, f"no replacement replica served: {seen}"
