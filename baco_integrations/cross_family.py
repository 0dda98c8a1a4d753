"""Cross-family pairs: decoding on text when the two models' tokenizers differ.

ALGORITHM.md, Cross-family pairs. Text is the shared currency. The model that writes the
current word appends its own tokens to its own KV cache; the other model is left stale. When a
model's distribution is next needed at a word boundary (the router reads it, or the model takes
over the next word), it re-tokenizes the committed text, keeps its cache up to the longest
common token prefix with what it had seen, and runs only the differing suffix.

Rows of a batch drift apart here (each re-tokenizes its own text), so catch-ups are ragged:
each row's new tokens sit at the right of the forward's block, pad slots and the slots of
tokens dropped at a re-tokenization are masked out, and position ids are given per row.

The output's ``token_ids`` are in the aligned tokenizer's vocabulary: the text is frozen into
pieces at every word boundary and each piece is tokenized by the aligned tokenizer, so the ids
decode back to the text and each id has one source.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from .config import Source
from .detokenize import IncrementalDetokenizer
from .model_calls import cache_argument, input_device, run_prompts
from .outputs import FinishReason, SampleRecord
from .routers import BOTH, NO_SOURCE, SOURCE_ALIGNED, SOURCE_BASE, RouterInputs, checked_choice
from .stops import find_stop
from .vocab import VocabMasks

if TYPE_CHECKING:
    from .engine import _Job

SOURCES: tuple[Source, Source] = ("base", "aligned")

#: Tokens of recent context a writer's detokenizer keeps after a switch (spacing rules of
#: SentencePiece-style decoders look back only a token or two).
_DETOKENIZER_CONTEXT = 6


def _decode(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids that decode back to ``text``, as the model would continue a prompt with it.

    Tokenizers that prepend a dummy-prefix space (legacy SentencePiece) are handled by
    encoding after a newline anchor and dropping the anchor's tokens.
    """
    if not text:
        return []
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if _decode(tokenizer, ids) == text:
        return ids
    anchor = list(tokenizer("\n", add_special_tokens=False)["input_ids"])
    anchored = list(tokenizer("\n" + text, add_special_tokens=False)["input_ids"])
    if anchored[: len(anchor)] == anchor:
        tail = anchored[len(anchor) :]
        if _decode(tokenizer, tail) == text:
            return tail
    return ids  # best effort: this tokenizer cannot spell the text exactly


def encode_with_ends(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[int]]:
    """``encode_text`` plus, per token, where its text ends in ``text``."""
    ids = encode_text(tokenizer, text)
    detokenizer = IncrementalDetokenizer(tokenizer)
    ends, length = [], 0
    for token_id in ids:
        length += len(detokenizer.push(token_id))
        ends.append(min(length, len(text)))
    if ends:
        ends[-1] = len(text)
    return ids, ends


class TextModelState:
    """One model's KV cache and view of the text in a cross-family decoding run.

    Per row, ``cached`` holds the response tokens in the cache (with their slots) and
    ``pending`` the tokens still to run. :meth:`sync` replaces the row's view by a
    re-tokenization of the committed text, keeping the longest common prefix.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        vocab_size: int,
        decode_device: torch.device,
    ) -> None:
        self.model = model
        self.cache_argument = cache_argument(model)
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.decode_device = decode_device
        self.device = input_device(model)
        self.cache: DynamicCache | None = None
        self.mask = torch.empty(0)
        self.slots = 0
        self.next_position: list[int] = []
        self.cached: list[list[int]] = []
        self.cached_slots: list[list[int]] = []
        self.pending: list[list[int]] = []
        self.fresh: list[bool] = []
        self._logits = torch.empty(0)
        self.forward_passes = 0
        self.forward_tokens = 0
        self.synced_tokens = 0
        self.reused_tokens = 0
        #: (row, tokens kept from the cache, tokens to run) for each re-tokenization
        self.sync_log: list[tuple[int, int, int]] = []

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[list[int]], n: int, pad_id: int, capacity: int) -> None:
        """Run the left-padded prompts once and share each prompt's cache with its n samples."""
        self.cache = DynamicCache(config=self.model.config)
        mask, last_logits = run_prompts(self.model, prompts, pad_id, self.cache)
        width = mask.shape[1]
        self.forward_passes += 1
        self.forward_tokens += int(mask.sum())
        if n > 1:
            self.cache.batch_repeat_interleave(n)
        rows = len(prompts) * n
        self.mask = torch.zeros((rows, width + capacity), dtype=torch.long, device=self.device)
        self.mask[:, :width] = mask.repeat_interleave(n, dim=0)
        self.slots = width
        self.next_position = [len(p) for p in prompts for _ in range(n)]
        self.cached = [[] for _ in range(rows)]
        self.cached_slots = [[] for _ in range(rows)]
        self.pending = [[] for _ in range(rows)]
        self.fresh = [True] * rows
        logits = last_logits[:, : self.vocab_size].float().repeat_interleave(n, dim=0)
        self._logits = logits.to(self.decode_device)

    def view(self, row: int) -> list[int]:
        """The row's response tokens as this model sees them (cached, then pending)."""
        return self.cached[row] + self.pending[row]

    def append(self, row: int, token: int) -> None:
        """This model wrote ``token`` for ``row``; it runs at the next catch-up."""
        self.pending[row].append(token)
        self.fresh[row] = False

    @torch.inference_mode()
    def sync(self, row: int, target: list[int]) -> None:
        """Make the row's view ``target`` (a re-tokenization of the committed text)."""
        view = self.view(row)
        if view == target:
            return
        common = 0
        for a, b in zip(view, target, strict=False):
            if a != b:
                break
            common += 1
        # Keep cached tokens up to the common prefix, but always run at least the last token:
        # its logits are the ones needed next.
        keep = min(common, len(self.cached[row]), max(len(target) - 1, 0))
        dropped = self.cached_slots[row][keep:]
        if dropped:
            self.mask[row, dropped] = 0
        self.cached[row] = self.cached[row][:keep]
        self.cached_slots[row] = self.cached_slots[row][:keep]
        self.next_position[row] -= len(dropped)
        self.pending[row] = target[keep:]
        self.fresh[row] = not self.pending[row] and not dropped
        self.synced_tokens += len(self.pending[row])
        self.reused_tokens += keep
        self.sync_log.append((row, keep, len(self.pending[row])))

    def _reserve(self, count: int) -> None:
        if self.slots + count > self.mask.shape[1]:
            grown = torch.zeros(
                (self.mask.shape[0], max(2 * self.mask.shape[1], self.slots + count)),
                dtype=self.mask.dtype,
                device=self.device,
            )
            grown[:, : self.slots] = self.mask[:, : self.slots]
            self.mask = grown

    @torch.inference_mode()
    def catch_up(self) -> None:
        """Run every row's pending tokens in one batched forward (ragged rows padded left)."""
        width = max(len(p) for p in self.pending)
        if width == 0:
            return
        rows = len(self.pending)
        self._reserve(width)
        ids = torch.zeros((rows, width), dtype=torch.long)
        positions = torch.zeros((rows, width), dtype=torch.long)
        ran: list[int] = []
        for row, tokens in enumerate(self.pending):
            positions[row] = self.next_position[row]  # pad slots: any position, masked out
            if not tokens:
                continue
            start = width - len(tokens)
            ids[row, start:] = torch.tensor(tokens, dtype=torch.long)
            positions[row, start:] = torch.arange(len(tokens)) + self.next_position[row]
            self.mask[row, self.slots + start : self.slots + width] = 1
            ran.append(row)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=self.mask[:, : self.slots + width],
            position_ids=positions.to(self.device),
            **{self.cache_argument: self.cache},
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, : self.vocab_size].float().to(self.decode_device)
        index = torch.tensor(ran, device=self.decode_device)
        self._logits[index] = logits[index]
        for row in ran:
            tokens = self.pending[row]
            start = self.slots + width - len(tokens)
            self.cached[row].extend(tokens)
            self.cached_slots[row].extend(range(start, start + len(tokens)))
            self.next_position[row] += len(tokens)
            self.forward_tokens += len(tokens)
            self.pending[row] = []
            self.fresh[row] = True
        self.slots += width
        self.forward_passes += 1

    def logits(self, rows: Sequence[int]) -> torch.Tensor:
        """Next-token logits ``[batch, vocab]``; up to date for ``rows`` (others may be stale)."""
        if any(not self.fresh[row] for row in rows):
            self.catch_up()
        return self._logits

    def release(self) -> None:
        self.cache = None
        self.pending = []


@dataclass
class _Piece:
    start: int  # first character in the sample's text
    first_token: int  # index of its first aligned token
    source: Source


@dataclass
class TextSample(SampleRecord):
    """One sample's committed text, frozen into aligned-tokenizer pieces at word boundaries
    (``token_ids``, ``sources`` and ``ends`` cover the frozen text)."""

    aligned_tokenizer: PreTrainedTokenizerBase = field(kw_only=True)
    frozen: int = 0
    writer: Source | None = None
    pieces: list[_Piece] = field(default_factory=list)

    def write(self, delta: str, source: Source, starts_word: bool) -> None:
        """Append the writer's text; a token that starts a word freezes the text before it."""
        if starts_word or source != self.writer:
            self._freeze(len(self.text))
        self.writer = source
        self.text += delta

    def _freeze(self, upto: int) -> None:
        if upto <= self.frozen or self.writer is None:
            return
        ids, ends = encode_with_ends(self.aligned_tokenizer, self.text[self.frozen : upto])
        self.pieces.append(_Piece(self.frozen, len(self.token_ids), self.writer))
        self.token_ids.extend(ids)
        self.sources.extend([self.writer] * len(ids))
        self.ends.extend(self.frozen + end for end in ends)
        self.frozen = upto

    def finish(self, reason: FinishReason) -> None:
        self._freeze(len(self.text))
        self.finish_reason = reason

    def check_stop(self, stops: Sequence[str], longest: int, delta: str) -> bool:
        """Cut the text before the first stop string that ``delta`` completed."""
        cut = find_stop(self.text, stops, longest, delta)
        if cut is None:
            return False
        if cut < self.frozen:
            # Unfreeze the pieces the cut reaches into; the rest is re-tokenized at finish.
            while self.pieces and self.pieces[-1].start >= cut:
                self.pieces.pop()
            piece = self.pieces.pop()
            del self.token_ids[piece.first_token :], self.sources[piece.first_token :]
            del self.ends[piece.first_token :]
            self.frozen, self.writer = piece.start, piece.source
        self.text = self.text[:cut]
        self.finish("stop")
        return True


@dataclass
class TextWriters:
    """Per sample and model, the incremental detokenizer of the model writing the sample."""

    tokenizers: dict[Source, PreTrainedTokenizerBase]
    detokenizers: list[IncrementalDetokenizer | None]

    @classmethod
    def create(cls, tokenizers: dict[Source, PreTrainedTokenizerBase], rows: int) -> TextWriters:
        return cls(tokenizers, [None] * rows)

    def start(self, row: int, source: Source, context: list[int]) -> None:
        """``source`` takes over ``row``; ``context`` is its view of the text so far."""
        detokenizer = IncrementalDetokenizer(self.tokenizers[source])
        detokenizer.seed(context[-_DETOKENIZER_CONTEXT:])
        self.detokenizers[row] = detokenizer

    def push(self, row: int, token: int) -> str:
        detokenizer = self.detokenizers[row]
        assert detokenizer is not None
        return detokenizer.push(token)

    def flush(self, row: int) -> str:
        detokenizer = self.detokenizers[row]
        return detokenizer.flush() if detokenizer is not None else ""


def _pad_scores(scores: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad ``[batch, vocab]`` scores with -inf to ``width`` columns."""
    if scores.shape[1] == width:
        return scores
    return torch.nn.functional.pad(scores, (0, width - scores.shape[1]), value=float("-inf"))


def _continues_word(continuation: torch.Tensor, token: int) -> bool:
    return token < continuation.shape[0] and bool(continuation[token])


def decode_text(
    job: _Job,
    states: dict[Source, TextModelState],
    masks: dict[Source, VocabMasks],
    eos_ids: dict[Source, set[int]],
    generator: torch.Generator,
) -> Iterator[list[int]]:
    """The cross-family decoding loop; after each step yield the indices of changed samples.

    Each step: the writer of each row proposes a token from its own distribution; if it
    continues the word, it is taken. Otherwise the row is at a word boundary: the models the
    router reads are synced to the row's text and the router picks; an incoming model is
    synced too and draws a token that starts a new word. Draws run on ``[batch, widest
    vocab]`` whichever models ran, so lazy and lock-step decoding give the same tokens;
    lock-step (``lazy=False``) syncs and runs both models at every boundary. A model that runs
    for its own rows' proposals first syncs the other rows too, so each model runs at most
    one forward per step.
    """
    settings, sampler, device = job.settings, job.sampler, job.device
    samples = cast(list[TextSample], job.samples)
    rows = len(samples)
    width = max(state.vocab_size for state in states.values())
    stops = settings.stop
    longest_stop = max(map(len, stops)) if stops else 0
    needs = job.router_needs if settings.lazy else BOTH
    writers = TextWriters.create({s: states[s].tokenizer for s in SOURCES}, rows)
    writer: list[Source | None] = [None] * rows
    active = [True] * rows
    blocked: dict[Source, torch.Tensor] = {}
    for source in SOURCES:  # continuation tokens, padded to the common width
        blocked[source] = torch.zeros(width, dtype=torch.bool, device=device)
        blocked[source][: masks[source].vocab_size] = masks[source].continuation
    # Looked up per row and token on the host: one copy per call, not a device read per token.
    continuation = {source: masks[source].continuation.cpu() for source in SOURCES}

    def sync(source: Source, targets: Sequence[int]) -> None:
        state = states[source]
        for row in targets:
            if writer[row] != source:  # the writer's own tokens already spell the text
                state.sync(row, encode_text(state.tokenizer, samples[row].text))

    def truncated(source: Source, targets: Sequence[int]) -> torch.Tensor:
        tempered = sampler.temper(states[source].logits(targets))
        return _pad_scores(sampler.truncate(tempered), width)

    def finish(row: int, reason: FinishReason) -> None:
        source = writer[row]
        if source is not None and (tail := writers.flush(row)):
            samples[row].write(tail, source, starts_word=False)
        samples[row].finish(reason)
        active[row] = False

    for step in range(job.max_steps):
        job.stats.steps += 1
        live = [r for r in range(rows) if active[r]]
        token: list[int] = [0] * rows
        for source in SOURCES:
            if any(writer[r] == source for r in live):
                # This model runs now for its own rows' proposals: bring the other rows up to
                # date in the same forward (a boundary syncs to the committed text, which this
                # step's proposals do not change), so that a row reaching a boundary, or
                # handed to this model, costs no second pass. Extra rows in a forward are
                # cheap; another forward is not.
                sync(source, [r for r in live if writer[r] not in (None, source)])
        if any(writer[r] is not None for r in live):
            proposals = torch.zeros((rows, width), device=device)
            for source in SOURCES:
                if own := [r for r in live if writer[r] == source]:
                    index = torch.tensor(own, device=device)
                    proposals[index] = truncated(source, own)[index]
            token = sampler.draw(proposals, generator).tolist()
        chosen: list[Source | None] = list(writer)
        at_boundary = [
            r
            for r in live
            if (w := writer[r]) is None or not _continues_word(continuation[w], token[r])
        ]
        switched: set[int] = set()
        if at_boundary:
            probs: dict[Source, torch.Tensor] = {}
            for source in SOURCES:
                if source in needs:
                    sync(source, at_boundary)
                    probs[source] = torch.softmax(
                        sampler.temper(states[source].logits(at_boundary)), dim=-1
                    )
            prev_sources = torch.tensor(
                [
                    NO_SOURCE if w is None else SOURCE_BASE if w == "base" else SOURCE_ALIGNED
                    for w in writer
                ],
                device=device,
            )
            want_base = checked_choice(
                job.router(
                    RouterInputs(
                        base_probs=probs.get("base"),
                        aligned_probs=probs.get("aligned"),
                        prev_sources=prev_sources,
                        step=step,
                        masks=masks["aligned"],
                        generator=generator,
                    )
                ),
                prev_sources,
            ).tolist()
            incoming: dict[Source, list[int]] = {
                source: [
                    r
                    for r in at_boundary
                    if (source == "base") == want_base[r] and writer[r] != source
                ]
                for source in SOURCES
            }
            if incoming["base"] or incoming["aligned"]:
                fresh_scores = torch.zeros((rows, width), device=device)
                for source, rows_in in incoming.items():
                    if not rows_in:
                        continue
                    sync(source, rows_in)
                    index = torch.tensor(rows_in, device=device)
                    scores = truncated(source, rows_in)[index]
                    # An incoming model starts a new word: it may not continue the other's.
                    taking_over = torch.tensor(
                        [writer[r] is not None for r in rows_in], device=device
                    )
                    fresh_scores[index] = scores.masked_fill(
                        taking_over[:, None] & blocked[source][None, :], float("-inf")
                    )
                drawable = torch.isfinite(fresh_scores).any(dim=-1).tolist()
                fresh = sampler.draw(fresh_scores, generator).tolist()
                for source, rows_in in incoming.items():
                    for r in rows_in:
                        if drawable[r]:
                            token[r], chosen[r] = fresh[r], source
                            switched.add(r)

        last_step = step == job.max_steps - 1
        for r in live:
            source = chosen[r]
            assert source is not None
            if r in switched:
                if (previous := writer[r]) is not None and (tail := writers.flush(r)):
                    samples[r].write(tail, previous, starts_word=False)
                writers.start(r, source, states[source].view(r))
                writer[r] = source
            if token[r] in eos_ids[source]:
                finish(r, "stop")
                continue
            states[source].append(r, token[r])
            delta = writers.push(r, token[r])
            samples[r].write(
                delta, source, starts_word=not _continues_word(continuation[source], token[r])
            )
            if stops and samples[r].check_stop(stops, longest_stop, delta):
                active[r] = False
            elif last_step:
                finish(r, "length")
        yield live
        if not any(active):
            break
