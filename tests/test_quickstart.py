"""The README's main job: examples/quickstart.py --tiny runs offline and prints its samples."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def test_quickstart_runs_offline(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(
        sys, "argv", [str(QUICKSTART), "--tiny", "-n", "3", "--max-new-tokens", "8"]
    )
    runpy.run_path(str(QUICKSTART), run_name="__main__")
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("--- sample")]
    assert len(headers) == 3
    assert all("base" in h and ("length" in h or "stop" in h) for h in headers)


def test_quickstart_needs_a_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(QUICKSTART)])
    with pytest.raises(SystemExit):
        runpy.run_path(str(QUICKSTART), run_name="__main__")
