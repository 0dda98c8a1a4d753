"""What continuous batching gives concurrent callers, against one batched call, in one process.

For 8 and 32 callers (each with its own prompt, same settings) it times:

* one ``engine.generate`` of all the prompts at once (the baseline: one batch from the start);
* the same prompts as concurrent calls from threads (``engine.generate`` each);
* the same prompts as concurrent asyncio tasks (``engine.agenerate`` each).

It reports generated tokens per second and the ratio to the baseline (target: at least 0.9 on
CPU). Then the latency of a 16-token call submitted while a 256-token call runs, against the
16-token call alone (target: within 3x).

    python benchmarks/bench_concurrency.py                 # ~30M-parameter local pair, CPU
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
from pathlib import Path
from typing import Any

import torch

from baco_integrations import BacoEngine

SETTINGS: dict[str, Any] = {"router": "P-PUNC", "gamma": 0.5, "seed": 0}


def prompts(count: int) -> list[str]:
    return [f"Brainstorm name number {i} for a coffee shop." for i in range(count)]


def _tokens(outputs: list[list[Any]]) -> int:
    return sum(o.num_tokens for row in outputs for o in row)


def timed(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    """Median seconds of ``fn`` and the tokens it generated."""
    times, tokens = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), tokens


def throughput(engine: BacoEngine, callers: int, length: int, repeats: int) -> list[dict]:
    batch = prompts(callers)
    kwargs = {**SETTINGS, "max_new_tokens": length}

    def one_call() -> int:
        return _tokens(engine.generate(batch, **kwargs))

    def threads() -> int:
        with ThreadPoolExecutor(callers) as pool:
            return sum(pool.map(lambda p: _tokens(engine.generate(p, **kwargs)), batch))

    def tasks() -> int:
        async def run() -> int:
            outs = await asyncio.gather(*(engine.agenerate(p, **kwargs) for p in batch))
            return sum(map(_tokens, outs))

        return asyncio.run(run())

    rows = []
    base_s, base_tokens = timed(one_call, repeats)
    for name, fn in (("one batched call", one_call), ("threads", threads), ("asyncio", tasks)):
        seconds, tokens = (base_s, base_tokens) if fn is one_call else timed(fn, repeats)
        rate = tokens / seconds
        rows.append(
            {
                "callers": callers,
                "how": name,
                "tokens": tokens,
                "seconds": round(seconds, 3),
                "tokens_per_s": round(rate, 1),
                "vs_one_call": round(rate / (base_tokens / base_s), 3),
            }
        )
    return rows


def latency(engine: BacoEngine, repeats: int) -> dict:
    """A 16-token call while a 256-token call decodes, against the 16-token call alone."""
    short = {**SETTINGS, "max_new_tokens": 16}
    long = {**SETTINGS, "max_new_tokens": 256}
    alone, _ = timed(lambda: _tokens(engine.generate("A short one.", **short)), repeats)
    beside = []
    for _ in range(repeats):
        stream = engine.stream("A long one, please.", **long)
        next(stream)  # the long call is decoding
        start = time.perf_counter()
        engine.generate("A short one.", **short)
        beside.append(time.perf_counter() - start)
        stream.close()
    during = statistics.median(beside)
    return {
        "short_alone_s": round(alone, 3),
        "short_beside_long_s": round(during, 3),
        "ratio": round(during / alone, 2),
    }


def markdown(rows: list[dict], late: dict) -> str:
    lines = [
        "| callers | how | tokens | seconds | tokens/s | vs one batched call |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['callers']} | {r['how']} | {r['tokens']} | {r['seconds']} | "
            f"{r['tokens_per_s']} | {r['vs_one_call']:.2f}x |"
        )
    lines += [
        "",
        f"16-token call alone: {late['short_alone_s']} s; while a 256-token call decodes: "
        f"{late['short_beside_long_s']} s ({late['ratio']}x).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="base model id or directory (default: a local ~30M pair)")
    parser.add_argument("--aligned", help="aligned model id or directory")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--callers", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.base is None:
        from baco_integrations.testing import make_bench_pair

        pair = make_bench_pair(tempfile.mkdtemp(prefix="baco-bench-"))
        args.base, args.aligned = str(pair.base_dir), str(pair.aligned_dir)
    engine = BacoEngine.from_pretrained(
        args.base, args.aligned, device=args.device, dtype=args.dtype
    )
    engine.generate("warm up", max_new_tokens=4)
    rows = [r for c in args.callers for r in throughput(engine, c, args.length, args.repeats)]
    late = latency(engine, args.repeats)
    meta = {
        "device": str(engine.device),
        "dtype": str(engine.aligned_model.dtype),
        "torch_threads": torch.get_num_threads(),
        "length": args.length,
        "base": args.base,
        "aligned": args.aligned,
    }
    table = markdown(rows, late)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "concurrency.md").write_text(f"{json.dumps(meta)}\n\n{table}\n", encoding="utf-8")
    (args.out / "concurrency.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "latency": late}, indent=2), encoding="utf-8"
    )
    print(json.dumps(meta))
    print(table)


if __name__ == "__main__":
    main()
