"""Routers: at each word boundary, decide per row whether the base model writes the next word.

Every router, built-in or user-supplied, is a callable ``router(inputs: RouterInputs) ->
torch.BoolTensor[batch]`` where True means "base". The engine calls it once per decoding step
for the whole batch and applies the result only to rows that are at a word boundary (all other
rows keep the model that wrote the previous token), so routers never deal with words.

A router may declare ``needs``: the sources whose distributions it reads. Lazy decoding skips
the forward pass of a model that no router step needs (see docs/algorithm.md, Cost).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from .config import RouterConfig, Source
from .vocab import VocabMasks

SOURCE_ALIGNED = 0
SOURCE_BASE = 1
NO_SOURCE = -1


@dataclass(frozen=True)
class RouterInputs:
    """What a router sees at one decoding step.

    ``base_probs`` and ``aligned_probs`` are the models' next-token distributions after
    temperature (before top-k/top-p/min-p truncation), shape ``[batch, vocab]``; at
    temperature 0 they are the plain softmax. In lazy mode a distribution that the router's
    ``needs`` does not name is ``None`` (its model did not run). ``prev_sources`` holds, per
    row, the source of the previous token: 1 base, 0 aligned, -1 none yet.

    A router that flips coins should call :meth:`uniform`: it draws from each row's own
    random numbers, so a seeded request routes the same whatever else shares its batch.
    ``generator`` is the request's generator (seeded with the request), for other draws.

    A model served by a top-k endpoint (docs/remote.md) scores only its k most likely tokens:
    its ``*_probs`` rows hold those tokens' own probabilities (zero elsewhere, so a row sums to
    less than 1) and ``*_rest_mass`` gives, per row, the probability of the unlisted tokens at
    temperature 1; it is None for a full distribution.
    """

    base_probs: torch.Tensor | None
    aligned_probs: torch.Tensor | None
    prev_sources: torch.Tensor
    step: int
    masks: VocabMasks
    generator: torch.Generator | None = None
    #: Set by the engine: one U[0, 1) draw per row from the row's own random numbers.
    draw_uniform: Callable[[], torch.Tensor] | None = None
    base_rest_mass: torch.Tensor | None = None
    aligned_rest_mass: torch.Tensor | None = None
    #: Set by the engine: which rows are at a word boundary (where the pick is used), each
    #: row's sample index within its call, and how many tokens each row has written so far
    #: and how many of them the base model wrote (what a ``base_share`` target tracks), and
    #: how many it may still write.
    at_boundary: torch.Tensor | None = None
    sample_ids: torch.Tensor | None = None
    written: torch.Tensor | None = None
    base_written: torch.Tensor | None = None
    #: Tokens each row may still write (its call's token budget).
    remaining: torch.Tensor | None = None

    def uniform(self) -> torch.Tensor:
        """One U[0, 1) number per row, ``[batch]``."""
        if self.draw_uniform is not None:
            return self.draw_uniform()
        return torch.rand(self.batch_size, generator=self.generator, device=self.device)

    def probs(self, source: Source) -> torch.Tensor:
        probs = self.base_probs if source == "base" else self.aligned_probs
        if probs is None:
            raise ValueError(
                f"router read the {source} distribution without declaring it in its `needs` "
                f"(e.g. needs = frozenset({{{source!r}}}); a router without `needs` reads both)"
            )
        return probs

    @property
    def batch_size(self) -> int:
        return int(self.prev_sources.shape[0])

    @property
    def device(self) -> torch.device:
        return self.prev_sources.device


@runtime_checkable
class Router(Protocol):
    """The router interface: a callable returning True (base) or False (aligned) per row."""

    def __call__(self, inputs: RouterInputs) -> torch.Tensor: ...


BOTH: frozenset[Source] = frozenset({"base", "aligned"})


def router_needs(router: Callable[[RouterInputs], torch.Tensor]) -> frozenset[Source]:
    """The distributions ``router`` reads; a router that does not say is assumed to read both.

    ``needs`` is a collection of source names (``"base"``, ``"aligned"``); a single name as a
    string means that source alone. Anything else raises ``ValueError`` naming ``router``.
    """
    needs = getattr(router, "needs", BOTH)
    if isinstance(needs, str):
        needs = (needs,)  # one source, not its characters
    try:
        names = frozenset(needs)
    except TypeError:
        raise ValueError(
            "router.needs must be a collection of source names ('base', 'aligned'), got "
            f"{type(needs).__name__}"
        ) from None
    unknown = names - BOTH
    if unknown:
        raise ValueError(
            f"router.needs names unknown source(s) {sorted(map(repr, unknown))}; allowed "
            "values: 'base', 'aligned'"
        )
    return names  # type: ignore[return-value]


class ConstantRouter:
    """``aligned`` / ``base``: always the same model (the single-model baselines)."""

    needs: frozenset[Source] = frozenset()

    def __init__(self, source: Source) -> None:
        self.source = source

    def __call__(self, inputs: RouterInputs) -> torch.Tensor:
        return torch.full(
            (inputs.batch_size,), self.source == "base", dtype=torch.bool, device=inputs.device
        )


class RandomRouter:
    """``random``: base with probability gamma at each word boundary (the RAND ablation)."""

    needs: frozenset[Source] = frozenset()

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma

    def __call__(self, inputs: RouterInputs) -> torch.Tensor:
        return inputs.uniform() < self.gamma

    def signal(self, inputs: RouterInputs) -> torch.Tensor:
        """Higher sends a word to the base model sooner (``base_share``): a coin."""
        return 1.0 - inputs.uniform()


class ProbabilityRouter:
    """``P``: base when the gate model is unsure, i.e. ``max_y P_gate(y) < gamma``.

    Larger gamma sends more words to the base model (more diversity).
    """

    def __init__(self, gamma: float, gate: Source = "base") -> None:
        self.gamma = gamma
        self.gate = gate
        self.needs: frozenset[Source] = frozenset({gate})

    def __call__(self, inputs: RouterInputs) -> torch.Tensor:
        return inputs.probs(self.gate).amax(dim=-1) < self.gamma

    def signal(self, inputs: RouterInputs) -> torch.Tensor:
        """Higher sends a word to the base model sooner: the gate model's doubt."""
        return 1.0 - inputs.probs(self.gate).amax(dim=-1)


class EntropyRouter:
    """``H``: base when the gate distribution's entropy (nats) exceeds gamma.

    Smaller gamma sends more words to the base model.
    """

    def __init__(self, gamma: float, gate: Source = "base") -> None:
        self.gamma = gamma
        self.gate = gate
        self.needs: frozenset[Source] = frozenset({gate})

    def __call__(self, inputs: RouterInputs) -> torch.Tensor:
        return self.signal(inputs) > self.gamma

    def signal(self, inputs: RouterInputs) -> torch.Tensor:
        """Higher sends a word to the base model sooner: the gate distribution's entropy."""
        probs = inputs.probs(self.gate)
        return -(probs * probs.clamp_min(1e-30).log()).sum(dim=-1)


class ContentRouter:
    """``PUNC`` / ``FC``: aligned when its top-1 token is in a class, else base.

    The class is punctuation/formatting (``PUNC``) or function words (``FC``); the top-1 token
    is read from the aligned model (ours: the aligned model is the better judge of structure).
    """

    needs: frozenset[Source] = frozenset({"aligned"})

    def __init__(self, token_class: str) -> None:
        if token_class not in ("punctuation", "function_word"):
            raise ValueError(f"token_class={token_class!r}: allowed 'punctuation', 'function_word'")
        self.token_class = token_class

    def locked(self, inputs: RouterInputs) -> torch.Tensor:
        """Rows whose aligned top-1 token is in the class (locked to the aligned model)."""
        mask: torch.Tensor = getattr(inputs.masks, self.token_class)
        top1 = inputs.probs("aligned").argmax(dim=-1)
        return mask[top1]

    def __call__(self, inputs: RouterInputs) -> torch.Tensor:
        return ~self.locked(inputs)


class LockedRouter:
    """``P-PUNC`` etc.: the content rule first (its tokens go to aligned), then a logit rule."""

    def __init__(self, content: ContentRouter, logit: ProbabilityRouter | EntropyRouter) -> None:
        self.content = content
        self.logit = logit
        self.needs: frozenset[Source] = content.needs | logit.needs

    def __call__(self, inputs: RouterInputs) -> torch.Tensor:
        return ~self.content.locked(inputs) & self.logit(inputs)

    def locked(self, inputs: RouterInputs) -> torch.Tensor:
        return self.content.locked(inputs)

    def signal(self, inputs: RouterInputs) -> torch.Tensor:
        return self.logit.signal(inputs)


class NudgingRouter:
    """``nudging`` (Fei et al. 2024): the base model drafts; the aligned model takes the word
    when the base model is unsure (``max_y P_base(y) < gamma``)."""

    needs: frozenset[Source] = frozenset({"base"})

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma

    def __call__(self, inputs: RouterInputs) -> torch.Tensor:
        return inputs.probs("base").amax(dim=-1) >= self.gamma

    def signal(self, inputs: RouterInputs) -> torch.Tensor:
        """Higher sends a word to the base model sooner: the base model's confidence."""
        return inputs.probs("base").amax(dim=-1)


def checked_choice(want_base: object, prev_sources: torch.Tensor) -> torch.Tensor:
    """A router's answer as a boolean tensor ``[batch]``, or a ``ValueError`` naming ``router``.

    Only ``torch.bool`` is accepted: a float or integer tensor (a probability, a NaN, a 0/1
    that might be a source index) is refused rather than cast, since a cast would silently
    send every non-zero value, NaN included, to the base model.
    """
    if not isinstance(want_base, torch.Tensor):
        raise ValueError(
            "router must return a boolean tensor of shape [batch] "
            f"({prev_sources.shape[0]},), got {type(want_base).__name__}"
        )
    if want_base.shape != prev_sources.shape:
        raise ValueError(
            "router must return a boolean tensor of shape [batch] "
            f"({prev_sources.shape[0]},), got shape {tuple(want_base.shape)}"
        )
    if want_base.dtype != torch.bool:
        raise ValueError(
            f"router must return a boolean tensor (True = base), got dtype {want_base.dtype}; "
            "compare explicitly, e.g. `probs < gamma`"
        )
    return want_base.to(device=prev_sources.device)


def build_router(config: RouterConfig) -> Callable[[RouterInputs], torch.Tensor]:
    """Instantiate the router that ``config`` names (a callable router is returned as is)."""
    strategy = config.strategy
    if not isinstance(strategy, str):
        return strategy
    gamma = config.resolved_gamma
    gate = config.gate
    if strategy in ("aligned", "base"):
        return ConstantRouter(strategy)  # type: ignore[arg-type]
    if strategy == "random":
        return RandomRouter(gamma)
    if strategy == "nudging":
        return NudgingRouter(gamma)
    logit_rules = {"P": ProbabilityRouter, "H": EntropyRouter}
    content_rules = {"PUNC": "punctuation", "FC": "function_word"}
    if strategy in logit_rules:
        return logit_rules[strategy](gamma, gate)
    if strategy in content_rules:
        return ContentRouter(content_rules[strategy])
    logit_name, content_name = strategy.split("-")
    return LockedRouter(
        ContentRouter(content_rules[content_name]), logit_rules[logit_name](gamma, gate)
    )
