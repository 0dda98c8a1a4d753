"""How well ``base_share`` tracks its target, against a fixed γ, on held-out prompts.

On the offline pair (or ``--base``/``--aligned``), the packaged held-out prompts, ``n``
samples each, P-PUNC, temperature 1, ``--length`` tokens: for each target, every sample's
realized base share (``base_fraction``), the mean |realized - target| and the spread
(standard deviation) of the per-sample shares; then for each target the fixed γ whose mean
share is closest (searched over ``--gammas``) and the spread of its per-sample shares.
Also the cost of the guard: tokens/s with ``guard`` off and on at one target.

    python benchmarks/bench_share.py           # writes benchmarks/results/share.{md,json}
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from baco_integrations import BacoEngine
from baco_integrations.evaluation.sweep.prompts import load_prompts

FULL: dict[str, list[float]] = {}  # per run: the shares of samples that used the whole budget


def shares(engine: BacoEngine, prompts: list[str], **settings: Any) -> tuple[list[float], float]:
    start = time.perf_counter()
    outs = engine.generate(prompts, **settings)
    seconds = time.perf_counter() - start
    samples = [o for row in outs for o in row]
    key = json.dumps(settings, sort_keys=True, default=str)
    FULL[key] = [o.base_fraction for o in samples if o.num_tokens == settings["max_new_tokens"]]
    return [o.base_fraction for o in samples], sum(o.num_tokens for o in samples) / seconds


def full_spread(**settings: Any) -> str:
    values = FULL.get(json.dumps(settings, sort_keys=True, default=str), [])
    return f"{statistics.pstdev(values):.3f} (of {len(values)})" if len(values) > 1 else "—"


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, prompts: int) -> list[str]:
    """The report's lines: a header and one table row per target."""
    lines = [
        f"{args.router}, {prompts} prompts ({args.prompts}) x n={args.n}, "
        f"{args.length} tokens, guard {args.guard}",
        "",
        "| target | mean share | mean abs error | spread | spread, full-length samples | "
        "fixed γ (same mean) | its mean | its spread | its spread, full-length | "
        "guard: mean share | guard: tokens/s vs off |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']:.1f} | {r['mean_share']:.3f} | {r['mean_abs_error']:.3f} | "
            f"{r['spread']:.3f} | {r['full_spread']} | {r['fixed_gamma']} | "
            f"{r['fixed_mean_share']:.3f} | {r['fixed_spread']:.3f} | "
            f"{r['fixed_full_spread']} | {r['guarded_mean_share']:.3f} | "
            f"{r['guarded_tokens_per_s'] / r['tokens_per_s']:.2f}x |"
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base")
    parser.add_argument("--aligned")
    parser.add_argument("--router", default="P-PUNC")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    parser.add_argument(
        "--gammas", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    )
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--prompts", default="builtin:heldout")
    parser.add_argument("--guard", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.base is None:
        from baco_integrations.offline import converted_pair

        pair = converted_pair(install=False)
        args.base, args.aligned = str(pair.base_dir), str(pair.aligned_dir)
    engine = BacoEngine.from_pretrained(args.base, args.aligned)
    prompts = [p.prompt for p in load_prompts(args.prompts)]
    common = dict(router=args.router, n=args.n, max_new_tokens=args.length, seed=0)
    fixed = {}
    for gamma in args.gammas:
        values, _ = shares(engine, prompts, gamma=gamma, **common)
        fixed[gamma] = values
        print("gamma", gamma, round(statistics.mean(values), 3), flush=True)
    rows = []
    for target in args.targets:
        values, speed = shares(engine, prompts, base_share=target, **common)
        guarded, guarded_speed = [math.nan], math.nan
        if args.guard:  # across families it checks each base word's opening token
            guarded, guarded_speed = shares(
                engine, prompts, base_share=target, guard=args.guard, **common
            )
        gamma = min(fixed, key=lambda g: abs(statistics.mean(fixed[g]) - statistics.mean(values)))
        rows.append(
            {
                "full_spread": full_spread(base_share=target, **common),
                "fixed_full_spread": full_spread(gamma=gamma, **common),
                "target": target,
                "mean_share": statistics.mean(values),
                "mean_abs_error": statistics.mean(abs(v - target) for v in values),
                "spread": statistics.pstdev(values),
                "fixed_gamma": gamma,
                "fixed_mean_share": statistics.mean(fixed[gamma]),
                "fixed_spread": statistics.pstdev(fixed[gamma]),
                "tokens_per_s": speed,
                "guarded_mean_share": statistics.mean(guarded),
                "guarded_tokens_per_s": guarded_speed,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    lines = markdown(rows, args, len(prompts))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "share.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (args.out / "share.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "rows": rows,
                "fixed": {str(g): v for g, v in fixed.items()},
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
