"""The HTTP server under load, against the same prompts in one in-process batch.

A bounded run on 127.0.0.1: the server runs in a child process (as ``baco serve`` would), and
``--clients`` concurrent streaming clients (httpx, asyncio) send ``--requests`` chat requests
in all, each its own prompt, then the run stops. It reports:

* generated tokens per second through the server against the same prompts with the same
  settings in-process: in one ``engine.generate`` batch (target: at least 0.8x), in
  consecutive batches of ``--clients`` prompts (the widest batch the clients can make), and
  as ``--clients`` concurrent ``engine.astream`` callers (continuous batching, no HTTP);
* time to first token and end-to-end latency per request, p50 and p99;
* the error count (target: zero), over every run.

Each measurement runs ``--repeats`` times; the run of median throughput is reported.

    python benchmarks/bench_server.py                        # ~30M-parameter local pair, CPU
    python benchmarks/bench_server.py --offline              # the offline real pair
    python benchmarks/bench_server.py --base ID --aligned ID --device cuda
    python benchmarks/bench_server.py --ray --replicas 2     # on Ray Serve (docs/scaling.md)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch

from baco_integrations import BacoEngine

MODEL = "bench"
#: BACO settings of every request (and of the in-process batch).
SETTINGS: dict[str, Any] = {"router": "P-PUNC", "gamma": 0.5, "temperature": 1.0, "seed": 0}


def prompts(count: int) -> list[str]:
    return [f"Brainstorm name number {i} for a coffee shop." for i in range(count)]


def load(args: argparse.Namespace) -> BacoEngine:
    torch.set_num_threads(args.threads)
    return BacoEngine.from_pretrained(args.base, args.aligned, device=args.device, dtype=args.dtype)


# ----------------------------------------------------------------------------- the server


def serve(args: argparse.Namespace, ports: Any) -> None:
    """The child process: load the pair, listen on a free port of 127.0.0.1, serve until
    SIGTERM (uvicorn's graceful shutdown)."""
    import uvicorn

    from baco_integrations.server import ServerConfig, create_app, uvicorn_config

    engine = load(args)
    config = ServerConfig(
        model_name=MODEL, max_tokens=args.max_tokens, default_max_tokens=args.max_tokens, max_n=1
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    ports.send(listener.getsockname()[1])
    ports.close()
    settings = uvicorn_config(create_app(engine, config), config, log_level="warning")
    uvicorn.Server(settings).run(sockets=[listener])


def serve_ray(args: argparse.Namespace, ports: Any) -> None:
    """The child process with ``--ray``: a local Ray cluster on 127.0.0.1 serving
    ``--replicas`` replicas (``--threads`` CPUs shared among them), until SIGTERM."""
    import signal
    import threading

    from baco_integrations.server.ray_app import RayServeArgs, start, stop

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = RayServeArgs(
        base=args.base,
        aligned=args.aligned,
        device=args.device,
        dtype=args.dtype,
        server={"model_name": MODEL, "max_tokens": args.max_tokens,
                "default_max_tokens": args.max_tokens, "max_n": 1},
        num_replicas=args.replicas,
        num_cpus=max(1.0, args.threads / args.replicas),
    )  # fmt: skip
    started = start(spec, "127.0.0.1", port)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    ports.send(port)
    ports.close()
    try:
        stopping.wait()
    finally:
        stop(started)


@dataclass
class Tally:
    ttft: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: list[str] = field(default_factory=list)


async def one_request(http: httpx.AsyncClient, prompt: str, max_tokens: int, tally: Tally) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **SETTINGS,
    }
    start = time.perf_counter()
    first = None
    done = False
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                tally.errors.append(f"HTTP {response.status_code}: {await response.aread()!r}")
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                event = json.loads(line.removeprefix("data: "))
                if "error" in event:
                    tally.errors.append(str(event["error"]))
                    return
                if first is None and any(c["delta"].get("content") for c in event["choices"]):
                    first = time.perf_counter() - start
                if event.get("usage"):
                    tally.tokens += event["usage"]["completion_tokens"]
    except httpx.HTTPError as exc:
        tally.errors.append(repr(exc))
        return
    if not done:
        tally.errors.append("the stream ended without [DONE]")
        return
    tally.latency.append(time.perf_counter() - start)
    if first is not None:
        tally.ttft.append(first)


async def load_test(port: int, args: argparse.Namespace) -> tuple[Tally, float]:
    """``args.clients`` clients share ``args.requests`` requests; returns the tally and the
    wall time from the first request to the last answer."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for prompt in prompts(args.requests):
        queue.put_nowait(prompt)
    tally = Tally()
    limits = httpx.Limits(max_connections=args.clients)
    timeout = httpx.Timeout(600.0)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=timeout
    ) as http:
        await one_request(http, "warm up", 4, Tally())

        async def client() -> None:
            while not queue.empty():
                await one_request(http, queue.get_nowait(), args.max_tokens, tally)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(args.clients)))
        return tally, time.perf_counter() - start


def through_server(args: argparse.Namespace) -> tuple[Tally, float]:
    context = multiprocessing.get_context("spawn")
    ports, child_end = context.Pipe(duplex=False)
    target = serve_ray if args.ray else serve
    child = context.Process(target=target, args=(args, child_end), name="bench-server")
    child.start()
    child_end.close()
    try:
        port = listening_port(ports, child)
        runs = [asyncio.run(load_test(port, args)) for _ in range(args.repeats)]
        tally, wall = median_run(runs)
        tally.errors = [error for run, _ in runs for error in run.errors]  # every run's
        return tally, wall
    finally:
        child.terminate()  # SIGTERM: uvicorn shuts down gracefully
        child.join(120)
        if child.is_alive():
            child.kill()
            child.join()
        ports.close()


def listening_port(ports: Any, child: Any) -> int:
    """The child's port once it serves (an error if it died first)."""
    while child.is_alive():
        if ports.poll(1):
            port = int(ports.recv())
            break
    else:
        raise RuntimeError(f"the server process ended (exit code {child.exitcode})")
    with httpx.Client(timeout=5) as http:
        while child.is_alive():
            try:
                if http.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    return port
            except httpx.HTTPError:
                time.sleep(0.1)
    raise RuntimeError(f"the server process ended (exit code {child.exitcode})")


# ----------------------------------------------------------------------------- in-process


def in_process(args: argparse.Namespace) -> dict[str, tuple[int, float]]:
    """The same prompts in-process, generated tokens and seconds: in one ``engine.generate``
    batch; in consecutive batches of ``args.clients`` prompts (as wide as the clients can
    make the server's batch); and as ``args.clients`` concurrent ``engine.astream`` callers
    sharing the requests (the engine's continuous batching without HTTP)."""
    engine = load(args)
    engine.generate("warm up", max_new_tokens=4)
    batch = prompts(args.requests)

    def batches(width: int) -> int:
        tokens = 0
        for i in range(0, len(batch), width):
            chunk = batch[i : i + width]
            outputs = engine.generate(chunk, max_new_tokens=args.max_tokens, **SETTINGS)
            tokens += sum(o.num_tokens for row in outputs for o in row)
        return tokens

    async def streaming_callers() -> int:
        queue = list(reversed(batch))

        async def caller() -> int:
            tokens = 0
            while queue:
                stream = engine.astream(queue.pop(), max_new_tokens=args.max_tokens, **SETTINGS)
                async for chunk in stream:
                    tokens += chunk.output.num_tokens if chunk.output is not None else 0
            return tokens

        return sum(await asyncio.gather(*(caller() for _ in range(args.clients))))

    ways = {
        "one_batch": lambda: batches(len(batch)),
        "client_wide_batches": lambda: batches(args.clients),
        "concurrent_streams": lambda: asyncio.run(streaming_callers()),
    }
    timings = {}
    for name, run in ways.items():
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            tokens = run()
            runs.append((tokens, time.perf_counter() - start))
        timings[name] = median_run(runs)
    engine.shutdown()
    return timings


def median_run(runs: list[Any]) -> Any:
    """The run of median throughput (each run is ``(tokens or tally, seconds)``)."""

    def rate(run: Any) -> float:
        tokens = run[0] if isinstance(run[0], int) else run[0].tokens
        return tokens / run[1]

    return sorted(runs, key=rate)[len(runs) // 2]


# ----------------------------------------------------------------------------- report


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def report(
    args: argparse.Namespace, local: dict[str, tuple[int, float]], served: Tally, wall: float
) -> dict:
    def rate(tokens: int, seconds: float) -> dict[str, Any]:
        return {
            "tokens": tokens,
            "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1),
        }

    server_rate = served.tokens / wall
    return {
        "device": args.device,
        "torch_threads": args.threads,
        "ray_replicas": args.replicas if args.ray else None,
        "base": args.base,
        "aligned": args.aligned,
        "clients": args.clients,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        **{name: rate(*timing) for name, timing in local.items()},
        "server": rate(served.tokens, wall),
        "ratio_one_batch": round(server_rate * local["one_batch"][1] / local["one_batch"][0], 3),
        "ratio_client_wide": round(
            server_rate * local["client_wide_batches"][1] / local["client_wide_batches"][0], 3
        ),
        "ratio_concurrent_streams": round(
            server_rate * local["concurrent_streams"][1] / local["concurrent_streams"][0], 3
        ),
        "ttft_s": {
            "p50": round(percentile(served.ttft, 50), 3),
            "p99": round(percentile(served.ttft, 99), 3),
        },
        "latency_s": {
            "p50": round(percentile(served.latency, 50), 3),
            "p99": round(percentile(served.latency, 99), 3),
        },
        "completed": len(served.latency),
        "errors": len(served.errors),
        "first_errors": served.errors[:3],
    }


def markdown(r: dict) -> str:
    on_ray = f" on Ray ({r['ray_replicas']} replicas)" if r.get("ray_replicas") else ""

    def row(label: str, key: str) -> str:
        return f"| {label} | {r[key]['tokens']} | {r[key]['seconds']} | {r[key]['tokens_per_s']} |"

    return "\n".join(
        [
            "| | tokens | seconds | tokens/s |",
            "|---|---:|---:|---:|",
            row(f"in-process, one batch of {r['requests']} prompts", "one_batch"),
            row(f"in-process, batches of {r['clients']} prompts", "client_wide_batches"),
            row(
                f"in-process, {r['clients']} concurrent engine.astream callers",
                "concurrent_streams",
            ),
            row(f"server{on_ray}, {r['clients']} streaming clients", "server"),
            "",
            f"Server / in-process: **{r['ratio_one_batch']:.2f}x** one batch, "
            f"**{r['ratio_client_wide']:.2f}x** batches of {r['clients']}, "
            f"**{r['ratio_concurrent_streams']:.2f}x** concurrent callers. Time to first token "
            f"p50 {r['ttft_s']['p50']} s, p99 {r['ttft_s']['p99']} s; end-to-end p50 "
            f"{r['latency_s']['p50']} s, p99 {r['latency_s']['p99']} s. "
            f"{r['completed']}/{r['requests']} requests completed, {r['errors']} errors.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="base model id or directory (default: a local ~30M pair)")
    parser.add_argument("--aligned", help="aligned model id or directory")
    parser.add_argument("--offline", action="store_true", help="the offline real pair")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the median")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, help="also write server.json and server.md here")
    parser.add_argument("--ray", action="store_true", help="serve on Ray Serve (the ray extra)")
    parser.add_argument("--replicas", type=int, default=1, help="with --ray: replicas")
    args = parser.parse_args(argv)
    if args.offline:
        from baco_integrations.offline import converted_pair

        pair = converted_pair()
        args.base, args.aligned = str(pair.base_dir), str(pair.aligned_dir)
    elif args.base is None:
        from baco_integrations.testing import make_bench_pair

        bench = make_bench_pair(tempfile.mkdtemp(prefix="baco-bench-"))
        args.base, args.aligned = str(bench.base_dir), str(bench.aligned_dir)
    local = in_process(args)
    served, wall = through_server(args)
    result = report(args, local, served, wall)
    table = markdown(result)
    print(json.dumps(result))
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "server.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        (args.out / "server.md").write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
