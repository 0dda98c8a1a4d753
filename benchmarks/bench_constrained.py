"""Per-token cost of constrained decoding (a JSON schema) against free decoding, in one process.

The same prompt, settings and seed are decoded twice per configuration: free, and under a JSON
schema (``constraint=``). The schema is an object holding a list of unbounded strings, so a
random model under it keeps writing (a string ends only when the quote is drawn) and both runs
go the full length: the two are compared on equal numbers of steps. The measured runs
alternate (free, constrained, free, ...) so that a change in machine load hits both alike.

Per-token time is (time for L tokens - time for 1 token) / (steps - 1), as in
benchmarks/bench_decode.py: the prompt prefill, and the constrained call's fixed costs
(building its matchers, compiling the grammar), are left out; those fixed costs are reported
separately (time for 1 token, constrained minus free). The ratio constrained / free per token is
the cost of the grammar masks: one llguidance mask per sample and model whose distribution a
step reads, applied to every distribution the step reads (docs/structured.md).

    python benchmarks/bench_constrained.py                  # ~30M-parameter local pairs, CPU
    python benchmarks/bench_constrained.py --pairs shared   # only the shared-tokenizer pair

Two pairs of ~30M parameters per model (as in bench_decode.py): one sharing an 8000-token
tokenizer (one matcher per sample), and a cross-family one (aligned vocabulary 6000: one
matcher per sample and model, each following its model's re-tokenization of the text).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from baco_integrations import BacoEngine
from baco_integrations.constraints import Constraint

PROMPT = "Brainstorm names for a coffee shop."
#: Unbounded strings: a random model under this schema decodes to the token budget.
SCHEMA = {
    "type": "object",
    "properties": {"names": {"type": "array", "items": {"type": "string"}}},
    "required": ["names"],
}
ROUTERS = ("aligned", "P-PUNC")
#: Pair name -> the aligned vocabulary size (None: the base model's tokenizer, shared).
PAIRS: dict[str, int | None] = {"shared": None, "cross-family": 6000}


@dataclass
class Row:
    pair: str
    router: str
    batch: int
    length: int
    free_ms_per_token: float
    constrained_ms_per_token: float
    ratio: float
    constrained_overhead_ms: float
    free_steps: int
    constrained_steps: int
    free_tokens: float
    constrained_tokens: float
    constrained_length_finished: float


def _run(engine: BacoEngine, settings: dict[str, Any], tokens: int) -> tuple[float, int, list]:
    start = time.perf_counter()
    outputs = engine.generate(PROMPT, max_new_tokens=tokens, **settings)[0]
    seconds = time.perf_counter() - start
    return seconds, engine.last_stats.steps, outputs


def bench(
    engine: BacoEngine, pair: str, batch_sizes: list[int], lengths: list[int], repeats: int
) -> list[Row]:
    constraint = Constraint.from_schema(SCHEMA)
    rows: list[Row] = []
    for router in ROUTERS:
        for batch in batch_sizes:
            for length in lengths:
                common = {"router": router, "gamma": 0.5, "n": batch, "seed": 0}
                modes = {"free": common, "constrained": {**common, "constraint": constraint}}
                times: dict[tuple[str, int], list[float]] = {}
                steps: dict[str, int] = {}
                outputs: dict[str, list] = {}
                for _ in range(repeats):
                    for tokens in (length, 1):
                        for mode, settings in modes.items():  # alternate the two
                            seconds, n_steps, outs = _run(engine, settings, tokens)
                            times.setdefault((mode, tokens), []).append(seconds)
                            if tokens == length:
                                steps[mode], outputs[mode] = n_steps, outs
                per_token = {
                    mode: (
                        statistics.median(times[(mode, length)])
                        - statistics.median(times[(mode, 1)])
                    )
                    / max(steps[mode] - 1, 1)
                    for mode in modes
                }
                overhead = statistics.median(times[("constrained", 1)]) - statistics.median(
                    times[("free", 1)]
                )
                rows.append(
                    Row(
                        pair=pair,
                        router=router,
                        batch=batch,
                        length=length,
                        free_ms_per_token=per_token["free"] * 1e3,
                        constrained_ms_per_token=per_token["constrained"] * 1e3,
                        ratio=per_token["constrained"] / per_token["free"],
                        constrained_overhead_ms=overhead * 1e3,
                        free_steps=steps["free"],
                        constrained_steps=steps["constrained"],
                        free_tokens=statistics.fmean(o.num_tokens for o in outputs["free"]),
                        constrained_tokens=statistics.fmean(
                            o.num_tokens for o in outputs["constrained"]
                        ),
                        constrained_length_finished=statistics.fmean(
                            o.finish_reason == "length" for o in outputs["constrained"]
                        ),
                    )
                )
                print(f"done: {pair}, {router}, batch {batch}, length {length}", flush=True)
    return rows


def markdown(rows: list[Row]) -> str:
    head = (
        "| pair | router | batch | length | free ms/step | constrained ms/step | ratio "
        "| constrained fixed cost (ms) | steps free / constrained "
        "| tokens per sample free / constrained |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r.pair} | {r.router} | {r.batch} | {r.length} | {r.free_ms_per_token:.2f} "
        f"| {r.constrained_ms_per_token:.2f} | {r.ratio:.3f} | {r.constrained_overhead_ms:.1f} "
        f"| {r.free_steps} / {r.constrained_steps} "
        f"| {r.free_tokens:.0f} / {r.constrained_tokens:.0f} |\n"
        for r in rows
    )
    return head + body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--pairs", nargs="+", choices=PAIRS, default=list(PAIRS), help="which pairs to time"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from baco_integrations.testing import make_tiny_pair

    rows: list[Row] = []
    parameters: dict[str, int] = {}
    for name in args.pairs:
        # ~30M parameters per model, as benchmarks/bench_decode.py
        pair = make_tiny_pair(
            tempfile.mkdtemp(prefix="baco-bench-"),
            vocab_size=8000,
            aligned_vocab_size=PAIRS[name],
            hidden_size=512,
            num_layers=6,
            max_position_embeddings=1024,
        )
        engine = BacoEngine.from_pretrained(pair.base_dir, pair.aligned_dir)
        parameters[name] = sum(p.numel() for p in engine.aligned_model.parameters())
        # warm up: the first calls build llguidance's view of each vocabulary (once per
        # tokenizer) and the models' first steps
        for constraint in (None, Constraint.from_schema(SCHEMA)):
            engine.generate(PROMPT, router="P-PUNC", max_new_tokens=4, constraint=constraint)
        rows += bench(engine, name, args.batch_sizes, args.lengths, args.repeats)
    table = markdown(rows)
    meta = {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "aligned_parameters": parameters,
        "pairs": {name: f"base 8000 tokens, aligned {PAIRS[name] or 8000}" for name in args.pairs},
        "schema": SCHEMA,
        "prompt": PROMPT,
        "repeats": args.repeats,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "constrained.md").write_text(f"{json.dumps(meta)}\n\n{table}", encoding="utf-8")
    (args.out / "constrained.json").write_text(
        json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n",
        encoding="utf-8",
    )
    print(json.dumps(meta))
    print(table)


if __name__ == "__main__":
    main()
