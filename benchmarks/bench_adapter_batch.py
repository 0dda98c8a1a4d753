"""``ChatBaco.batch`` against ``BacoLLM.batch`` of the same prompts, in one process.

Both should be one engine call (issue 26: target within 1.1x). Each repeat times both, in
alternating order; it reports the median seconds and the ratio, and the engine submissions
each made.

    python benchmarks/bench_adapter_batch.py --offline     # the offline real pair, CPU
    python benchmarks/bench_adapter_batch.py               # the ~30M-parameter bench pair
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

from baco_integrations import BacoEngine
from baco_integrations.langchain import BacoLLM, ChatBaco

SETTINGS: dict[str, Any] = {"router": "P-PUNC", "gamma": 0.5, "seed": 0}


def load(offline: bool) -> BacoEngine:
    if offline:
        from baco_integrations import load_offline_engine

        return load_offline_engine(device="cpu", install=False)
    from baco_integrations.testing import make_bench_pair

    pair = make_bench_pair(tempfile.mkdtemp(prefix="baco-bench-"))
    return BacoEngine.from_pretrained(pair.base_dir, pair.aligned_dir)


def timed(model: Any, prompts: list[str], engine: BacoEngine) -> tuple[float, int]:
    """Seconds of one ``model.batch(prompts)`` and the engine submissions it made."""
    submit, calls = engine.scheduler.submit, []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return submit(*args, **kwargs)

    engine.scheduler.submit = counting  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        model.batch(prompts)
        return time.perf_counter() - start, len(calls)
    finally:
        engine.scheduler.submit = submit  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="the offline real pair")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    engine = load(args.offline)
    prompts = [f"Brainstorm name number {i} for a coffee shop." for i in range(args.prompts)]
    kwargs = {**SETTINGS, "max_new_tokens": args.length}
    models = {
        "BacoLLM": BacoLLM(engine=engine, **kwargs),
        "ChatBaco": ChatBaco(engine=engine, **kwargs),
    }
    engine.generate("warm up", max_new_tokens=4)
    seconds: dict[str, list[float]] = {name: [] for name in models}
    submissions: dict[str, int] = {}
    for repeat in range(args.repeats):
        order = list(models) if repeat % 2 == 0 else list(reversed(models))
        for name in order:
            took, submissions[name] = timed(models[name], prompts, engine)
            seconds[name].append(took)
    llm, chat = (statistics.median(seconds[n]) for n in ("BacoLLM", "ChatBaco"))
    print(f"{args.prompts} prompts x {args.length} tokens, {args.repeats} repeats")
    for name in models:
        print(
            f"{name}.batch: median {statistics.median(seconds[name]):.2f} s, "
            f"{submissions[name]} engine submission(s)"
        )
    print(f"ChatBaco.batch / BacoLLM.batch: {chat / llm:.2f}x (target within 1.10x)")


if __name__ == "__main__":
    main()
