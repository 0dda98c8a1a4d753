"""Per-token decoding cost of BACO against what a user would run instead, in one process.

Times, for each batch size (n samples of one prompt) and generation length:

* the aligned model alone and the base model alone through transformers ``generate``
  (sampled at temperature 1, forced to the full length): the baselines;
* BACO lock-step (``lazy=False``) and lazy for the routers ``aligned``, ``random``, ``P``,
  ``PUNC``, ``P-PUNC``.

Per-token time is (time for L tokens - time for 1 token) / (steps - 1), so the prompt prefill is
left out. Reports tokens/s, the ratio to the aligned-alone baseline and to the two-model limit
(base alone + aligned alone), each model's share of tokens and forward passes, and peak memory,
as a markdown table and JSON.

    python benchmarks/bench_decode.py                       # ~30M-parameter local pair, CPU
    python benchmarks/bench_decode.py --base Qwen/Qwen2.5-0.5B \\
        --aligned Qwen/Qwen2.5-0.5B-Instruct --device cuda --batch-sizes 1 4 16 --lengths 128 512
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from baco_integrations import BacoEngine
from baco_integrations.decoding.pair import pad_id
from baco_integrations.runners import CACHE_IMPLEMENTATIONS

PROMPT = "Brainstorm names for a coffee shop."
ROUTERS = ("aligned", "random", "P", "PUNC", "P-PUNC")


@dataclass
class Row:
    method: str
    batch: int
    length: int
    ms_per_token: float
    tokens_per_s: float
    vs_aligned: float
    vs_two_model_limit: float
    base_share: float
    base_passes: int
    aligned_passes: int
    steps: int
    peak_mem_mb: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water
    except ImportError:  # pragma: no cover - not on Linux
        return float("nan")


def _timed(fn: Callable[[], int], device: torch.device, repeats: int) -> tuple[float, int]:
    """Median seconds of ``fn`` over ``repeats`` runs, and the steps it reported."""
    times, steps = [], 0
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        steps = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), steps


def per_token(
    run: Callable[[int], int], length: int, device: torch.device, repeats: int
) -> tuple[float, int]:
    """Seconds per decoding step, prefill excluded."""
    full, steps = _timed(lambda: run(length), device, repeats)
    first, _ = _timed(lambda: run(1), device, repeats)
    return (full - first) / max(steps - 1, 1), steps


def bench(
    engine: BacoEngine, batch_sizes: list[int], lengths: list[int], repeats: int
) -> list[Row]:
    device = engine.device
    rows: list[Row] = []
    for batch in batch_sizes:
        for length in lengths:
            baselines: dict[str, float] = {}
            for side, model in (("aligned", engine.aligned_model), ("base", engine.base_model)):
                ids = torch.tensor([engine.encode_prompts(PROMPT)[side]] * batch, device=device)
                mask = torch.ones_like(ids)

                def hf(tokens: int, model=model, ids=ids, mask=mask) -> int:
                    # sampled like BACO's default: temperature 1, no truncation
                    model.generate(
                        ids,
                        attention_mask=mask,
                        do_sample=True,
                        temperature=1.0,
                        top_k=0,
                        top_p=1.0,
                        max_new_tokens=tokens,
                        min_new_tokens=tokens,
                        pad_token_id=pad_id(engine.aligned_tokenizer),
                        # the same kind of cache as BACO's (on CUDA, generate compiles its
                        # steps with a static cache, as BACO does with --compile)
                        cache_implementation=engine.cache_implementation,
                    )
                    return tokens

                _peak_reset(device)
                seconds, steps = per_token(hf, length, device, repeats)
                baselines[side] = seconds
                rows.append(
                    Row(
                        f"{side} alone (generate)",
                        batch,
                        length,
                        seconds * 1e3,
                        batch / seconds,
                        0.0,
                        0.0,
                        float(side == "base"),
                        0,
                        0,
                        steps,
                        _peak_mb(device),
                    )
                )
            limit = baselines["aligned"] + baselines["base"]
            for row in rows[-2:]:
                row.vs_aligned = row.ms_per_token / 1e3 / baselines["aligned"]
                row.vs_two_model_limit = row.ms_per_token / 1e3 / limit
            for router in ROUTERS:
                for lazy in (False, True):
                    share: list[float] = []

                    def baco(
                        tokens: int, router=router, lazy=lazy, share=share, batch=batch
                    ) -> int:
                        outs = engine.generate(
                            PROMPT,
                            router=router,
                            gamma=0.5,
                            n=batch,
                            max_new_tokens=tokens,
                            seed=0,
                            lazy=lazy,
                        )
                        share.append(
                            statistics.fmean(o.base_fraction for o in outs[0] if o.num_tokens)
                            if any(o.num_tokens for o in outs[0])
                            else 0.0
                        )
                        return engine.last_stats.steps

                    _peak_reset(device)
                    seconds, steps = per_token(baco, length, device, repeats)
                    # re-run once at full length to read its forward-pass counts
                    baco(length)
                    stats = engine.last_stats
                    rows.append(
                        Row(
                            f"BACO {router} {'lazy' if lazy else 'lock-step'}",
                            batch,
                            length,
                            seconds * 1e3,
                            batch / seconds,
                            seconds / baselines["aligned"],
                            seconds / limit,
                            share[-1],
                            stats.base_forward_passes,
                            stats.aligned_forward_passes,
                            steps,
                            _peak_mb(device),
                        )
                    )
            print(f"done: batch {batch}, length {length}", flush=True)
    return rows


def markdown(rows: list[Row]) -> str:
    head = (
        "| method | batch | length | ms/token | tokens/s | × aligned alone | × two-model limit "
        "| base share | base fwd | aligned fwd | peak MB |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r.method} | {r.batch} | {r.length} | {r.ms_per_token:.2f} | {r.tokens_per_s:.0f} "
        f"| {r.vs_aligned:.2f} | {r.vs_two_model_limit:.2f} | {r.base_share:.2f} "
        f"| {r.base_passes} | {r.aligned_passes} | {r.peak_mem_mb:.0f} |\n"
        for r in rows
    )
    return head + body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="base model id or directory (default: a local ~30M pair)")
    parser.add_argument("--aligned", help="aligned model id or directory")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 96])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--cache-implementation",
        choices=CACHE_IMPLEMENTATIONS,
        default="dynamic",
        help="BACO's KV cache: grown (dynamic) or preallocated (static)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile BACO's single-token steps (needs --cache-implementation static)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.base is None:
        from baco_integrations.testing import make_bench_pair

        pair = make_bench_pair(tempfile.mkdtemp(prefix="baco-bench-"))
        args.base, args.aligned = str(pair.base_dir), str(pair.aligned_dir)
    engine = BacoEngine.from_pretrained(
        args.base,
        args.aligned,
        device=args.device,
        dtype=args.dtype,
        cache_implementation=args.cache_implementation,
        compile=args.compile,
    )
    params = sum(p.numel() for p in engine.aligned_model.parameters())
    rows = bench(engine, args.batch_sizes, args.lengths, args.repeats)
    table = markdown(rows)
    meta = {
        "device": str(engine.device),
        "dtype": str(engine.aligned_model.dtype),
        "parameters_per_model": params,
        "torch_threads": torch.get_num_threads(),
        "cache_implementation": args.cache_implementation,
        "compile": args.compile,
        "base": args.base,
        "aligned": args.aligned,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "decode" if args.cache_implementation == "dynamic" else "decode-static"
    stem += "-compiled" if args.compile else ""
    (args.out / f"{stem}.md").write_text(f"{json.dumps(meta)}\n\n{table}", encoding="utf-8")
    (args.out / f"{stem}.json").write_text(
        json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2), encoding="utf-8"
    )
    print(json.dumps(meta))
    print(table)


if __name__ == "__main__":
    main()
