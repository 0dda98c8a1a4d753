"""A LangChain tool that returns n distinct ideas from BACO, ready to hand to an agent.

BACO's point is diversity: an agent that needs several *different* candidates (names, plans,
angles) can call this tool instead of sampling its own model n times. The tool decodes n
samples of one prompt in a single engine call (they share one prefill), keeps the distinct
ones and tops up if duplicates came back.

No agent framework is installed with this package, so the example calls the tool directly,
exactly as an agent runtime would (``tool.invoke({...})``), and prints the schema the agent's
model would see.

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

from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field

from baco_integrations.langchain import BacoLLM

PROMPT = "Suggest one original idea for {topic}. Answer in one short sentence."


class BrainstormInput(BaseModel):
    """Arguments of the brainstorm tool."""

    topic: str = Field(description="What to brainstorm about, e.g. 'names for a bakery'.")
    n: int = Field(default=5, ge=1, le=20, description="How many distinct ideas to return.")


def first_line(text: str) -> str:
    """The idea: the first non-empty line, without control characters."""
    clean = "".join(c if c.isprintable() or c == "\n" else " " for c in text)
    return next((line.strip() for line in clean.splitlines() if line.strip()), "")


def make_brainstorm_tool(llm: BacoLLM, *, max_rounds: int = 3) -> BaseTool:
    """Wrap ``llm`` as a ``brainstorm`` tool returning up to ``n`` distinct ideas."""

    def brainstorm(topic: str, n: int = 5) -> list[str]:
        ideas: dict[str, str] = {}  # normalised text -> idea, in first-seen order
        for round_ in range(max_rounds):
            missing = n - len(ideas)
            if missing <= 0:
                break
            # A fixed seed would repeat the same samples: shift it on every top-up round.
            seed = None if llm.seed is None else llm.seed + round_
            result = llm.generate([PROMPT.format(topic=topic)], n=missing, seed=seed)
            for generation in result.generations[0]:
                idea = first_line(generation.text)
                key = " ".join(idea.lower().split())
                if idea and key not in ideas:
                    ideas[key] = idea
        return list(ideas.values())[:n]

    return StructuredTool.from_function(
        func=brainstorm,
        name="brainstorm",
        description=(
            "Return n distinct ideas about a topic, written by a base and an aligned language "
            "model together (BACO) for diversity. Use it when you need several different "
            "candidates rather than one answer."
        ),
        args_schema=BrainstormInput,
    )


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


def run(llm: BacoLLM, topic: str, n: int) -> list[str]:
    tool = make_brainstorm_tool(llm)
    print("What an agent's model sees:")
    print(json.dumps(convert_to_openai_tool(tool), indent=2))
    # An agent runtime executes a tool call exactly like this.
    ideas = tool.invoke({"topic": topic, "n": n})
    print(f"\n{len(ideas)} distinct ideas for {topic}:")
    for i, idea in enumerate(ideas, 1):
        print(f"{i}. {idea}")
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
