"""examples/structured_ideas.py: n structured ideas from one chain call, words marked by model.

The default run uses the offline real pair (benchmarks/structured_offline.py evaluates it);
here the same script runs on a tiny local pair, whose ideas are gibberish but still Ideas.
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "structured_ideas.py"


def run_example(monkeypatch: pytest.MonkeyPatch, capsys, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_structured_ideas_on_a_tiny_pair(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    out = run_example(monkeypatch, capsys, "--tiny", "-n", "3", "--max-new-tokens", "400")
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("--- idea")] == [
        "--- idea 1",
        "--- idea 2",
        "--- idea 3",
    ]
    # each idea parsed into an Idea (400 tokens hold the bounded strings of the schema)
    risks = [line for line in lines if line.startswith("    risk:")]
    assert len(risks) == 3
    assert all(re.fullmatch(r"    risk:  [1-5]/5", line) for line in risks)
    rendered = [line for line in lines if line.startswith('    {"title": ')]
    assert len(rendered) == 3
    assert "⟦" in out  # with gamma 0.7 the base model writes some words
    assert len([line for line in lines if "of the text from the base model" in line]) == 3


def test_structured_ideas_one_sample(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # n=1: with_structured_output returns one result, not a list
    out = run_example(monkeypatch, capsys, "--tiny", "-n", "1", "--max-new-tokens", "3")
    assert "--- idea 1" in out
    assert "no idea: finish_reason='length'" in out  # 3 tokens cut the JSON: said so
