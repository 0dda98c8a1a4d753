"""Brainstorm over local notes with a LlamaIndex workflow whose LLM is BACO.

    python examples/llama_index_workflow.py --tiny            # offline, tiny random models
    python examples/llama_index_workflow.py --base Qwen/Qwen2.5-0.5B \\
        --aligned Qwen/Qwen2.5-0.5B-Instruct --router P-PUNC --gamma 0.3 -n 4

The workflow has three steps:

1. retrieve: find the notes relevant to the brief in a VectorStoreIndex (a small local
   bag-of-words embedding, so nothing is downloaded);
2. brainstorm: ask BacoLLM for n ideas in ONE call (the n samples share one prefill); the base
   model writes some of the words, which is where the variety comes from;
3. pitch: polish the most unusual idea (the one with the most base-written words) with a
   per-call override, router="aligned", streaming the pitch as it is written.

With ``--tiny`` the models are random, so the text is gibberish; the plumbing is real.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import tempfile
import zlib
from typing import Any

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms import ChatMessage
from llama_index.core.workflow import Context, Event, StartEvent, StopEvent, Workflow, step

from baco_integrations.llama_index import BacoLLM

NOTES = {
    "harbour.txt": "The harbour festival runs for one weekend in June. Fishing boats are "
    "decorated with lights, and the old lighthouse opens its doors to visitors.",
    "food.txt": "Local food stalls sell grilled sardines, seaweed bread and blackberry pies. "
    "Last year the longest queue was for the smoked fish sandwiches.",
    "people.txt": "Volunteers are mostly retired sailors and students from the art school. "
    "Children love the knot-tying contest and the sandcastle parade.",
    "budget.txt": "The budget is small: no fireworks this year, but the town band plays for "
    "free and the school can print posters.",
}
BRIEF = "Brainstorm new activities for the harbour festival that cost almost nothing."
SYSTEM = "You are a playful, practical festival planner."
BRAINSTORM = "Notes:\n{notes}\n\nTask: {brief}\nGive one idea in two sentences."
PITCH = "Write a one-line poster slogan for this festival idea:\n{idea}"


class HashingEmbedding(BaseEmbedding):
    """Bag-of-words vectors of hashed lowercase words: a local embedding, no download."""

    dim: int = 256

    def _embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        for word in re.findall(r"[a-z']+", text.lower()):
            vector[zlib.crc32(word.encode()) % self.dim] += 1.0  # crc32: stable across runs
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed(text)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._embed(query)


class NotesFound(Event):
    brief: str
    notes: list[str]


class IdeasWritten(Event):
    ideas: list[dict[str, Any]]


class PitchDelta(Event):
    """A piece of the pitch, streamed to whoever runs the workflow."""

    delta: str


class Brainstorm(Workflow):
    """Retrieve notes, brainstorm n ideas with BACO, pitch the most unusual one."""

    def __init__(self, index: VectorStoreIndex, llm: BacoLLM, n: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retriever = index.as_retriever(similarity_top_k=2)
        self.llm = llm
        self.n = n

    @step
    async def retrieve(self, ev: StartEvent) -> NotesFound:
        nodes = await self.retriever.aretrieve(ev.brief)
        return NotesFound(brief=ev.brief, notes=[n.get_content() for n in nodes])

    @step
    async def brainstorm(self, ctx: Context, ev: NotesFound) -> IdeasWritten:
        prompt = BRAINSTORM.format(notes="\n".join(f"- {n}" for n in ev.notes), brief=ev.brief)
        messages = [
            ChatMessage(role="system", content=SYSTEM),
            ChatMessage(role="user", content=prompt),
        ]
        # n samples from one call; each one's text, sources and base_fraction are in "samples".
        reply = await self.llm.achat(messages, n=self.n)
        ideas = IdeasWritten(ideas=reply.additional_kwargs["samples"])
        ctx.write_event_to_stream(ideas)  # show them now, while the pitch is being written
        return ideas

    @step
    async def pitch(self, ctx: Context, ev: IdeasWritten) -> StopEvent:
        boldest = max(ev.ideas, key=lambda idea: idea["base_fraction"])
        messages = [ChatMessage(role="user", content=PITCH.format(idea=boldest["text"]))]
        # A per-call override: the aligned model alone polishes the pitch.
        stream = await self.llm.astream_chat(messages, router="aligned", temperature=0.7)
        pitch = ""
        async for response in stream:
            ctx.write_event_to_stream(PitchDelta(delta=response.delta or ""))
            pitch = response.message.content or ""
        return StopEvent(result={"ideas": ev.ideas, "boldest": boldest, "pitch": pitch})


async def run(llm: BacoLLM, n: int, brief: str) -> dict[str, Any]:
    """Index the notes, run the workflow, print the ideas and the streamed pitch."""
    Settings.llm = llm
    Settings.embed_model = HashingEmbedding()
    # LlamaIndex fits retrieved text to the context window; count in the models' tokens.
    Settings.tokenizer = llm.engine.aligned_tokenizer
    documents = [
        # The file name is not embedded: only the note's words decide what is retrieved.
        Document(text=text, metadata={"file": name}, excluded_embed_metadata_keys=["file"])
        for name, text in NOTES.items()
    ]
    index = VectorStoreIndex.from_documents(documents)

    handler = Brainstorm(index, llm, n, timeout=600).run(brief=brief)
    async for event in handler.stream_events():
        if isinstance(event, IdeasWritten):
            print(f"=== {len(event.ideas)} ideas (router {llm.router}, gamma {llm.gamma}) ===")
            for i, idea in enumerate(event.ideas, start=1):
                print(f"--- idea {i} ({idea['base_fraction']:.0%} base, {idea['finish_reason']})")
                print(idea["text"].strip())
            print("\n=== pitch for the boldest idea (aligned model only) ===")
        elif isinstance(event, PitchDelta):
            print(event.delta, end="", flush=True)
    result = await handler
    print()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="base model: hub id or local directory")
    parser.add_argument("--aligned", help="aligned model: hub id or local directory")
    parser.add_argument("--tiny", action="store_true", help="build a tiny local pair (offline)")
    parser.add_argument("--router", default="P-PUNC")
    parser.add_argument("--gamma", type=float, default=0.3)
    parser.add_argument("-n", type=int, default=4, help="ideas to brainstorm")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--brief", default=BRIEF)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="baco-tiny-") as tmp:
        if args.tiny:
            from baco_integrations.testing import make_tiny_pair

            # A 2,048-token window leaves LlamaIndex room for the notes.
            pair = make_tiny_pair(tmp, max_position_embeddings=2048)
            args.base, args.aligned = pair.base_dir, pair.aligned_dir
        if not (args.base and args.aligned):
            parser.error("give --base and --aligned, or --tiny")
        llm = BacoLLM.from_model_ids(
            args.base,
            args.aligned,
            device=args.device,
            router=args.router,
            gamma=args.gamma,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
        )
        asyncio.run(run(llm, args.n, args.brief))


if __name__ == "__main__":
    main()
