"""BACO as an agent's own model: a LangGraph ReAct agent on ChatBaco and a LlamaIndex
FunctionAgent on BacoLLM, each calling a tool, reading its result and answering.

The first turn is forced to call the tool (``tool_choice``); later turns may answer in text.
Every call is decoded under the tools' grammar, so it is a valid call whichever model wrote
its argument values (docs/agents.md).

    # the offline real pair (Gemma-3-270m base + SmolLM2-135M-Instruct), CPU
    python examples/agents_tool_calling.py
    # offline, with a tiny random model pair (the words are gibberish, the calls are valid)
    python examples/agents_tool_calling.py --tiny
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import warnings
from collections.abc import Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, Field

from baco_integrations import BacoEngine
from baco_integrations.langchain import ChatBaco
from baco_integrations.llama_index import BacoLLM

QUESTION = "How many seats does the cafe on Elm Street have? Look it up."
CAFES = {"Elm Street": 42, "Main Street": 18}


class CafeQuery(BaseModel):
    street: str = Field(description="The street the cafe is on.", max_length=20)


def seats(street: str) -> str:
    """How many seats the cafe on a street has."""
    count = CAFES.get(street.strip())
    return f"{count} seats" if count is not None else f"no cafe known on {street!r}"


def langgraph_agent(chat: ChatBaco) -> list[BaseMessage]:
    """A LangGraph ReAct agent on ChatBaco: its messages, question to answer."""
    from langgraph.prebuilt import create_react_agent

    lookup = tool(args_schema=CafeQuery)(seats)

    def model(state: dict, runtime: object) -> object:
        answered = any(isinstance(m, ToolMessage) for m in state["messages"])
        return chat.bind_tools([lookup], tool_choice="none" if answered else "required")

    with warnings.catch_warnings():  # LangGraph 1.0 points to langchain.agents.create_agent
        warnings.simplefilter("ignore")
        agent = create_react_agent(model, [lookup])
    result = agent.invoke({"messages": [HumanMessage(QUESTION)]}, {"recursion_limit": 8})
    return list(result["messages"])


async def function_agent(llm: BacoLLM) -> tuple[list[ToolCallResult], str]:
    """A LlamaIndex FunctionAgent on BacoLLM: its tool results and its answer."""
    lookup = FunctionTool.from_defaults(fn=seats, fn_schema=CafeQuery)
    # A small model may keep calling the tool: after a few turns the agent answers anyway.
    agent = FunctionAgent(
        tools=[lookup], llm=llm, initial_tool_choice="seats", early_stopping_method="generate"
    )
    handler = agent.run(QUESTION, max_iterations=4)
    results = [e async for e in handler.stream_events() if isinstance(e, ToolCallResult)]
    output = await handler
    return results, str(output.response.content or "")


def engine_for(tiny: bool) -> BacoEngine:
    if tiny:
        from baco_integrations.testing import make_tiny_pair

        pair = make_tiny_pair(tempfile.mkdtemp(prefix="baco-agents-"))
        return BacoEngine.from_pretrained(pair.base_dir, pair.aligned_dir)
    from baco_integrations import load_offline_engine

    return load_offline_engine()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny local pair (offline)")
    parser.add_argument("--base-share", type=float, default=0.2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    engine = engine_for(args.tiny)
    settings = {
        "router": "P-PUNC",
        "base_share": args.base_share,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
    }

    print("== LangGraph ReAct agent on ChatBaco")
    for message in langgraph_agent(ChatBaco(engine=engine, **settings)):
        if isinstance(message, AIMessage) and message.tool_calls:
            print(f"call   : {message.tool_calls[0]['name']}({message.tool_calls[0]['args']})")
        else:
            print(f"{message.type:7}: {message.content!r:.200}")

    print("== LlamaIndex FunctionAgent on BacoLLM")
    results, answer = asyncio.run(function_agent(BacoLLM(engine=engine, **settings)))
    for result in results:
        print(f"call   : {result.tool_name}({result.tool_kwargs}) -> {result.tool_output}")
    print(f"answer : {answer!r:.200}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
