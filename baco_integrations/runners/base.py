"""The one interface between the decoding loop and a model: a runner.

A runner runs one model over the rows of a running batch. The loop tells it what each row's
response is (``append`` tokens, ``rewind`` to a shorter prefix after a re-tokenization), asks
it for the next-token distributions of the rows it needs (``distributions``), and tells it
which rows stay when others leave (``select``). When and how the model runs is the runner's
business: the in-process runner (:mod:`.in_process`) runs every row's pending tokens in one
batched forward when a distribution is asked for (the lazy catch-up), a remote runner would
send them to its engine. The loop never sees a cache, a mask or a model.

Rows are indexed ``0..rows-1`` in the order they were added; ``select`` renumbers them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelFacts:
    """What the loop must know about a model, read once from the runner."""

    #: Columns of the runner's distributions (its output vocabulary, padding rows included).
    vocab_size: int
    #: End-of-sequence ids the model declares (its config and generation config); the pair
    #: adds the tokenizer's own.
    eos_ids: frozenset[int]
    #: The longest sequence the model takes, when it declares one.
    context_window: int | None
    #: Where the runner's distributions come back.
    device: torch.device
    #: A name for outputs and logs (a hub id, a path, an endpoint's model name).
    name: str


@dataclass(frozen=True)
class RunnerCounters:
    """Work a runner has done since it was made: forwards, and tokens run through them."""

    forward_passes: int = 0
    forward_tokens: int = 0


def _never() -> bool:
    return False


@dataclass(frozen=True)
class RowSettings:
    """What a runner may know of a row's call: how its tokens are drawn (the request's
    settings, the sample's own seed) and whether the call was given up. A runner whose engine
    samples (a remote one) drafts with them and stops waiting for a row whose call was
    cancelled; an in-process runner needs neither."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    #: The sample's seed (None: unseeded).
    seed: int | None = None
    #: True once the row's call was cancelled (read from any thread).
    abandoned: Callable[[], bool] = _never
    #: Record the log-prob of each of the row's response tokens under this model, as its
    #: forwards run them (:meth:`ModelRunner.response_logprobs`).
    score: bool = False


class RowsFailed(RuntimeError):
    """Some rows' distributions could not be had (a remote engine failed for them); the
    runner kept what it got for the others. ``errors`` maps row index to its error."""

    def __init__(self, errors: dict[int, BaseException]) -> None:
        first = next(iter(errors.values()))
        super().__init__(str(first))
        self.errors = errors


@dataclass(frozen=True)
class Distributions:
    """Next-token scores of a runner's rows, ``[rows, vocab_size]`` float32 logits.

    A backend that returns only its top-k tokens gives those entries' log-probabilities
    (``-inf`` elsewhere) and, per row, the probability mass of every other token in
    ``rest_mass``; a full distribution has ``rest_mass=None``. The loop samples and routes
    within the entries it is given, so a top-k distribution is renormalised over its k
    tokens (``docs/architecture.md``).

    A runner whose engine samples gives, per row, the token that engine drew at this position
    with the row's :class:`RowSettings` in ``proposals`` (-1: none); the loop takes it as the
    row's token when that model writes (docs/remote.md).
    """

    logits: torch.Tensor
    rest_mass: torch.Tensor | None = None
    proposals: torch.Tensor | None = None

    @classmethod
    def from_top_k(
        cls, ids: torch.Tensor, logprobs: torch.Tensor, vocab_size: int
    ) -> Distributions:
        """Rows of ``[rows, k]`` token ids and their log-probabilities as a distribution."""
        logits = torch.full((ids.shape[0], vocab_size), float("-inf"), device=ids.device)
        logits.scatter_(1, ids.long(), logprobs.float())
        rest = (1.0 - logprobs.float().exp().sum(dim=-1)).clamp_min(0.0)
        return cls(logits=logits, rest_mass=rest)


class ModelRunner(ABC):
    """One model, run over the rows of a running batch (see the module's docstring)."""

    @property
    @abstractmethod
    def facts(self) -> ModelFacts:
        """What the loop reads about the model (vocabulary, EOS ids, context, device)."""

    @property
    @abstractmethod
    def rows(self) -> int:
        """How many rows the runner holds."""

    @property
    def joins_running_rows(self) -> bool:
        """Whether rows can be added while others are running (continuous batching); a
        runner that says no is given new rows only when it holds none."""
        return True

    @property
    def full_distributions(self) -> bool:
        """Whether distributions score every token (a grammar can mask them exactly); a
        backend that returns its top-k only says no."""
        return True

    @property
    def top_logprobs_limit(self) -> int | None:
        """How many tokens a distribution lists at most (a top-k backend's k); None: all."""
        return None

    @property
    def cheap_extra_rows(self) -> bool:
        """Whether bringing more rows up to date than asked costs (almost) nothing, as in one
        batched forward; a remote runner pays a request per row and says no."""
        return True

    @abstractmethod
    def add_rows(
        self,
        prompts: Sequence[list[int]],
        repeats: Sequence[int],
        capacity: int,
        sampling: Sequence[RowSettings] | None = None,
    ) -> None:
        """Add rows after the current ones: prompt ``i`` (token ids) serves ``repeats[i]``
        rows (its samples). ``capacity`` is the most tokens any of them will add;
        ``sampling`` is each new row's (one per row). On failure no row is added."""

    @abstractmethod
    def append(self, row: int, tokens: Sequence[int]) -> None:
        """The row's response goes on with ``tokens``; they run when next needed."""

    @abstractmethod
    def rewind(self, row: int, length: int) -> None:
        """The row's response is only its first ``length`` tokens (a re-tokenization of the
        text kept that prefix); what came after is forgotten."""

    @abstractmethod
    def distributions(self, rows: Sequence[int]) -> Distributions:
        """Scores for every row, current for ``rows`` (others may be stale and must not be
        read). The runner may bring other rows up to date in the same work. A runner that
        fails for some rows only raises :class:`RowsFailed` (the loop fails their requests
        alone and asks again for the others)."""

    @abstractmethod
    def select(self, keep: Sequence[int]) -> None:
        """Keep only the rows ``keep`` (indices, in order); the others leave."""

    @abstractmethod
    def release(self) -> None:
        """Drop every row and what it holds (caches) now."""

    def close(self) -> None:
        """Drop the rows and whatever else the runner holds (connections, threads); the
        engine's ``shutdown`` calls it. A closed runner takes new rows again."""
        self.release()

    def response_logprobs(self, rows: Sequence[int]) -> list[list[float] | None]:
        """Each row's response tokens' log-probs under this model (temperature 1, nothing
        truncated), for rows added with ``RowSettings.score``, running pending tokens first;
        None where the runner cannot tell (a remote engine scores only what it drafts)."""
        return [None for _ in rows]

    @abstractmethod
    def counters(self) -> RunnerCounters:
        """Work done so far."""
