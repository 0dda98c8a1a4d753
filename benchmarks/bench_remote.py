"""BACO over two llama.cpp servers against the in-process engine, on the offline real pair.

In one run, on the same pair (the offline pair's GGUF files: Gemma-3-270m base,
SmolLM2-135M-Instruct aligned), router and settings:

* **each engine alone**: the llama-servers generating the same number of tokens by
  themselves (their own sampling; the baseline a user of those engines has today);
* **BACO in process**: ``BacoEngine.from_pretrained`` on the same GGUF files;
* **BACO over endpoints**: ``BacoEngine.from_endpoints`` in front of the two servers, for each
  draft length asked (``Endpoint.draft_tokens``).

For the same 8 prompts sent 1 and 8 at a time it reports generated tokens per second, HTTP
round trips per generated token (target: at most 0.5 at a base share near 0.3), the seconds
the loop waited on each engine, and the base share. The machine's cores are shared by both
servers and this process, so the ratios, not the absolute figures, are the result.

    bash scripts/build_llama_server.sh && python -m baco_integrations.offline --no-convert
    python benchmarks/bench_remote.py                  # writes benchmarks/results/remote.*
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import torch

from baco_integrations import BacoEngine, llama_server
from baco_integrations.offline import OfflinePair, offline_pair
from baco_integrations.runners.remote import Endpoint, EndpointRunner


def prompts(count: int) -> list[str]:
    topics = ["a coffee shop", "a rainy weekend", "a science fair", "a garden", "a podcast"]
    return [f"Brainstorm ideas for {topics[i % len(topics)]} (list {i})." for i in range(count)]


def concurrently(
    fn: Callable[[str], tuple[int, float]], batch: list[str], callers: int
) -> tuple[int, float]:
    """Run ``fn`` on every prompt, ``callers`` at a time; total tokens and base tokens."""
    with ThreadPoolExecutor(callers) as pool:
        results = list(pool.map(fn, batch))
    return sum(r[0] for r in results), sum(r[1] for r in results)


def timed(fn: Callable[[], tuple[int, float]], repeats: int) -> dict[str, float]:
    times, tokens, base = [], 0, 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        tokens, base = fn()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "base_share": base / max(tokens, 1),
    }


def engine_alone(url: str, ids: list[int], settings: dict[str, Any]) -> tuple[int, float]:
    reply = httpx.post(
        f"{url}/completions",
        json={
            "prompt": ids,
            "max_tokens": settings["max_new_tokens"],
            "temperature": settings["temperature"],
            "top_k": 0,
            "min_p": 0.0,
            "seed": settings["seed"],
            "cache_prompt": True,
        },
        timeout=600,
    ).json()
    return int(reply["usage"]["completion_tokens"]), 0.0


def baco(engine: BacoEngine, settings: dict[str, Any]) -> Callable[[str], tuple[int, float]]:
    def call(prompt: str) -> tuple[int, float]:
        (out,) = engine.generate(prompt, **settings)[0]
        return out.num_tokens, out.base_fraction * out.num_tokens

    return call


def remote_counters(engine: BacoEngine) -> dict[str, float]:
    totals: dict[str, float] = {}
    for name, member in zip(("base", "aligned"), engine.pair.members, strict=True):
        runner = member.runner
        assert isinstance(runner, EndpointRunner)
        totals[f"{name}_requests"] = runner.requests
        totals[f"{name}_wait_s"] = runner.waited_s
        totals[f"{name}_drafted"] = runner.drafted_tokens
    return totals


def measure_remote(
    engine: BacoEngine, settings: dict[str, Any], batch: list[str], callers: int, repeats: int
) -> dict[str, float]:
    before = remote_counters(engine)
    row = timed(partial(concurrently, baco(engine, settings), batch, callers), repeats)
    after = remote_counters(engine)
    spent = {k: (after[k] - before[k]) / repeats for k in after}
    row.update(spent)
    row["round_trips_per_token"] = (spent["base_requests"] + spent["aligned_requests"]) / max(
        row["tokens"], 1
    )
    return row


@contextmanager
def endpoints(args: argparse.Namespace, pair: OfflinePair | None) -> Iterator[dict[str, str]]:
    """The two servers' URLs: those given (``--base-url``), or two llama-servers started here
    on the offline pair's GGUF files."""
    if args.base_url:
        yield {"base": args.base_url, "aligned": args.aligned_url}
        return
    assert pair is not None
    executable = llama_server.binary()
    if executable is None:
        raise SystemExit("llama-server is not built: bash scripts/build_llama_server.sh")
    ggufs = {"base": pair.base_path, "aligned": pair.aligned_path}
    with llama_server.serving(executable, ggufs, slots=max(args.concurrency)) as servers:
        yield {side: server.url for side, server in servers.items()}


def local_engine(args: argparse.Namespace, pair: OfflinePair | None) -> BacoEngine:
    """The same pair in this process: ``--base``/``--aligned`` or the offline pair's GGUFs."""
    if args.base:
        return BacoEngine.from_pretrained(args.base, args.aligned, device=args.device)
    assert pair is not None
    return BacoEngine.from_pretrained(
        pair.base_dir,
        pair.aligned_dir,
        base_gguf_file=pair.base_gguf_file,
        aligned_gguf_file=pair.aligned_gguf_file,
        device=args.device,
    )


def run(args: argparse.Namespace, pair: OfflinePair | None) -> list[dict[str, Any]]:
    settings = {
        "router": args.router,
        "gamma": args.gamma,
        "temperature": 1.0,
        "max_new_tokens": args.length,
        "seed": 0,
    }
    if args.gate:
        settings["gate"] = args.gate
    local = local_engine(args, pair)
    rows: list[dict[str, Any]] = []
    with endpoints(args, pair) as urls:
        batch = prompts(args.prompts)  # the same prompts in every mode
        for callers in args.concurrency:
            for side in ("base", "aligned"):
                ids = {p: local.encode_prompts(p)[side] for p in batch}
                url = urls[side]

                def alone_call(p: str, url: str = url, ids: dict = ids) -> tuple[int, float]:
                    return engine_alone(url, ids[p], settings)

                alone = timed(partial(concurrently, alone_call, batch, callers), args.repeats)
                rows.append({"mode": f"{side} engine alone", "callers": callers, **alone})
            row = timed(partial(concurrently, baco(local, settings), batch, callers), args.repeats)
            rows.append({"mode": "BACO in process", "callers": callers, **row})
            for draft in args.draft_tokens:
                remote = BacoEngine.from_endpoints(
                    Endpoint(url=urls["base"], draft_tokens=draft),
                    Endpoint(url=urls["aligned"], draft_tokens=draft),
                    base_tokenizer=local.base_tokenizer,  # the same, read from the GGUF files
                    aligned_tokenizer=local.aligned_tokenizer,
                )
                try:
                    row = measure_remote(remote, settings, batch, callers, args.repeats)
                finally:
                    remote.shutdown()
                mode = f"BACO over endpoints (draft {draft})"
                rows.append({"mode": mode, "callers": callers, **row})
                print(json.dumps(rows[-1]), flush=True)
    local.shutdown()
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| mode | callers | tokens/s | base share | round trips/token | wait base s | "
        "wait aligned s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        trips = f"{r['round_trips_per_token']:.2f}" if "round_trips_per_token" in r else "—"
        waits = [f"{r[k]:.1f}" if k in r else "—" for k in ("base_wait_s", "aligned_wait_s")]
        lines.append(
            f"| {r['mode']} | {r['callers']} | {r['tokens_per_s']:.1f} | "
            f"{r['base_share']:.2f} | {trips} | {waits[0]} | {waits[1]} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", default="P-PUNC")
    parser.add_argument("--gamma", type=float, default=0.2, help="0.2: a base share near 0.3")
    parser.add_argument(
        "--gate",
        choices=["base", "aligned"],
        help="the model P/H read (default: the router's own, base): with aligned, the base "
        "model is asked only at the words it writes",
    )
    parser.add_argument("--prompts", type=int, default=8, help="prompts per mode")
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--draft-tokens", type=int, nargs="+", default=[16])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads here")
    parser.add_argument("--cache", help="cache holding the offline pair's GGUF files")
    parser.add_argument("--base-url", help="a running base server (else llama-servers here)")
    parser.add_argument("--aligned-url", help="a running aligned server")
    parser.add_argument("--base", help="with --base-url: the same base model here (hub id)")
    parser.add_argument("--aligned", help="with --aligned-url: the same aligned model here")
    parser.add_argument("--device", default="cpu", help="device of the in-process engine")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if bool(args.base_url) != bool(args.aligned_url) or bool(args.base_url) != bool(args.base):
        parser.error("--base-url, --aligned-url, --base and --aligned go together")
    rows = run(args, None if args.base_url else offline_pair(args.cache, install=False))
    meta = {
        "router": args.router,
        "gamma": args.gamma,
        "gate": args.gate or "base",
        "length": args.length,
        "prompts": args.prompts,
        "repeats": args.repeats,
        "torch_threads": args.threads,
        "servers": args.base_url
        and f"{args.base_url} {args.aligned_url}"
        or f"llama-server {llama_server.VERSION}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"remote-gate-{args.gate}" if args.gate else "remote"
    (args.out / f"{stem}.md").write_text(f"{json.dumps(meta)}\n\n{table(rows)}\n", encoding="utf-8")
    (args.out / f"{stem}.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2), encoding="utf-8"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
