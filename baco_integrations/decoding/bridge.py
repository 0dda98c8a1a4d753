"""How the two models share a row's text: the one thing that differs between a pair with a
shared tokenizer and a cross-family pair.

* :class:`TokenBridge`: one vocabulary, so every committed token goes to both models.
* :class:`TextBridge`: two vocabularies, so the writer appends its own tokens and the other
  model is brought to a re-tokenization of the committed text when its distribution is next
  needed, keeping what it had seen up to the longest common token prefix (transformers'
  assisted decoding across tokenizers re-encodes the same way).

Both keep a :class:`~.views.ModelView` per model (what it has seen of each row, and the runner
that runs it) and give the step (:mod:`.step`) the same view: per source, distributions
``[rows, width]`` that are current for the rows asked for, and a way to commit the chosen
tokens. Neither runs a model: runners do (:mod:`baco_integrations.runners`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..detokenize import IncrementalDetokenizer
from ..runners import RowSettings
from .logprobs import Scored
from .pair import SOURCE_IDS, SOURCE_NAMES, Pair
from .randomness import row_seed
from .request import DecodeStats, Request
from .samples import SampleRecord, TextSample, TokenSample
from .views import ModelView

#: Tokens of recent context a writer's detokenizer keeps after a switch (spacing rules of
#: SentencePiece-style decoders look back only a token or two).
_DETOKENIZER_CONTEXT = 6


@dataclass(frozen=True)
class Fetched:
    """One model's scores for a step: ``[rows, width]`` logits on the pair's device (ids past
    its vocabulary are ``-inf``); the tokens its engine drew when it samples itself
    (``Distributions.proposals``, -1: none); and, for a top-k backend, each row's probability
    mass outside the listed tokens (``Distributions.rest_mass``)."""

    logits: torch.Tensor
    proposals: list[int] | None
    rest_mass: torch.Tensor | None


class Bridge(ABC):
    """What the step needs from the two models, whichever kind of pair it decodes.

    ``views[source]`` is each model's view of the batch's rows; joining, leaving, releasing,
    reading distributions and counting work are the same for both kinds of pair and live here.
    """

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.views = (ModelView(pair.members[0].runner), ModelView(pair.members[1].runner))

    @abstractmethod
    def _bring_up_to_date(self, source: int, rows: Sequence[int], writers: Sequence[int]) -> None:
        """Give ``source``'s runner what ``rows`` say before their distributions are read."""

    @abstractmethod
    def commit(
        self,
        rows: Sequence[SampleRecord],
        tokens: list[int],
        sources: list[int],
        writers: list[int],
    ) -> list[str | None]:
        """Commit each row's token to its sample; a row's text delta, or None for an
        end-of-sequence token (which is not written)."""

    @abstractmethod
    def after_step(self, tokens: list[int], lock_step: bool) -> None:
        """Hand the step's tokens (of the rows that go on) to the models."""

    @abstractmethod
    def finish_views(
        self,
        rows: Sequence[int],
        tokens: list[int],
        sources: list[int],
        samples: Sequence[SampleRecord],
    ) -> list[int | None]:
        """Give both models the whole kept response of ``rows`` (finishing with ``tokens``,
        drawn from ``sources``) so that each can score it; per row, how many of a view's
        first tokens spell the kept text (None: all of them; slicing by None keeps all)."""

    def response_scores(
        self,
        rows: Sequence[int],
        tokens: list[int],
        sources: list[int],
        samples: Sequence[SampleRecord],
    ) -> list[tuple[Scored | None, Scored | None]]:
        """Each finishing row's kept response as each model (by source: aligned, base) sees
        it, with the model's log-prob of each of its tokens (temperature 1, nothing
        truncated); None where the runner cannot score."""
        kept = self.finish_views(rows, tokens, sources, samples)
        per_model: list[list[Scored | None]] = []
        for view in self.views:
            scores = view.runner.response_logprobs(rows)
            per_model.append(
                [
                    None if score is None else Scored(view.rows[row][:keep], score[:keep])
                    for row, score, keep in zip(rows, scores, kept, strict=True)
                ]
            )
        return list(zip(per_model[0], per_model[1], strict=True))

    def distributions(self, source: int, rows: Sequence[int], writers: Sequence[int]) -> Fetched:
        """``source``'s next-token scores, current for ``rows`` (see :class:`Fetched`)."""
        self._bring_up_to_date(source, rows, writers)
        member = self.pair.members[source]
        scores = member.runner.distributions(rows)
        logits = scores.logits[:, : member.vocab_size].to(self.pair.device)
        if logits.shape[1] != self.pair.width:
            logits = torch.nn.functional.pad(
                logits, (0, self.pair.width - logits.shape[1]), value=float("-inf")
            )
        return Fetched(
            logits,
            None if scores.proposals is None else scores.proposals.tolist(),
            None if scores.rest_mass is None else scores.rest_mass.to(self.pair.device),
        )

    def view(self, source: int, row: int) -> Sequence[int]:
        """The row's response as ``source`` sees it (its own token ids)."""
        return self.views[source].rows[row]

    def join(self, requests: Sequence[Request]) -> None:
        """Add the requests' rows to both models after the running ones. If the second model
        fails, the first gives its new rows back: the running rows stay as they were."""
        repeats = [r.n for r in requests for _ in r.prompts]
        capacity = max(r.max_steps for r in requests)
        sampling = [_row_settings(r, s.sample_index) for r in requests for s in r.samples]
        joined: list[tuple[ModelView, int]] = []
        try:
            for source, view in zip(SOURCE_IDS, self.views, strict=True):
                before = len(view.rows)
                prompts = [ids for r in requests for ids in r.prompt_ids[source]]
                view.add_rows(prompts, repeats, capacity, sampling)
                joined.append((view, before))
        except BaseException:
            for view, before in joined:
                if before:
                    view.select(range(before))
                else:
                    view.release()
            raise

    def select(self, keep: Sequence[int]) -> None:
        """Keep only the rows ``keep`` (indices, in order)."""
        for view in self.views:
            view.select(keep)

    def release(self) -> None:
        """Free every cache now rather than when the runners' rows are collected."""
        for view in self.views:
            view.release()

    def counters(self) -> DecodeStats:
        """Work done so far by each model (forwards, tokens; re-tokenization across
        families)."""
        stats = DecodeStats()
        for name, view in zip(SOURCE_NAMES, self.views, strict=True):
            counters = view.runner.counters()
            setattr(stats, f"{name}_forward_passes", counters.forward_passes)
            setattr(stats, f"{name}_forward_tokens", counters.forward_tokens)
            setattr(stats, f"{name}_synced_tokens", view.synced_tokens)
            setattr(stats, f"{name}_reused_tokens", view.reused_tokens)
        return stats


def _row_settings(request: Request, sample_index: int) -> RowSettings:
    """What a runner may know of one of ``request``'s rows: its sampling settings, with the
    sample's own seed, and whether its call was cancelled."""
    settings = request.settings
    seed = None if settings.seed is None else row_seed(settings.seed, sample_index)
    return RowSettings(
        settings.temperature,
        settings.top_k,
        settings.top_p,
        settings.min_p,
        seed,
        abandoned=request.abandoned,
        score=settings.logprobs,
    )


class TokenBridge(Bridge):
    """A shared tokenizer: tokens are the shared currency (the fast path)."""

    def _bring_up_to_date(self, source: int, rows: Sequence[int], writers: Sequence[int]) -> None:
        """Nothing to do: both models are given every committed token."""

    def commit(
        self,
        rows: Sequence[SampleRecord],
        tokens: list[int],
        sources: list[int],
        writers: list[int],
    ) -> list[str | None]:
        deltas: list[str | None] = []
        for sample, token, source in zip(rows, tokens, sources, strict=True):
            assert isinstance(sample, TokenSample)
            eos = token in self.pair.members[source].eos_ids
            deltas.append(None if eos else sample.append(token, source))
        return deltas

    def finish_views(
        self,
        rows: Sequence[int],
        tokens: list[int],
        sources: list[int],
        samples: Sequence[SampleRecord],
    ) -> list[int | None]:
        """Both models see every token: the last one goes to them, and a cut keeps the
        sample's ids."""
        for row in rows:
            if tokens[row] not in self.pair.members[sources[row]].eos_ids:
                for view in self.views:
                    view.append(row, tokens[row])
        return [len(sample.token_ids) for sample in samples]

    def after_step(self, tokens: list[int], lock_step: bool) -> None:
        for view in self.views:
            for row, token in enumerate(tokens):
                view.append(row, token)
            if lock_step:  # every model runs every step
                view.runner.distributions(range(len(tokens)))


class TextBridge(Bridge):
    """Different tokenizers: text is the shared currency (cross-family pairs)."""

    def __init__(self, pair: Pair) -> None:
        super().__init__(pair)
        self.samples: list[TextSample] = []
        # Looked up per row and token on the host: a list made once per vocabulary, not a
        # device read (or a tensor index) per token.
        self.continuation = [member.masks.continuation.tolist() for member in pair.members]

    def join(self, requests: Sequence[Request]) -> None:
        super().join(requests)
        self.samples.extend(s for r in requests for s in r.samples if isinstance(s, TextSample))

    def _bring_up_to_date(self, source: int, rows: Sequence[int], writers: Sequence[int]) -> None:
        """Rows another model wrote last are re-tokenized into ``source``'s view (the
        writer's own tokens already spell the text)."""
        view, tokenizer = self.views[source], self.pair.members[source].tokenizer
        for row in rows:
            if writers[row] != source:
                view.sync_text(row, self.samples[row].text, tokenizer)

    def commit(
        self,
        rows: Sequence[SampleRecord],
        tokens: list[int],
        sources: list[int],
        writers: list[int],
    ) -> list[str | None]:
        deltas: list[str | None] = []
        for row, (sample, token, source) in enumerate(zip(rows, tokens, sources, strict=True)):
            assert isinstance(sample, TextSample)
            view = self.views[source]
            if source != writers[row]:
                detokenizer = IncrementalDetokenizer(self.pair.members[source].tokenizer)
                detokenizer.seed(view.rows[row][-_DETOKENIZER_CONTEXT:])
                sample.switch(source, detokenizer)
            if token in self.pair.members[source].eos_ids:
                deltas.append(None)
                continue
            view.append(row, token)
            continues = token < len(self.continuation[source]) and self.continuation[source][token]
            deltas.append(sample.append(token, starts_word=not continues))
        return deltas

    def finish_views(
        self,
        rows: Sequence[int],
        tokens: list[int],
        sources: list[int],
        samples: Sequence[SampleRecord],
    ) -> list[int | None]:
        """The writers appended their tokens and the others re-tokenize the text; where a
        stop string or a limit cut it, both re-tokenize the kept text."""
        for source in SOURCE_IDS:
            view, tokenizer = self.views[source], self.pair.members[source].tokenizer
            for row, sample in zip(rows, samples, strict=True):
                if sample.cut or sources[row] != source:
                    view.sync_whole(row, sample.text, tokenizer)
        return [None for _ in rows]

    def after_step(self, tokens: list[int], lock_step: bool) -> None:
        """Nothing to hand over: the writers appended their tokens, the others sync when
        their distributions are next read."""

    def select(self, keep: Sequence[int]) -> None:
        super().select(keep)
        self.samples = [self.samples[r] for r in keep]

    def release(self) -> None:
        super().release()
        self.samples = []
