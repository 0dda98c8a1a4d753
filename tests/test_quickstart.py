"""The README's main job (examples/quickstart.py): a LangChain chain, words marked by model.

The default run uses the offline real pair (tested in tests/test_offline.py when it is
cached); here the same script runs on a tiny local pair.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def run_quickstart(monkeypatch: pytest.MonkeyPatch, capsys, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", [str(QUICKSTART), *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(QUICKSTART), run_name="__main__")
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_quickstart_marks_each_idea(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path) -> None:
    page = tmp_path / "ideas.html"
    out = run_quickstart(
        monkeypatch,
        capsys,
        "--tiny",
        "-n",
        "3",
        "--max-new-tokens",
        "12",
        "--gamma",
        "0.9",
        "--html",
        str(page),
    )
    headers = [line for line in out.splitlines() if line.startswith("--- idea")]
    assert headers == ["--- idea 1", "--- idea 2", "--- idea 3"]
    shares = [line for line in out.splitlines() if "of the text from the base model" in line]
    assert len(shares) == 3
    assert "⟦" in out  # with gamma 0.9 the base model writes some words
    html = page.read_text(encoding="utf-8")
    assert html.count('class="baco-render"') == 3 and 'class="baco-base"' in html


def test_quickstart_asks_for_a_base_share_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = run_quickstart(monkeypatch, capsys, "--tiny", "-n", "2", "--max-new-tokens", "12")
    assert "(base_share=0.2)" in out.splitlines()[0]
    out = run_quickstart(
        monkeypatch, capsys, "--tiny", "-n", "1", "--max-new-tokens", "8", "--base-share", "0.6"
    )
    assert "(base_share=0.6)" in out


def test_quickstart_needs_both_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(QUICKSTART), "--base", "some/model"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(QUICKSTART), run_name="__main__")
    assert exit_info.value.code == 2
