"""A brainstorming agent: a tool-calling agent asks BACO for n distinct ideas
(``BacoBrainstormTool``) and picks one.

The agent's own model can be any chat model that calls tools (ChatOpenAI, ChatOllama, or
ChatBaco itself, as here on the offline pair); the tool is BACO, whose ideas are both good and
different from each other. With ``--tiny`` the agent's model is a scripted stand-in (it
calls the tool, then picks the idea with the most base-model words) and BACO runs on a tiny
random pair, so the run is offline and fast.

    python examples/brainstorming_agent.py "a name for a neighbourhood bakery"
    python examples/brainstorming_agent.py --tiny
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from baco_integrations import BacoEngine
from baco_integrations.langchain import BacoBrainstormTool, ChatBaco

INSTRUCTIONS = (
    "You help choose. Call the brainstorm tool once for {n} ideas on the user's topic, then "
    "answer with the one idea you pick and one sentence on why."
)


class ScriptedPicker(BaseChatModel):
    """A stand-in for an agent's model: first it calls ``brainstorm``, then it picks the idea
    the base model wrote most of (the most unusual one) from the tool's result."""

    n: int = 3

    @property
    def _llm_type(self) -> str:
        return "scripted-picker"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedPicker:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            topic = str(messages[-1].content)
            call = {"name": "brainstorm", "args": {"topic": topic, "n": self.n}, "id": "call_1"}
            reply = AIMessage("", tool_calls=[call])
        else:
            ideas = json.loads(str(results[-1].content))
            best = max(ideas, key=lambda idea: idea["base_fraction"])
            reply = AIMessage(f"I pick: {best['idea']!s:.200} (the most unusual of {len(ideas)})")
        return ChatResult(generations=[ChatGeneration(message=reply)])


def agent_messages(model: Any, tool: BacoBrainstormTool, topic: str, n: int) -> list[BaseMessage]:
    """Run a LangGraph ReAct agent with ``model`` and the brainstorm tool on ``topic``."""
    from langgraph.prebuilt import create_react_agent

    with warnings.catch_warnings():  # LangGraph 1.0 points to langchain.agents.create_agent
        warnings.simplefilter("ignore")
        agent = create_react_agent(model, [tool], prompt=INSTRUCTIONS.format(n=n))
    result = agent.invoke({"messages": [HumanMessage(topic)]}, {"recursion_limit": 8})
    return list(result["messages"])


def baco_agent_model(chat: ChatBaco, tool: BacoBrainstormTool) -> Any:
    """ChatBaco as the agent's model: its first turn must call the tool, then it answers."""

    def select(state: dict, runtime: object) -> Any:
        called = any(isinstance(m, ToolMessage) for m in state["messages"])
        return chat.bind_tools([tool], tool_choice="none" if called else "brainstorm")

    return select


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("topic", nargs="?", default="a name for a neighbourhood bakery")
    parser.add_argument("-n", type=int, default=4, help="how many distinct ideas")
    parser.add_argument("--tiny", action="store_true", help="tiny pair, scripted agent model")
    args = parser.parse_args(argv)
    if args.tiny:
        from baco_integrations.testing import make_tiny_pair

        pair = make_tiny_pair(tempfile.mkdtemp(prefix="baco-agent-"))
        engine = BacoEngine.from_pretrained(pair.base_dir, pair.aligned_dir)
        tool = BacoBrainstormTool(llm=ChatBaco(engine=engine, max_new_tokens=12, seed=0))
        model: Any = ScriptedPicker(n=args.n)
    else:
        from baco_integrations import load_offline_engine

        engine = load_offline_engine()
        ideas = ChatBaco(engine=engine, router="P-PUNC", base_share=0.3, max_new_tokens=40)
        tool = BacoBrainstormTool(llm=ideas, handle_tool_error=True)
        chooser = ChatBaco(engine=engine, router="aligned", max_new_tokens=80, seed=0)
        model = baco_agent_model(chooser, tool)
    for message in agent_messages(model, tool, args.topic, args.n):
        if isinstance(message, AIMessage) and message.tool_calls:
            print(f"call   : {message.tool_calls[0]['name']}({message.tool_calls[0]['args']})")
        elif isinstance(message, ToolMessage) and message.status == "error":
            print(f"tool   : {message.content!s:.300}")  # e.g. fewer distinct ideas than n
        elif isinstance(message, ToolMessage):
            for idea in json.loads(str(message.content)):
                print(f"idea   : [{idea['base_fraction']:.0%} base] {idea['idea']!s:.120}")
        else:
            print(f"{message.type:7}: {message.content!s:.300}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
