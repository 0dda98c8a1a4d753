"""Golden outputs: the decoding loop gives, token for token, what it gave when these files were
recorded (before model execution moved behind the runner seam, issue 22).

Both kinds of tiny pair, every router, greedy and sampled, lazy and lock-step, several prompts
with n samples, stop strings, a constrained call and the static cache. Re-record only after a
change that is meant to change outputs::

    .venv/bin/python tests/engine/test_golden.py --record
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from baco_integrations import ROUTER_NAMES, BacoEngine

GOLDEN = Path(__file__).with_name("golden_outputs.json")
PROMPTS = ["Write a poem about the sea.", "Ideas for a coffee shop", "Why?"]


def _gamma(router: str) -> float:
    return 1.5 if router.startswith("H") else 0.5


def cases() -> dict[str, dict[str, Any]]:
    """Every case's generate() keywords, by name."""
    found: dict[str, dict[str, Any]] = {}
    for router in ROUTER_NAMES:
        base = {"router": router, "gamma": _gamma(router), "max_new_tokens": 24}
        found[f"{router}/sampled"] = {**base, "n": 2, "seed": 3, "top_k": 50}
        found[f"{router}/greedy"] = {**base, "temperature": 0.0, "seed": 1}
    for lazy in (True, False):
        found[f"P-PUNC/lazy={lazy}"] = {
            "router": "P-PUNC", "gamma": 0.4, "n": 3, "seed": 11, "lazy": lazy,
            "max_new_tokens": 32, "top_p": 0.9,
        }  # fmt: skip
    found["random/stop"] = {
        "router": "random", "gamma": 0.5, "seed": 5, "stop": ["e "], "max_new_tokens": 32,
    }  # fmt: skip
    found["P/min_p"] = {"router": "P", "gamma": 0.3, "seed": 2, "min_p": 0.05, "n": 2}
    found["P/constrained"] = {
        "router": "P", "gamma": 0.5, "seed": 4, "max_new_tokens": 40,
        "constraint": {"json_schema": {"type": "object", "required": ["name"],
                                       "properties": {"name": {"type": "string"}}}},
    }  # fmt: skip
    return found


def _record(outputs: list[list[Any]]) -> list[list[dict[str, Any]]]:
    return [
        [
            {
                "text": o.text,
                "token_ids": list(o.token_ids),
                "sources": list(o.sources),
                "finish_reason": o.finish_reason,
            }
            for o in row
        ]
        for row in outputs
    ]


def run_all(engines: dict[str, BacoEngine]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for kind, engine in engines.items():
        for name, kwargs in cases().items():
            results[f"{kind}/{name}"] = _record(engine.generate(PROMPTS, **kwargs))
    static = engines["shared"]
    results["shared/static"] = _record(
        BacoEngine(
            static.base_model,
            static.aligned_model,
            static.base_tokenizer,
            cache_implementation="static",
        ).generate(PROMPTS, router="P", gamma=0.5, n=2, seed=9, max_new_tokens=20)
    )
    return results


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text())


def test_outputs_equal_the_recorded_ones(
    engine: BacoEngine, cross_engine: BacoEngine, golden: dict[str, Any]
) -> None:
    results = run_all({"shared": engine, "cross": cross_engine})
    assert results.keys() == golden.keys()
    differ = [name for name in golden if results[name] != golden[name]]
    assert not differ, f"outputs changed for {differ}"


def _main() -> None:
    import tempfile

    import torch

    from baco_integrations.testing import make_tiny_pair

    if "--record" not in sys.argv:
        raise SystemExit(__doc__)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        engines = {}
        for kind, extra in (("shared", {}), ("cross", {"aligned_vocab_size": 640})):
            pair = make_tiny_pair(Path(tmp) / kind, **extra)
            engines[kind] = BacoEngine.from_pretrained(pair.base_dir, pair.aligned_dir)
        results = run_all(engines)
    GOLDEN.write_text(json.dumps(results, separators=(",", ":")) + "\n")
    print(f"recorded {len(results)} cases in {GOLDEN}")


if __name__ == "__main__":
    _main()
