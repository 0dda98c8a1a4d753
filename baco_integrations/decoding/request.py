"""A validated call, ready to decode: its settings, prompts as token ids, samples and stats."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol

import torch

from ..config import GenerationSettings
from ..outputs import BacoOutput
from ..prompts import Prompt
from ..routers import BOTH, RouterInputs, build_router, router_needs
from ..sampling import Sampler
from .randomness import row_seed, seeded_generator
from .samples import SampleRecord


class Matchers(Protocol):
    """What a step asks of a constrained request's grammar (:class:`.grammar.SampleMatchers`)."""

    def apply(
        self,
        source: int,
        logits: torch.Tensor,
        samples: Sequence[SampleRecord],
        views: Sequence[Sequence[int]],
    ) -> torch.Tensor: ...


class DecodingCancelled(RuntimeError):
    """Raised by :meth:`BacoEngine.generate` when its ``cancel`` event was set."""


@dataclass
class DecodeStats:
    """Work done while one call decoded: steps, and forward passes and tokens run through each
    model (a forward that served several calls' rows counts for each of them)."""

    steps: int = 0
    base_forward_passes: int = 0
    aligned_forward_passes: int = 0
    base_forward_tokens: int = 0
    aligned_forward_tokens: int = 0
    #: Cross-family pairs: tokens run after re-tokenizing the text, and tokens kept in the
    #: cache because they matched (the longest common prefix).
    base_synced_tokens: int = 0
    aligned_synced_tokens: int = 0
    base_reused_tokens: int = 0
    aligned_reused_tokens: int = 0
    #: Steps the running batch took while this call waited to join it (continuous batching).
    waited_steps: int = 0

    def minus(self, earlier: DecodeStats) -> DecodeStats:
        return DecodeStats(
            **{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)}
        )


@dataclass
class Request:
    """One call's prompts and settings, the n samples of each prompt, and its progress.

    ``prompt_ids[source]`` holds each prompt's ids for that model (source ids index it).
    """

    settings: GenerationSettings
    prompts: list[Prompt]
    prompt_ids: tuple[list[list[int]], list[list[int]]]
    #: Steps this request may take (``max_new_tokens``, or less to fit the context window).
    max_steps: int
    samples: list[SampleRecord] = field(default_factory=list)
    router: Callable[[RouterInputs], torch.Tensor] = field(init=False)
    sampler: Sampler = field(init=False)
    #: Text is decoded token by token (for chunks) rather than once at the end.
    streaming: bool = False
    stats: DecodeStats = field(default_factory=DecodeStats)
    steps: int = 0
    #: The scheduler's step count when the call was submitted, and the steps it then waited.
    submitted_at_step: int = 0
    waited_steps: int = 0
    #: Set when the request left the batch (finished, cancelled or failed).
    done: bool = False
    error: BaseException | None = None
    #: Grammar matchers of a constrained call (``settings.constraint``), per sample and model.
    matchers: Matchers | None = None
    #: True once the caller gave the call up (the scheduler sets it from its ticket); a
    #: remote runner reads it to stop waiting on the call's in-flight HTTP requests.
    abandoned: Callable[[], bool] = field(default=lambda: False)

    def __post_init__(self) -> None:
        settings = self.settings
        config = settings.router_config()
        self.router = build_router(config)
        #: A user's callable router may raise mid-step; the built-in ones do not.
        self.custom_router = not isinstance(config.strategy, str)
        self.sampler = Sampler(settings.temperature, settings.top_k, settings.top_p, settings.min_p)
        #: The distributions the router reads (a bad ``needs`` fails here, before any
        #: decoding); lock-step decoding reads both.
        needs = router_needs(self.router)
        self.needs = needs if settings.lazy else BOTH
        self.longest_stop = max(map(len, settings.stop)) if settings.stop else 0
        #: The request's own generator, for routers' draws other than per-row coins.
        self.generator: torch.Generator | None = None

    def seed_generators(self, device: torch.device) -> list[torch.Generator | None]:
        """Each sample's own generator when the request is seeded (else None: the batch's
        shared generator), and the request's; see :mod:`.randomness`."""
        seed = self.settings.seed
        if seed is None:
            return [None] * len(self.samples)
        self.generator = seeded_generator(row_seed(seed, -1), device)
        return [seeded_generator(row_seed(seed, s.sample_index), device) for s in self.samples]

    @property
    def n(self) -> int:
        return self.settings.n

    @property
    def rows(self) -> int:
        return len(self.samples)

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.samples)

    def outputs(self) -> list[list[BacoOutput]]:
        n = self.n
        return [
            [s.output() for s in self.samples[i * n : (i + 1) * n]]
            for i in range(len(self.prompts))
        ]
