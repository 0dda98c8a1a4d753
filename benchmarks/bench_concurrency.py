"""What continuous batching gives concurrent callers, against one batched call, in one process.

For 8 and 32 callers (each with its own prompt, same settings) it times:

* one ``engine.generate`` of all the prompts at once (the baseline: one batch from the start);
* the same prompts as concurrent streaming calls from threads (``engine.stream`` each);
* the same prompts as concurrent asyncio tasks (``engine.astream`` each);
* staggered: the same asyncio callers started one after another, one decoding step apart
  (arrivals spread over as many steps as there are callers).

It reports generated tokens per second and the ratio to the baseline (target: at least 0.9 on
CPU for callers that start together), time to first token p50 against the batched call's
(its first step; target: under 2x), and the work each mode did: prefill rounds and each
model's forward passes. Then the latency of a 16-token call submitted while a 256-token call
runs, against the 16-token call alone (target: within 3x).

    python benchmarks/bench_concurrency.py                 # ~30M-parameter local pair, CPU
    python benchmarks/bench_concurrency.py --offline       # the offline real pair
    python benchmarks/bench_concurrency.py --base ID --aligned ID --device cuda
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from _engine_watch import StepWatch, work

from baco_integrations import BacoEngine

SETTINGS: dict[str, Any] = {"router": "P-PUNC", "gamma": 0.5, "seed": 0}


def prompts(count: int) -> list[str]:
    return [f"Brainstorm name number {i} for a coffee shop." for i in range(count)]


@dataclass
class Run:
    """One mode's measurement: tokens, seconds, each caller's time to first token, work."""

    tokens: int = 0
    seconds: float = 0.0
    first_token_s: list[float] = field(default_factory=list)
    work: dict[str, int] = field(default_factory=dict)


def measured(engine: BacoEngine, fn: Callable[[Run], None]) -> Run:
    run, before = Run(), work(engine)
    start = time.perf_counter()
    fn(run)
    run.seconds = time.perf_counter() - start
    run.work = {k: v - before[k] for k, v in work(engine).items()}
    return run


def modes(engine: BacoEngine, batch: list[str], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Each mode as a function filling a :class:`Run`."""
    watch = StepWatch(engine)

    def one_call(run: Run) -> None:
        watch.arm()
        outputs = engine.generate(batch, **kwargs)
        run.tokens = sum(o.num_tokens for row in outputs for o in row)
        run.first_token_s = [watch.at - watch.start]

    def streamed(prompt: str) -> tuple[int, float]:
        start, first, tokens = time.perf_counter(), None, 0
        for chunk in engine.stream(prompt, **kwargs):
            if first is None:
                first = time.perf_counter() - start
            if chunk.output is not None:
                tokens += chunk.output.num_tokens
        return tokens, first or 0.0

    def threads(run: Run) -> None:
        with ThreadPoolExecutor(len(batch)) as pool:
            for tokens, first in pool.map(streamed, batch):
                run.tokens += tokens
                run.first_token_s.append(first)

    async def astreamed(prompt: str, run: Run) -> None:
        start, first = time.perf_counter(), None
        async for chunk in engine.astream(prompt, **kwargs):
            if first is None:
                first = time.perf_counter() - start
            if chunk.output is not None:
                run.tokens += chunk.output.num_tokens
        run.first_token_s.append(first or 0.0)

    def tasks(run: Run) -> None:
        async def all_at_once() -> None:
            await asyncio.gather(*(astreamed(p, run) for p in batch))

        asyncio.run(all_at_once())

    def staggered(run: Run) -> None:
        async def one_after_another() -> None:
            callers = [asyncio.create_task(astreamed(batch[0], run))]
            for prompt in batch[1:]:
                await watch.next_step(callers[-1])
                callers.append(asyncio.create_task(astreamed(prompt, run)))
            await asyncio.gather(*callers)

        asyncio.run(one_after_another())

    return {
        "one batched call": one_call,
        "threads": threads,
        "asyncio": tasks,
        "staggered asyncio": staggered,
    }


def throughput(engine: BacoEngine, callers: int, length: int, repeats: int) -> list[dict]:
    batch = prompts(callers)
    kwargs = {**SETTINGS, "max_new_tokens": length}
    runs: dict[str, list[Run]] = {}
    for _ in range(repeats):  # modes interleaved: a slow spell of the machine hits them all
        for name, fn in modes(engine, batch, kwargs).items():
            runs.setdefault(name, []).append(measured(engine, fn))
    rows = []
    base = _median_run(runs["one batched call"])
    for name, measured_runs in runs.items():
        run = _median_run(measured_runs)
        rate = run.tokens / run.seconds
        ttft = statistics.median(run.first_token_s)
        rows.append(
            {
                "callers": callers,
                "how": name,
                "tokens": run.tokens,
                "seconds": round(run.seconds, 3),
                "tokens_per_s": round(rate, 1),
                "vs_one_call": round(rate / (base.tokens / base.seconds), 3),
                "ttft_p50_s": round(ttft, 3),
                "ttft_vs_one_call": round(ttft / base.first_token_s[0], 2),
                **run.work,
            }
        )
    return rows


def _median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.tokens / r.seconds)[len(runs) // 2]


def latency(engine: BacoEngine, repeats: int) -> dict:
    """A 16-token call while a 256-token call decodes, against the 16-token call alone."""
    short = {**SETTINGS, "max_new_tokens": 16}
    long = {**SETTINGS, "max_new_tokens": 256}
    alone = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.generate("A short one.", **short)
        alone.append(time.perf_counter() - start)
    beside = []
    for _ in range(repeats):
        stream = engine.stream("A long one, please.", **long)
        next(stream)  # the long call is decoding
        start = time.perf_counter()
        engine.generate("A short one.", **short)
        beside.append(time.perf_counter() - start)
        stream.close()
    alone_s, during = statistics.median(alone), statistics.median(beside)
    return {
        "short_alone_s": round(alone_s, 3),
        "short_beside_long_s": round(during, 3),
        "ratio": round(during / alone_s, 2),
    }


def markdown(rows: list[dict], late: dict) -> str:
    lines = [
        "| callers | how | tokens/s | vs one batched call | TTFT p50 s | vs batched | "
        "prefill rounds | base / aligned forwards |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['callers']} | {r['how']} | {r['tokens_per_s']} | {r['vs_one_call']:.2f}x | "
            f"{r['ttft_p50_s']} | {r['ttft_vs_one_call']:.2f}x | {r['prefill_rounds']} | "
            f"{r['base_forwards']} / {r['aligned_forwards']} |"
        )
    lines += [
        "",
        f"16-token call alone: {late['short_alone_s']} s; while a 256-token call decodes: "
        f"{late['short_beside_long_s']} s ({late['ratio']}x).",
    ]
    return "\n".join(lines)


def load(args: argparse.Namespace) -> BacoEngine:
    if args.offline:
        from baco_integrations.offline import converted_pair

        pair = converted_pair()
        args.base, args.aligned = str(pair.base_dir), str(pair.aligned_dir)
    elif args.base is None:
        from baco_integrations.testing import make_bench_pair

        pair = make_bench_pair(tempfile.mkdtemp(prefix="baco-bench-"))
        args.base, args.aligned = str(pair.base_dir), str(pair.aligned_dir)
    return BacoEngine.from_pretrained(args.base, args.aligned, device=args.device, dtype=args.dtype)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="base model id or directory (default: a local ~30M pair)")
    parser.add_argument("--aligned", help="aligned model id or directory")
    parser.add_argument("--offline", action="store_true", help="the offline real pair")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--callers", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-latency", action="store_true", help="skip the latency check")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    engine = load(args)
    engine.generate("warm up", max_new_tokens=4)
    rows = [r for c in args.callers for r in throughput(engine, c, args.length, args.repeats)]
    late = {"short_alone_s": 0, "short_beside_long_s": 0, "ratio": 0}
    if not args.no_latency:
        late = latency(engine, args.repeats)
    meta = {
        "device": str(engine.device),
        "dtype": str(engine.aligned_model.dtype),
        "torch_threads": torch.get_num_threads(),
        "length": args.length,
        "base": args.base,
        "aligned": args.aligned,
        "admission_wait_steps": engine.limits.admission_wait_steps,
    }
    table = markdown(rows, late)
    stem = "concurrency_offline" if args.offline else "concurrency"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.md").write_text(f"{json.dumps(meta)}\n\n{table}\n", encoding="utf-8")
    (args.out / f"{stem}.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "latency": late}, indent=2), encoding="utf-8"
    )
    print(json.dumps(meta))
    print(table)


if __name__ == "__main__":
    main()
