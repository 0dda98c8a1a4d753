"""examples/agents_tool_calling.py runs offline with --tiny: both agents call the tool and
answer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agents_tool_calling.py"


def test_both_agents_call_the_tool_and_answer(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("agents_tool_calling", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--tiny", "--max-new-tokens", "48"]) == 0
    out = capsys.readouterr().out
    langgraph, llama_index = out.split("== LlamaIndex FunctionAgent on BacoLLM")
    assert "call   : seats({'street':" in langgraph and "\ntool   : " in langgraph
    assert langgraph.rstrip().splitlines()[-1].startswith("ai     : ")
    assert "call   : seats({'street':" in llama_index and "answer : " in llama_index
