"""What recording token log-probs costs: the same calls with ``logprobs`` off and on.

For each pair (the ~30M-parameter local bench pair, and with ``--offline`` the offline real
pair: Gemma-3-270m base, SmolLM2-135M-Instruct aligned), one call of ``n`` samples of one
prompt, P-PUNC, temperature 1, a fixed seed (so every mode draws the same tokens), is timed
with log-probs off, on (``top_logprobs=0``) and on with ``top_logprobs=5``. Modes alternate
within each repeat so that drift on a shared machine falls on all of them alike; the median
per-token time of each mode and its ratio to "off" are reported (target: at most 1.05 at
top-k 5 on CPU). The whole call is timed, so the one catch-up forward that scores each
sample's end (docs/logprobs.md) is included.

    python benchmarks/bench_logprobs.py                    # writes benchmarks/results/logprobs.*
    python benchmarks/bench_logprobs.py --offline          # the offline pair too
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from baco_integrations import BacoEngine

PROMPT = "Brainstorm names for a coffee shop."
MODES: dict[str, dict[str, Any]] = {
    "off": {},
    "logprobs": {"logprobs": True},
    "logprobs, top 5": {"logprobs": True, "top_logprobs": 5},
}


def measure(engine: BacoEngine, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    settings = {
        "router": "P-PUNC",
        "gamma": 0.3,
        "n": args.n,
        "max_new_tokens": args.length,
        "temperature": 1.0,
        "seed": 0,
    }
    engine.generate(PROMPT, **{**settings, "max_new_tokens": 4})  # warm-up
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    tokens: dict[str, int] = {}
    for _ in range(args.repeats):
        for mode, extra in MODES.items():
            start = time.perf_counter()
            (outs,) = engine.generate(PROMPT, **settings, **extra)
            times[mode].append(time.perf_counter() - start)
            tokens[mode] = sum(o.num_tokens for o in outs)
    assert len(set(tokens.values())) == 1, "log-probs changed what was drawn"
    off = statistics.median(times["off"]) / tokens["off"]
    rows = {}
    for mode in MODES:
        per_token = statistics.median(times[mode]) / tokens[mode]
        rows[mode] = {"ms_per_token": 1000 * per_token, "vs_off": per_token / off}
    return rows


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = ["| pair | mode | ms/token | vs off |", "|---|---|---|---|"]
    for pair, rows in results.items():
        for mode, row in rows.items():
            lines.append(f"| {pair} | {mode} | {row['ms_per_token']:.2f} | {row['vs_off']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4, help="samples per call")
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--offline", action="store_true", help="also the offline real pair")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from baco_integrations.testing import make_bench_pair

    bench = make_bench_pair(tempfile.mkdtemp(prefix="baco-bench-"))
    pairs = {"bench pair (~30M)": (str(bench.base_dir), str(bench.aligned_dir))}
    if args.offline:
        from baco_integrations.offline import converted_pair

        real = converted_pair(install=False)
        pairs["offline pair"] = (str(real.base_dir), str(real.aligned_dir))
    results = {}
    for name, (base, aligned) in pairs.items():
        engine = BacoEngine.from_pretrained(base, aligned)
        results[name] = measure(engine, args)
        engine.shutdown()
        print(name, json.dumps(results[name]), flush=True)
    meta = {k: getattr(args, k) for k in ("n", "length", "repeats", "threads")}
    args.out.mkdir(parents=True, exist_ok=True)
    text = f"{json.dumps(meta)}\n\n{table(results)}\n"
    (args.out / "logprobs.md").write_text(text, encoding="utf-8")
    (args.out / "logprobs.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2), encoding="utf-8"
    )
    print(table(results))


if __name__ == "__main__":
    main()
