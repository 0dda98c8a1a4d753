"""``base_share``: a target share of base-written tokens, tracked per sample.

γ is a threshold on a router's signal (a probability for ``P``, nats for ``H``, ...), and one γ
gives samples of one prompt very different base shares. With ``base_share=s`` the engine sets
each sample's threshold itself, at every word boundary, so that its realized share (what
``BacoOutput.base_fraction`` reports) tracks ``s``:

* the threshold is a quantile of the router's signal (its "send this word to base" score):
  the quantile at ``1 - level`` over a calibration of the pair (the signal at the word
  boundaries of a fixed set of prompts, computed once per engine, :class:`Calibration`) and
  the signals this sample has met so far;
* ``level`` starts at ``s`` and is corrected by the sample's error so far,
  ``level = s + gain · (s - realized)``, and is at least what the rest of its token budget
  must hold to land on ``s``, so a sample whose words came out shorter or rarer than
  expected catches up.

Words a content rule locks to the aligned model (``PUNC``, ``FC``) cannot go to base; they
cap what is reachable, and the realized share then stays below the target.

Everything a sample's decision reads is its own (the fixed calibration, its own signals and
tokens), so a seeded call gives the same tokens alone or beside other calls.
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from .config import Source

if TYPE_CHECKING:
    from .config import GenerationSettings
    from .outputs import BacoOutput
from .routers import (
    EntropyRouter,
    LockedRouter,
    NudgingRouter,
    ProbabilityRouter,
    RouterInputs,
)

#: Tokens per calibration prompt.
CALIBRATION_TOKENS = 24
#: How strongly a sample's error so far moves its quantile level (measured on the offline
#: pair's held-out prompts against 2 and against the budget term alone: docs/performance.md).
SHARE_GAIN = 4.0


class ThresholdRule(Protocol):
    """A router that exposes its signal (higher: base sooner)."""

    needs: frozenset[Source]

    def signal(self, inputs: RouterInputs) -> torch.Tensor: ...


@dataclass(frozen=True)
class Calibration:
    """The routers' raw signals at the word boundaries of a fixed set of prompts, one value per
    boundary: each model's top probability and entropy, and whether the aligned model's top
    token is punctuation or a function word (``PUNC`` / ``FC`` lock those words)."""

    base_top: torch.Tensor
    aligned_top: torch.Tensor
    base_entropy: torch.Tensor
    aligned_entropy: torch.Tensor
    punctuation: torch.Tensor
    function_word: torch.Tensor

    def prior(self, rule: Any) -> torch.Tensor:
        """The signal ``rule`` would have read at the calibration's open boundaries."""
        open_ = torch.ones_like(self.punctuation)
        if isinstance(rule, LockedRouter):
            open_ = ~getattr(self, rule.content.token_class)
            rule = rule.logit
        if isinstance(rule, ProbabilityRouter):
            values = 1.0 - getattr(self, f"{rule.gate}_top")
        elif isinstance(rule, EntropyRouter):
            values = getattr(self, f"{rule.gate}_entropy")
        elif isinstance(rule, NudgingRouter):
            values = self.base_top
        else:  # a coin: its quantiles are known
            return torch.linspace(0.0, 1.0, 257)
        return values[open_]


class CalibrationRecorder:
    """A router that records the calibration's features at word boundaries while sending a
    random 30% of words to base (so that contexts mix as BACO's do)."""

    needs: frozenset[Source] = frozenset({"base", "aligned"})

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []

    def __call__(self, inputs: RouterInputs) -> torch.Tensor:
        base, aligned = inputs.probs("base"), inputs.probs("aligned")
        top1 = aligned.argmax(dim=-1)
        features = torch.stack(
            [
                base.amax(dim=-1),
                aligned.amax(dim=-1),
                _entropy(base),
                _entropy(aligned),
                inputs.masks.punctuation[top1].float(),
                inputs.masks.function_word[top1].float(),
            ],
            dim=-1,
        )
        boundary = inputs.at_boundary
        self.rows.append((features if boundary is None else features[boundary]).cpu())
        return inputs.uniform() < 0.3

    def calibration(self) -> Calibration:
        table = torch.cat(self.rows) if self.rows else torch.zeros((0, 6))
        return Calibration(
            base_top=table[:, 0],
            aligned_top=table[:, 1],
            base_entropy=table[:, 2],
            aligned_entropy=table[:, 3],
            punctuation=table[:, 4].bool(),
            function_word=table[:, 5].bool(),
        )


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-30).log()).sum(dim=-1)


class ShareTarget:
    """A threshold router whose threshold each sample sets itself (module docstring)."""

    #: The engine gives it each row's sample index and tokens written (RouterInputs).
    tracks_shares = True

    def __init__(self, rule: ThresholdRule, target: float, prior: torch.Tensor) -> None:
        self.rule, self.target = rule, target
        self.prior = prior.float().cpu()
        self.needs = rule.needs
        self.seen: dict[int, list[float]] = {}  # per sample: its signals at open boundaries

    def __call__(self, inputs: RouterInputs) -> torch.Tensor:
        signal = self.rule.signal(inputs).float().cpu()
        locked = getattr(self.rule, "locked", None)
        open_ = ~locked(inputs).cpu() if callable(locked) else torch.ones_like(signal).bool()
        boundary = _or_all(inputs.at_boundary, signal)
        level = self._levels(inputs)
        samples = _sample_ids(inputs)
        choice = torch.zeros_like(signal, dtype=torch.bool)
        for row in (boundary & open_).nonzero().flatten().tolist():
            seen = self.seen.setdefault(samples[row], [])
            values = torch.cat([self.prior, torch.tensor(seen)]) if seen else self.prior
            if values.numel():
                threshold = torch.quantile(values, 1.0 - float(level[row]))
                choice[row] = bool(signal[row] > threshold) or float(level[row]) >= 1.0
            seen.append(float(signal[row]))
        return choice.to(inputs.device)

    def _levels(self, inputs: RouterInputs) -> torch.Tensor:
        """Each row's quantile level: the target, moved by the row's error so far."""
        rows = inputs.batch_size
        written = _or_zeros(inputs.written, rows).float().cpu()
        base = _or_zeros(inputs.base_written, rows).float().cpu()
        realized = torch.where(written > 0, base / written.clamp_min(1.0), self.target)
        level = self.target + SHARE_GAIN * (self.target - realized)
        if inputs.remaining is not None:
            # What the rest of the budget must hold for the whole sample to land on target:
            # a sample behind catches up at least that fast.
            remaining = inputs.remaining.float().cpu().clamp_min(1.0)
            needed = (self.target * (written + remaining) - base) / remaining
            level = torch.where(written > 0, torch.maximum(level, needed), level)
        return level.clamp(0.0, 1.0)


def _or_all(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(like, dtype=torch.bool) if mask is None else mask.cpu().bool()


def _or_zeros(values: torch.Tensor | None, rows: int) -> torch.Tensor:
    return torch.zeros(rows) if values is None else values


def _sample_ids(inputs: RouterInputs) -> list[int]:
    if inputs.sample_ids is None:
        return list(range(inputs.batch_size))
    return [int(i) for i in inputs.sample_ids.tolist()]


def calibration_prompts() -> Sequence[str]:
    """The prompts the calibration decodes: the packaged tuning half."""
    from .evaluation.sweep.prompts import load_prompts

    return [item.prompt for item in load_prompts("builtin:tuning")]


#: How far below its target a call's mean share may land before it is told so.
OUT_OF_REACH = 0.1


def warn_if_out_of_reach(
    settings: GenerationSettings, outputs: Sequence[Sequence[BacoOutput]]
) -> None:
    """Say so when a call's samples could not reach their ``base_share`` (words its content
    rule locked to the aligned model, or answers too short to hold a base word)."""
    target = settings.base_share
    shares = [o.base_fraction for row in outputs for o in row if o.num_tokens]
    if target is None or not shares or statistics.mean(shares) >= target - OUT_OF_REACH:
        return
    name = settings.router_config().name
    why = (
        f"router {name!r} locks some words to the aligned model"
        if "-" in name
        else "the samples had few words the router could give to the base model"
    )
    warnings.warn(
        f"base_share={target}: the samples reached {statistics.mean(shares):.2f} on average "
        f"(read each sample's base_fraction); {why}",
        RuntimeWarning,
        stacklevel=4,
    )
