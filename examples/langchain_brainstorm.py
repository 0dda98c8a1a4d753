"""Brainstorm with BACO through a LangChain LCEL chain.

A base model and its aligned (instruct) counterpart write each idea together: a router picks,
word by word, which model the next token comes from. Raising gamma hands more words to the
base model (more diverse, less polished).

    # offline, with a tiny random model pair (the output is gibberish, the plumbing is real)
    python examples/langchain_brainstorm.py --tiny

    # real models (downloads them on first use)
    python examples/langchain_brainstorm.py --base Qwen/Qwen2.5-0.5B \\
        --aligned Qwen/Qwen2.5-0.5B-Instruct --router P-PUNC --gamma 0.3 -n 4 "a coffee shop"
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate

from baco_integrations.langchain import BacoLLM

PROMPT = PromptTemplate.from_template(
    "Brainstorm one original name for {topic}. Answer with the name and one sentence."
)


def printable(text: str) -> str:
    """Text on one line: newlines and control characters (tiny random models emit some)
    become spaces."""
    return "".join(c if c.isprintable() else " " for c in text)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("topic", nargs="?", default="a coffee shop", help="what to brainstorm")
    parser.add_argument("--base", default="Qwen/Qwen2.5-0.5B", help="base model: hub id or path")
    parser.add_argument(
        "--aligned", default="Qwen/Qwen2.5-0.5B-Instruct", help="aligned model: hub id or path"
    )
    parser.add_argument("--tiny", action="store_true", help="build a tiny local pair (offline)")
    parser.add_argument("--router", default="P-PUNC", help="router name, e.g. P, H, P-PUNC")
    parser.add_argument("--gamma", type=float, default=0.3, help="the router's threshold")
    parser.add_argument("-n", type=int, default=4, help="number of ideas")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def brainstorm(llm: BacoLLM, topic: str, n: int) -> None:
    """Stream one idea through the LCEL chain, then decode n more in a single engine call."""
    chain = PROMPT | llm | StrOutputParser()

    print(f"One idea for {topic}, streamed through prompt | BacoLLM | StrOutputParser:")
    for piece in chain.stream({"topic": topic}):
        print(printable(piece), end="", flush=True)
    print("\n")

    # n samples of one prompt share one prefill; generation_info tells who wrote what.
    result = llm.generate([PROMPT.format(topic=topic)], n=n)
    print(f"{n} ideas (share of tokens from the base model in brackets):")
    for i, generation in enumerate(result.generations[0], 1):
        info = generation.generation_info or {}
        idea = printable(generation.text).strip()
        print(f"{i}. [{info.get('base_fraction', 0.0):.0%} base] {idea}")

    # Any setting can be overridden per call, here through bind(): a hotter variant.
    hotter = PROMPT | llm.bind(temperature=llm.temperature * 1.3) | StrOutputParser()
    print(f"\nA hotter idea: {printable(hotter.invoke({'topic': topic})).strip()}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = {
        "router": args.router,
        "gamma": args.gamma,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
    }
    if args.tiny:
        from baco_integrations.testing import make_tiny_pair

        with tempfile.TemporaryDirectory() as directory:
            pair = make_tiny_pair(directory)
            llm = BacoLLM.from_model_ids(pair.base_dir, pair.aligned_dir, **settings)
            brainstorm(llm, args.topic, args.n)
        return 0
    llm = BacoLLM.from_model_ids(args.base, args.aligned, device=args.device, **settings)
    brainstorm(llm, args.topic, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
