"""Engine fixtures: the tiny pair loaded through the real loading code, and a spy router."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch

from baco_integrations import BacoEngine, RouterInputs


@dataclass
class SpyRouter:
    """Wraps a router and records what it saw and decided at every step."""

    inner: Callable[[RouterInputs], torch.Tensor]
    seen: list[RouterInputs] = field(default_factory=list)
    decisions: list[torch.Tensor] = field(default_factory=list)

    def __call__(self, inputs: RouterInputs) -> torch.Tensor:
        decision = self.inner(inputs)
        self.seen.append(inputs)
        self.decisions.append(decision.clone())
        return decision


@pytest.fixture
def spy() -> Callable[..., SpyRouter]:
    return SpyRouter


@pytest.fixture(params=["shared", "cross"])
def any_engine(request: pytest.FixtureRequest) -> BacoEngine:
    """Both kinds of pair: one tokenizer, and two (a cross-family pair)."""
    return request.getfixturevalue("engine" if request.param == "shared" else "cross_engine")
