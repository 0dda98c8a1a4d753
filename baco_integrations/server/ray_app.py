"""``baco serve`` as a Ray Serve deployment: the same FastAPI app, one engine per replica.

Needs the ``ray`` extra: ``pip install 'baco-integrations[ray]'``. Each replica loads the pair
from its paths or hub ids (never an engine object: replicas live in other processes, maybe on
other nodes), builds :func:`~baco_integrations.server.create_app` over it, and serves it through
``@serve.ingress``: streaming, errors, provenance, the API key and the limits are the app's
own. A pure ASGI wrapper adds the header ``x-baco-replica`` (the replica's id) to every
response, streams included.

Two ways in (docs/scaling.md):

* ``baco serve --ray --replicas N`` (:func:`serve_with_ray`): starts a local Ray cluster on
  127.0.0.1, or joins one with ``--ray-address``, and serves on ``--host/--port``;
* ``serve run`` with a config file whose ``import_path`` is
  ``baco_integrations.server.ray_app:build`` (:func:`build`, an application builder whose
  ``args`` are :class:`RayServeArgs`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

try:
    import ray
    from ray import serve
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"serving on Ray needs the 'ray' extra ({exc.name} is missing): "
        "pip install 'baco-integrations[ray]'"
    ) from exc

from ..engine import BacoEngine
from ..limits import EngineLimits
from .app import create_app
from .config import ServerConfig

#: The response header naming the replica that served a request.
REPLICA_HEADER = "x-baco-replica"
#: The Serve application's name (``serve status``, ``serve.delete``).
APP_NAME = "baco"


class RayServeArgs(BaseModel):
    """What a replica needs: where the pair is, how to load it, how to serve it, and what
    each replica asks Ray for. The ``args`` of a ``serve run`` config file."""

    model_config = ConfigDict(extra="forbid")

    base: str
    aligned: str
    device: str = "cpu"
    dtype: str = "auto"
    #: ``"auto"`` shards a pair that does not fit one GPU over the replica's ``num_gpus``.
    device_map: str | None = None
    base_gguf_file: str | None = None
    aligned_gguf_file: str | None = None
    limits: EngineLimits = Field(default_factory=EngineLimits)
    #: ServerConfig's fields (host/port are Serve's own: ``http_options``).
    server: dict[str, Any] = Field(default_factory=dict)
    num_replicas: int = Field(default=1, ge=1)
    #: ``{"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 64}``; replaces
    #: ``num_replicas`` when given.
    autoscaling: dict[str, Any] | None = None
    #: GPUs per replica: 1 for a pair on one GPU, more for a ``device_map`` sharded pair.
    #: Default: 1 when ``device`` is CUDA or ``device_map`` is set, else 0.
    num_gpus: float | None = None
    #: CPUs per replica (fractions share a core; on a CPU host torch's threads do the work).
    num_cpus: float = 1.0
    #: Default: the engine's row cap (``limits.max_live_rows``); see docs/scaling.md.
    max_ongoing_requests: int | None = Field(default=None, ge=1)

    def gpus(self) -> float:
        if self.num_gpus is not None:
            return self.num_gpus
        return 1.0 if self.device.startswith("cuda") or self.device_map else 0.0

    def ongoing(self) -> int:
        return self.max_ongoing_requests or self.limits.max_live_rows


class ReplicaHeader:
    """ASGI wrapper: every response (streams too) carries ``x-baco-replica: <name>``."""

    def __init__(self, app: Any, name: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), name.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)


def replica_name() -> str:
    context = serve.get_replica_context()
    replica_id = getattr(context, "replica_id", None)
    unique = getattr(replica_id, "unique_id", None)
    return str(unique or getattr(context, "replica_tag", "replica"))


@serve.ingress()
class BacoReplica:
    """One replica: one engine, its scheduler, and the app over it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        args = RayServeArgs.model_validate(spec)
        self.name = replica_name()
        self.engine = BacoEngine.from_pretrained(
            args.base,
            args.aligned,
            device=None if args.device_map else args.device,
            dtype=args.dtype,
            device_map=args.device_map,
            base_gguf_file=args.base_gguf_file,
            aligned_gguf_file=args.aligned_gguf_file,
            limits=args.limits,
        )
        config = ServerConfig.model_validate(args.server)
        self.asgi = ReplicaHeader(create_app(self.engine, config), self.name)

    def __serve_build_asgi_app__(self) -> Any:
        return self.asgi

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


def build(args: dict[str, Any] | RayServeArgs) -> Any:
    """The Serve application (an application builder: ``serve run`` passes the config's
    ``args``)."""
    spec = args if isinstance(args, RayServeArgs) else RayServeArgs.model_validate(args)
    ServerConfig.model_validate(spec.server)  # a bad setting fails here, not in every replica
    actor_options: dict[str, Any] = {"num_cpus": spec.num_cpus, "num_gpus": spec.gpus()}
    options: dict[str, Any] = {
        "name": "BacoReplica",
        "ray_actor_options": actor_options,
        "max_ongoing_requests": spec.ongoing(),
        # An engine queues up to limits.max_waiting calls itself and answers 503 past them.
        "max_queued_requests": -1,
        "health_check_period_s": 10,
    }
    if spec.autoscaling is not None:
        options["autoscaling_config"] = spec.autoscaling
    else:
        options["num_replicas"] = spec.num_replicas
    deployment = serve.deployment(**options)(BacoReplica)
    return deployment.bind(spec.model_dump(mode="json"))


# --------------------------------------------------------------------- baco serve --ray


def spec_from_args(args: argparse.Namespace, config: ServerConfig) -> RayServeArgs:
    limits = {
        name: value
        for name in ("max_live_rows", "max_waiting")
        if (value := getattr(args, name, None)) is not None
    }
    server = config.model_dump(mode="python", exclude={"host", "port"})
    if config.api_key is not None:
        server["api_key"] = config.api_key.get_secret_value()
    return RayServeArgs(
        base=args.base,
        aligned=args.aligned,
        device=args.device,
        dtype=args.dtype,
        base_gguf_file=args.base_gguf_file,
        aligned_gguf_file=args.aligned_gguf_file,
        limits=EngineLimits.model_validate(limits),
        server=server,
        num_replicas=args.replicas,
        num_cpus=getattr(args, "replica_cpus", None) or 1.0,
    )


def start(spec: RayServeArgs, host: str, port: int, address: str | None = None) -> bool:
    """Start (or join) Ray and run the app on ``host:port``; True when Ray was started here."""
    started_here = address is None and not ray.is_initialized()
    if not ray.is_initialized():
        if address is None:
            ray.init(include_dashboard=False, _node_ip_address="127.0.0.1")
        else:
            ray.init(address=address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build(spec), name=APP_NAME, route_prefix="/", blocking=False)
    return started_here


def stop(started_here: bool) -> None:
    """Delete the app; shut Serve and Ray down when this process started them."""
    try:
        if started_here:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
    finally:
        if ray.is_initialized():
            ray.shutdown()


def serve_with_ray(args: argparse.Namespace) -> int:
    """``baco serve --ray``: serve until interrupted (SIGINT/SIGTERM), then stop what was
    started here (the local cluster, or the app on a cluster that was joined)."""
    from .run import OFFLINE_MODEL_NAME, config_from_args

    if (args.base is None) != (args.aligned is None):
        raise ValueError("give both --base and --aligned, or neither (the offline pair)")
    config = config_from_args(args)
    if args.base is None:
        from ..offline import converted_pair

        print("baco: preparing the offline pair (installed once, then cached) ...", file=sys.stderr)
        pair = converted_pair()
        args.base, args.aligned = str(pair.base_dir), str(pair.aligned_dir)
        name = OFFLINE_MODEL_NAME
    else:
        name = f"baco:{args.base}+{args.aligned}"
    if config.model_name is None:
        config = config.updated(model_name=name)
    spec = spec_from_args(args, config)
    try:
        started_here = start(spec, config.host, config.port, args.ray_address)
        # After ray.init, whose handlers replace any set before it: SIGTERM stops as SIGINT.
        signal.signal(signal.SIGTERM, _interrupt)
    except BaseException:
        stop(args.ray_address is None)
        raise
    print(
        f"baco: serving {config.model_name!r} on Ray ({spec.num_replicas} replica(s)) at "
        f"http://{config.host}:{config.port}/v1",
        file=sys.stderr,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop(started_here)
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
