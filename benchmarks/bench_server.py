"""The HTTP server under load, against the same prompts in one in-process batched call.

A bounded run on 127.0.0.1: the server runs in a child process (as ``baco serve`` would), and
for each ``--clients`` count that many streaming clients (httpx, asyncio) share the
``--requests`` chat requests, each its own prompt, then the run stops. The same prompts with the
same settings also run in this process, on an engine of its own. The modes:

* one ``engine.generate`` call of all the prompts at once (the baseline: one batch from the
  start; its time to first token is its first decoding step, when every row gets its first
  token);
* consecutive ``engine.generate`` batches as wide as the clients (when there are fewer
  clients than requests: the widest batch the clients can make the server's);
* the clients as concurrent ``engine.astream`` callers (continuous batching, no HTTP);
* the same, staggered: client k starts ``k * --stagger-s`` seconds after the first (the
  default, 0.25 s, is about one decoding step of the offline pair on CPU), a spacing that does
  not depend on the engine;
* the clients streaming through the server, all starting at once;
* the same, staggered.

It reports generated tokens per second and the ratio to the batched call (target on CPU, with
as many requests as clients: at least 0.9x through the server), time to first token p50 and
p99 and its ratio to the batched call's (target: p50 under 2x), end-to-end latency per
request, the engine's decoding steps, prefill rounds and each model's forward passes per mode (the
server's read from its ``/metrics``: ``baco_engine_steps``, ``baco_engine_prefill_rounds``,
``baco_engine_{base,aligned}_forward_passes``), and the error count (target: zero), over
every run.

Each mode runs ``--repeats`` times, the modes interleaved per repeat (a slow spell of the
machine hits them all); the run of median throughput is reported.

    python benchmarks/bench_server.py                        # ~30M-parameter local pair, CPU
    python benchmarks/bench_server.py --offline --clients 8 32 --requests 8 32
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
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from _engine_watch import StepWatch, work

from baco_integrations import BacoEngine

MODEL = "bench"
#: BACO settings of every request (and of the in-process calls).
SETTINGS: dict[str, Any] = {"router": "P-PUNC", "gamma": 0.5, "temperature": 1.0, "seed": 0}
#: The default spacing of staggered clients: about one decoding step of the offline pair on
#: CPU.
STAGGER_S = 0.25
#: The label of the baseline mode.
BATCHED = "one batched call"


def prompts(count: int) -> list[str]:
    return [f"Brainstorm name number {i} for a coffee shop." for i in range(count)]


def load(args: argparse.Namespace) -> BacoEngine:
    torch.set_num_threads(args.threads)
    return BacoEngine.from_pretrained(args.base, args.aligned, device=args.device, dtype=args.dtype)


@dataclass
class Run:
    """One mode's measurement: tokens, seconds, each request's time to first token and
    end-to-end latency, errors, and the engine's work (steps; in-process also prefill rounds
    and each model's forward passes)."""

    tokens: int = 0
    seconds: float = 0.0
    ttft: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    work: dict[str, int | None] = field(default_factory=dict)


#: Sends one request and adds what it got to a run.
Send = Callable[[str, Run], Awaitable[None]]


async def clients(send: Send, batch: list[str], count: int, stagger_s: float, run: Run) -> None:
    """``count`` clients share ``batch``, each sending one request after another; client k
    starts ``k * stagger_s`` seconds after the first. Sets ``run.seconds`` (from the first
    request to the last answer)."""
    queue = deque(batch)

    async def client(k: int) -> None:
        if k and stagger_s:
            await asyncio.sleep(k * stagger_s)
        while queue:
            await send(queue.popleft(), run)

    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(count)))
    run.seconds = time.perf_counter() - start


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


async def one_request(http: httpx.AsyncClient, prompt: str, max_tokens: int, run: Run) -> None:
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
                run.errors.append(f"HTTP {response.status_code}: {await response.aread()!r}")
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                event = json.loads(line.removeprefix("data: "))
                if "error" in event:
                    run.errors.append(str(event["error"]))
                    return
                if first is None and any(c["delta"].get("content") for c in event["choices"]):
                    first = time.perf_counter() - start
                if event.get("usage"):
                    run.tokens += event["usage"]["completion_tokens"]
    except httpx.HTTPError as exc:
        run.errors.append(repr(exc))
        return
    if not done:
        run.errors.append("the stream ended without [DONE]")
        return
    run.latency.append(time.perf_counter() - start)
    if first is not None:
        run.ttft.append(first)


#: The server engine's work counters at ``/metrics`` (``baco_engine_<name>``).
WORK_METRICS = ("steps", "prefill_rounds", "base_forward_passes", "aligned_forward_passes")


async def engine_work(http: httpx.AsyncClient) -> dict[str, int] | None:
    """The server engine's work so far (steps, prefill rounds, each model's forwards, read
    from ``/metrics``), or None if it cannot be read."""
    try:
        text = (await http.get("/metrics")).text
    except httpx.HTTPError:
        return None
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("baco_engine_") and name[len("baco_engine_") :] in WORK_METRICS:
            values[name[len("baco_engine_") :]] = int(float(value))
    return values if len(values) == len(WORK_METRICS) else None


class Server:
    """The server in a child process, and its load tests."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        context = multiprocessing.get_context("spawn")
        self.ports, child_end = context.Pipe(duplex=False)
        target = serve_ray if args.ray else serve
        self.child = context.Process(target=target, args=(args, child_end), name="bench-server")
        self.child.start()
        child_end.close()
        self.port = 0
        #: Steps of one replica say nothing of several.
        self.steps_readable = not (args.ray and args.replicas > 1)

    def wait(self) -> None:
        """Until the child serves (an error if it died first)."""
        while self.child.is_alive():
            if self.ports.poll(1):
                self.port = int(self.ports.recv())
                break
        else:
            raise RuntimeError(f"the server process ended (exit code {self.child.exitcode})")
        with httpx.Client(timeout=5) as http:
            while self.child.is_alive():
                try:
                    if http.get(f"http://127.0.0.1:{self.port}/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    time.sleep(0.1)
        raise RuntimeError(f"the server process ended (exit code {self.child.exitcode})")

    def close(self) -> None:
        self.child.terminate()  # SIGTERM: uvicorn shuts down gracefully
        self.child.join(120)
        if self.child.is_alive():
            self.child.kill()
            self.child.join()
        self.ports.close()

    def load_test(self, batch: list[str], count: int, stagger_s: float) -> Run:
        return asyncio.run(self._load_test(batch, count, stagger_s))

    async def _load_test(self, batch: list[str], count: int, stagger_s: float) -> Run:
        run = Run()
        limits = httpx.Limits(max_connections=count + 1)  # + 1: /metrics
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", limits=limits, timeout=httpx.Timeout(600.0)
        ) as http:
            await one_request(http, "warm up", 4, Run())
            before = await engine_work(http)

            async def send(prompt: str, into: Run) -> None:
                await one_request(http, prompt, self.args.max_tokens, into)

            await clients(send, batch, count, stagger_s, run)
            after = await engine_work(http)
        if self.steps_readable and before is not None and after is not None:
            done = {k: after[k] - before[k] for k in WORK_METRICS}
            run.work = dict(zip(WORK, done.values(), strict=True))
        return run


# ----------------------------------------------------------------------------- in-process


class InProcess:
    """The same prompts on an engine in this process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.engine = load(args)
        self.engine.generate("warm up", max_new_tokens=4)
        self.watch = StepWatch(self.engine)

    def work(self) -> dict[str, int]:
        return work(self.engine)

    def measured(self, fn: Callable[[Run], None]) -> Run:
        run, before = Run(), self.work()
        fn(run)
        run.work = {k: v - before[k] for k, v in self.work().items()}
        return run

    def batches(self, batch: list[str], width: int, run: Run) -> None:
        """Consecutive ``engine.generate`` calls of ``width`` prompts."""
        start = time.perf_counter()
        for i in range(0, len(batch), width):
            chunk = batch[i : i + width]
            self.watch.arm()
            outputs = self.engine.generate(chunk, max_new_tokens=self.args.max_tokens, **SETTINGS)
            run.tokens += sum(o.num_tokens for row in outputs for o in row)
            run.ttft += [self.watch.first_step_s()] * len(chunk)
            run.latency += [time.perf_counter() - self.watch.start] * len(chunk)
        run.seconds = time.perf_counter() - start

    async def astreamed(self, prompt: str, run: Run) -> None:
        start, first = time.perf_counter(), None
        stream = self.engine.astream(prompt, max_new_tokens=self.args.max_tokens, **SETTINGS)
        async for chunk in stream:
            if first is None and chunk.text:
                first = time.perf_counter() - start
            if chunk.output is not None:
                run.tokens += chunk.output.num_tokens
        run.latency.append(time.perf_counter() - start)
        if first is not None:
            run.ttft.append(first)

    def callers(self, batch: list[str], count: int, stagger_s: float, run: Run) -> None:
        asyncio.run(clients(self.astreamed, batch, count, stagger_s, run))


def modes(
    local: InProcess, server: Server, batch: list[str], count: int, stagger_s: float
) -> dict[str, Callable[[], Run]]:
    """Each mode as a function returning its :class:`Run`."""
    found: dict[str, Callable[[], Run]] = {
        BATCHED: lambda: local.measured(lambda run: local.batches(batch, len(batch), run))
    }
    if count < len(batch):
        found[f"batches of {count}"] = lambda: local.measured(
            lambda run: local.batches(batch, count, run)
        )
    found["engine.astream callers"] = lambda: local.measured(
        lambda run: local.callers(batch, count, 0.0, run)
    )
    found["engine.astream callers, staggered"] = lambda: local.measured(
        lambda run: local.callers(batch, count, stagger_s, run)
    )
    found["HTTP clients"] = lambda: server.load_test(batch, count, 0.0)
    found["HTTP clients, staggered"] = lambda: server.load_test(batch, count, stagger_s)
    return found


def median_run(runs: list[Run]) -> Run:
    """The run of median throughput."""
    return sorted(runs, key=lambda r: r.tokens / r.seconds if r.seconds else 0.0)[len(runs) // 2]


def measure(
    local: InProcess, server: Server, count: int, requests: int, args: argparse.Namespace
) -> list[dict]:
    """The rows of one client count: every mode ``args.repeats`` times, interleaved."""
    batch = prompts(requests)
    runs: dict[str, list[Run]] = {}
    for _ in range(args.repeats):
        for name, fn in modes(local, server, batch, count, args.stagger_s).items():
            runs.setdefault(name, []).append(fn())
    base = median_run(runs[BATCHED])
    base_rate, base_ttft = base.tokens / base.seconds, base.ttft[0]
    rows = []
    for name, mode_runs in runs.items():
        run = median_run(mode_runs)
        rate = run.tokens / run.seconds if run.seconds else 0.0
        ttft = percentile(run.ttft, 50)
        rows.append(
            {
                "clients": count,
                "requests": requests,
                "where": "server" if name.startswith("HTTP") else "in-process",
                "how": name,
                "tokens": run.tokens,
                "seconds": round(run.seconds, 3),
                "tokens_per_s": round(rate, 1),
                "vs_one_call": round(rate / base_rate, 3),
                "ttft_p50_s": round(ttft, 3),
                "ttft_p99_s": round(percentile(run.ttft, 99), 3),
                "ttft_vs_one_call": round(ttft / base_ttft, 2),
                "latency_p50_s": round(percentile(run.latency, 50), 3),
                "latency_p99_s": round(percentile(run.latency, 99), 3),
                "completed": len(run.latency),
                "errors": sum(len(r.errors) for r in mode_runs),  # every run's
                "first_errors": [e for r in mode_runs for e in r.errors][:3],
                **{k: run.work.get(k) for k in WORK},
            }
        )
    return rows


#: The work columns; the server publishes only its steps.
WORK = ("steps", "prefill_rounds", "base_forwards", "aligned_forwards")


# ----------------------------------------------------------------------------- report


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def markdown(rows: list[dict], meta: dict) -> str:
    on_ray = f" (Ray Serve, {meta['ray_replicas']} replicas)" if meta.get("ray_replicas") else ""

    def cell(value: int | None) -> str:
        return "n/a" if value is None else str(value)

    lines = [
        "| clients × requests | how | tokens/s | vs one batched call | TTFT p50 s | vs batched "
        "| end-to-end p50 s | steps | prefill rounds | base / aligned forwards |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        where = f"server{on_ray}" if r["where"] == "server" else "in-process"
        forwards = f"{cell(r['base_forwards'])} / {cell(r['aligned_forwards'])}"
        lines.append(
            f"| {r['clients']} × {r['requests']} | {where}, {r['how']} | {r['tokens_per_s']} "
            f"| {r['vs_one_call']:.2f}x | {r['ttft_p50_s']} | {r['ttft_vs_one_call']:.2f}x "
            f"| {r['latency_p50_s']} | {cell(r['steps'])} | {cell(r['prefill_rounds'])} "
            f"| {forwards} |"
        )
    served = [r for r in rows if r["where"] == "server"]
    completed = all(r["completed"] == r["requests"] for r in served)
    errors = sum(r["errors"] for r in served)
    lines += [
        "",
        f"Staggered clients start {meta['stagger_s']} s apart. The batched call's time to "
        "first token is its first decoding step. Server requests: "
        f"{'all' if completed else 'NOT all'} completed in the reported runs, {errors} errors "
        "over every run. The server's work is read from its /metrics (n/a: several replicas).",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="base model id or directory (default: a local ~30M pair)")
    parser.add_argument("--aligned", help="aligned model id or directory")
    parser.add_argument("--offline", action="store_true", help="the offline real pair")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[32], help="concurrent clients (each count)"
    )
    parser.add_argument(
        "--requests",
        type=int,
        nargs="+",
        default=[128],
        help="requests in all: one count for every --clients count, or one per count",
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--stagger-s",
        type=float,
        default=STAGGER_S,
        help="seconds between staggered clients' starts (default: about one decoding step "
        "of the offline pair on CPU)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the median")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--out", type=Path, help="also write server.json and server.md (_offline) here"
    )
    parser.add_argument("--ray", action="store_true", help="serve on Ray Serve (the ray extra)")
    parser.add_argument("--replicas", type=int, default=1, help="with --ray: replicas")
    args = parser.parse_args(argv)
    if len(args.requests) == 1:
        args.requests = args.requests * len(args.clients)
    if len(args.requests) != len(args.clients):
        parser.error("--requests: one count, or one per --clients count")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.offline:
        from baco_integrations.offline import converted_pair

        pair = converted_pair()
        args.base, args.aligned = str(pair.base_dir), str(pair.aligned_dir)
    elif args.base is None:
        from baco_integrations.testing import make_bench_pair

        bench = make_bench_pair(tempfile.mkdtemp(prefix="baco-bench-"))
        args.base, args.aligned = str(bench.base_dir), str(bench.aligned_dir)
    server = Server(args)  # loads while this process loads its own engine
    local = None
    try:
        local = InProcess(args)
        server.wait()
        rows = [
            row
            for count, requests in zip(args.clients, args.requests, strict=True)
            for row in measure(local, server, count, requests, args)
        ]
        meta = {
            "device": args.device,
            "dtype": str(local.engine.aligned_model.dtype),
            "torch_threads": args.threads,
            "ray_replicas": args.replicas if args.ray else None,
            "base": args.base,
            "aligned": args.aligned,
            "max_tokens": args.max_tokens,
            "stagger_s": args.stagger_s,
            "repeats": args.repeats,
            "admission_wait_steps": local.engine.limits.admission_wait_steps,
        }
    finally:
        server.close()
        if local is not None:
            local.engine.shutdown()
    table = markdown(rows, meta)
    print(json.dumps(meta))
    print(table)
    if args.out is not None:
        stem = "server_offline" if args.offline else "server"
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{stem}.json").write_text(
            json.dumps({"meta": meta, "rows": rows}, indent=2), encoding="utf-8"
        )
        (args.out / f"{stem}.md").write_text(f"{json.dumps(meta)}\n\n{table}\n", encoding="utf-8")


if __name__ == "__main__":
    main()
