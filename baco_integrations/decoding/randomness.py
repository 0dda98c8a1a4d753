"""Where each row's random numbers come from.

A seeded request gives each of its rows its own generator, seeded from the request's seed and
the row's sample index, so a row draws the same numbers whatever else shares the batch: alone,
in a batch of prompts, or beside other requests. Rows of unseeded requests share one generator
and draw together in one call.

A row consumes numbers only for its own decisions (a proposal once it has a writer, a
hand-over when it switches, a uniform when a random router decides its word), never because
of another row, so its draws do not depend on its neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_MASK64 = (1 << 64) - 1


def row_seed(seed: int, sample_index: int) -> int:
    """A 63-bit seed for sample ``sample_index`` of a request seeded with ``seed`` (SplitMix64
    finaliser: nearby seeds and indices give unrelated streams)."""
    z = (seed * 0x9E3779B97F4A7C15 + sample_index + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def unseeded_generator(device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.seed()
    return generator


class RowRandomness:
    """Random draws for chosen rows: per-row generators where a row has one, else a shared
    generator for all such rows at once."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.shared = unseeded_generator(device)
        #: One entry per row of the batch: its own generator, or None for the shared one.
        self.generators: list[torch.Generator | None] = []

    def _fill(self, out: torch.Tensor, rows: Sequence[int], fill: str) -> torch.Tensor:
        own = [self.generators[r] for r in rows]
        if all(g is None for g in own):
            return getattr(out, fill)(generator=self.shared)
        shared = [k for k, g in enumerate(own) if g is None]
        if shared:
            out[shared] = getattr(out[shared], fill)(generator=self.shared)
        for k, generator in enumerate(own):
            if generator is not None:
                getattr(out[k], fill)(generator=generator)
        return out

    def exponential(self, rows: Sequence[int], width: int) -> torch.Tensor:
        """``[len(rows), width]`` draws of Exp(1)."""
        out = torch.empty((len(rows), width), device=self.device)
        return self._fill(out, rows, "exponential_")

    def uniform(self, rows: Sequence[int]) -> torch.Tensor:
        """One U[0, 1) draw per row."""
        return self._fill(torch.empty(len(rows), device=self.device), rows, "uniform_")

    def snapshot(self) -> list[torch.Tensor]:
        """Every generator's state, so that a step that fails draws nothing."""
        generators = [self.shared, *(g for g in self.generators if g is not None)]
        return [g.get_state() for g in generators]

    def restore(self, states: list[torch.Tensor]) -> None:
        generators = [self.shared, *(g for g in self.generators if g is not None)]
        for generator, state in zip(generators, states, strict=True):
            generator.set_state(state)
