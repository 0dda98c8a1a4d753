"""The LlamaIndex example runs end to end, offline, with --tiny."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llama_index_workflow.py"


def test_workflow_example_runs_with_tiny_models(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process, as ``python examples/llama_index_workflow.py ...`` runs it (run_name
    # "__main__"), without paying for a second interpreter's imports.
    argv = [str(EXAMPLE), "--tiny", "-n", "3", "--max-new-tokens", "6", "--gamma", "0.4"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert "=== 3 ideas (router P-PUNC, gamma 0.4) ===" in out
    assert [f"--- idea {i} (" in out for i in (1, 2, 3)] == [True] * 3
    assert "=== pitch for the boldest idea (aligned model only) ===" in out
