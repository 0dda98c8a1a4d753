"""A LangChain tool that returns n distinct ideas from BACO, ready to hand to an agent.

BACO's point is diversity: an agent that needs several *different* candidates (names, plans,
angles) can call this tool instead of sampling its own model n times. The tool is the
package's own :class:`~baco_integrations.langchain.BacoBrainstormTool`: it decodes the samples
of one prompt in one engine call (they share one prefill), drops near-duplicates by sentence
embeddings (all-MiniLM-L6-v2, the ``eval`` extra) and samples again if it has too few
(docs/agents.md, "Brainstorm tools").

No agent framework is needed here: the example calls the tool directly, exactly as an agent
runtime would (``tool.invoke({...})``), and prints the schema the agent's model would see.

    python examples/langchain_agent_tool.py --tiny            # offline, tiny random models
    python examples/langchain_agent_tool.py --base Qwen/Qwen2.5-0.5B \\
        --aligned Qwen/Qwen2.5-0.5B-Instruct -n 5 "a team offsite"
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from langchain_core.tools import ToolException
from langchain_core.utils.function_calling import convert_to_openai_tool

from baco_integrations.langchain import BacoBrainstormTool, BacoLLM


def printable(text: str) -> str:
    """Text on one line: newlines and control characters (tiny random models emit some)
    become spaces."""
    return "".join(c if c.isprintable() else " " for c in text)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("topic", nargs="?", default="a team offsite")
    parser.add_argument("--base", default="Qwen/Qwen2.5-0.5B")
    parser.add_argument("--aligned", default="Qwen/Qwen2.5-0.5B-Instruct")
    parser.add_argument("--tiny", action="store_true", help="build a tiny local pair (offline)")
    parser.add_argument("--router", default="P-PUNC")
    parser.add_argument("--gamma", type=float, default=0.3)
    parser.add_argument("-n", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def run(llm: BacoLLM, topic: str, n: int) -> list[dict[str, Any]]:
    tool = BacoBrainstormTool(llm=llm)  # a BaseTool named "brainstorm"
    print("What an agent's model sees:")
    print(json.dumps(convert_to_openai_tool(tool), indent=2))
    # An agent runtime executes a tool call exactly like this.
    try:
        ideas = tool.invoke({"topic": topic, "n": n})
    except ToolException as exc:  # fewer than n distinct ideas after max_rounds rounds
        print(f"\n{exc}")
        return []
    print(f"\n{len(ideas)} distinct ideas for {topic} (share of tokens from the base model):")
    for i, idea in enumerate(ideas, 1):
        print(f"{i}. [{idea['base_fraction']:.0%} base] {printable(idea['idea']).strip()}")
    return ideas


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = {
        "router": args.router,
        "gamma": args.gamma,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
    }
    if args.tiny:
        from baco_integrations.testing import make_tiny_pair

        with tempfile.TemporaryDirectory() as directory:
            pair = make_tiny_pair(directory)
            run(
                BacoLLM.from_model_ids(pair.base_dir, pair.aligned_dir, **settings),
                args.topic,
                args.n,
            )
        return 0
    llm = BacoLLM.from_model_ids(args.base, args.aligned, device=args.device, **settings)
    run(llm, args.topic, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
