"""Turning one model's logits into a token: transformers' warpers, then a seeded draw."""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import (
    LogitsProcessorList,
    MinPLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .config import MIN_TEMPERATURE


class Sampler:
    """Temperature, then top-k / top-p / min-p (transformers' warper semantics), then a draw.

    Temperature is applied separately (:meth:`temper`) because the routers read the tempered,
    untruncated distributions (ours; docs/algorithm.md, Sampling). Temperature 0 means greedy: the
    draw is an argmax and the routers read the plain softmax.

    A temperature in (0, ``MIN_TEMPERATURE``) (1e-5) is greedy too, exactly as 0: dividing
    float32 logits by it would overflow them to inf and NaN (garbage tokens), and a draw at
    such a temperature is an argmax anyway.
    """

    def __init__(self, temperature: float, top_k: int, top_p: float, min_p: float) -> None:
        self.greedy = temperature < MIN_TEMPERATURE
        self.temperature = 0.0 if self.greedy else temperature
        warpers = LogitsProcessorList()
        if not self.greedy:
            if top_k > 0:
                warpers.append(TopKLogitsWarper(top_k=top_k))
            if top_p < 1.0:
                warpers.append(TopPLogitsWarper(top_p=top_p))
            if min_p > 0.0:
                warpers.append(MinPLogitsWarper(min_p=min_p))
        self.warpers = warpers

    def temper(self, logits: torch.Tensor) -> torch.Tensor:
        """Scale float32 logits by the temperature (identity when greedy)."""
        if self.greedy or self.temperature == 1.0:
            return logits
        return logits / self.temperature

    def truncate(self, scores: torch.Tensor) -> torch.Tensor:
        """Apply the truncation warpers to tempered scores (masked entries become -inf)."""
        if not self.warpers:
            return scores
        # These warpers ignore input_ids; an empty tensor satisfies the interface.
        no_ids = scores.new_empty((scores.shape[0], 0), dtype=torch.long)
        return self.warpers(no_ids, scores)

    def draw(self, scores: torch.Tensor, noise: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """One token id per row from (truncated) scores; ``noise(width)`` gives the rows'
        Exp(1) draws (``[rows, width]``), asked for only when sampling."""
        if self.greedy:
            return scores.argmax(dim=-1)
        probs = torch.softmax(scores, dim=-1)
        # Exponential-race sampling (as in gpt-fast): argmax(p / E), E ~ Exp(1), is an exact
        # categorical draw that needs no host synchronisation.
        return (probs / noise(probs.shape[1])).argmax(dim=-1)
