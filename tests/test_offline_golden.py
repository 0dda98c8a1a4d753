"""Golden outputs on the offline real pair (Gemma-3-270m base, SmolLM2-135M-Instruct): the
decoding loop gives, token for token, what it gave before model execution moved behind the
runner seam (issue 22). Slow: skipped where the pair is not prepared
(``python -m baco_integrations.offline``). Re-record only after a change meant to change
outputs::

    .venv/bin/python tests/test_offline_golden.py --record
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from baco_integrations import BacoEngine
from baco_integrations.offline import converted_pair, offline_pair

GOLDEN = Path(__file__).with_name("golden_offline.json")
PROMPTS = ["Brainstorm names for a coffee shop.", "Write a two-line poem about rain."]
CASES: dict[str, dict[str, Any]] = {
    "aligned/greedy": {"router": "aligned", "temperature": 0.0, "max_new_tokens": 16},
    "P-PUNC/sampled": {"router": "P-PUNC", "gamma": 0.3, "n": 2, "seed": 0, "max_new_tokens": 24},
    "random/lock-step": {"router": "random", "gamma": 0.5, "seed": 1, "lazy": False,
                         "max_new_tokens": 16},
    "H/top_p": {"router": "H", "gamma": 1.5, "seed": 2, "top_p": 0.9, "max_new_tokens": 16},
}  # fmt: skip


def _engine() -> BacoEngine:
    pair = converted_pair(offline_pair(install=False), convert=False)
    return BacoEngine.from_pretrained(pair.base_dir, pair.aligned_dir)


def run_all(engine: BacoEngine) -> dict[str, Any]:
    return {
        name: [
            [{"text": o.text, "token_ids": list(o.token_ids), "sources": list(o.sources)}
             for o in row]
            for row in engine.generate(PROMPTS, **kwargs)
        ]
        for name, kwargs in CASES.items()
    }  # fmt: skip


@pytest.mark.slow
def test_offline_pair_outputs_equal_the_recorded_ones() -> None:
    try:
        engine = _engine()
    except FileNotFoundError as exc:
        pytest.skip(f"offline pair not prepared: {exc}")
    golden = json.loads(GOLDEN.read_text())
    results = run_all(engine)
    assert [name for name in golden if results[name] != golden[name]] == []


if __name__ == "__main__":
    if "--record" not in sys.argv:
        raise SystemExit(__doc__)
    import torch

    torch.set_num_threads(1)
    GOLDEN.write_text(json.dumps(run_all(_engine()), separators=(",", ":")) + "\n")
    print(f"recorded {len(CASES)} cases in {GOLDEN}")
