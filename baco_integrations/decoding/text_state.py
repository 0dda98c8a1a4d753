"""One model's KV cache and view of the text in a cross-family decoding run (tokenizers
differ, so text is the shared currency).

The model that writes a row's current word appends its own tokens; the other model is left
stale. When its distribution is next needed, the row's committed text is re-tokenized, the
cache is kept up to the longest common token prefix with what the model had seen, and only
the differing suffix runs. Rows drift apart here (each re-tokenizes its own text), so
catch-ups are ragged: each row's new tokens sit at the right of the forward's block, pad slots
and the slots of tokens dropped at a re-tokenization are masked out, and position ids are
given per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase

from ..detokenize import IncrementalDetokenizer
from ..model_calls import run_prompts
from .kv_cache import concat_rows, merge_masks
from .pair import PairMember


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

    def __init__(self, member: PairMember, decode_device: torch.device) -> None:
        self.member = member
        self.model = member.model
        self.tokenizer = member.tokenizer
        self.vocab_size = member.vocab_size
        self.decode_device = decode_device
        self.device = member.device
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
        #: (row, tokens kept from the cache, tokens to run) of the last re-tokenization
        self.last_sync: tuple[int, int, int] | None = None

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[list[int]], repeats: Sequence[int], capacity: int) -> None:
        """Run the left-padded prompts once; prompt ``i``'s cache serves ``repeats[i]`` rows.
        ``capacity`` is a first guess of the slots the run needs (the mask grows past it)."""
        self.cache = DynamicCache(config=self.model.config)
        mask, last_logits = run_prompts(self.model, prompts, self.member.pad_id, self.cache)
        width = mask.shape[1]
        self.forward_passes += 1
        self.forward_tokens += int(mask.sum())
        index = [i for i, k in enumerate(repeats) for _ in range(k)]
        rows = torch.tensor(index, device=self.device)
        if len(index) != len(prompts):
            self.cache.batch_select_indices(rows)
        self.mask = torch.zeros(
            (len(index), width + capacity), dtype=torch.long, device=self.device
        )
        self.mask[:, :width] = mask[rows]
        self.slots = width
        self.next_position = [len(prompts[i]) for i in index]
        self.cached = [[] for _ in index]
        self.cached_slots = [[] for _ in index]
        self.pending = [[] for _ in index]
        self.fresh = [True] * len(index)
        logits = last_logits[rows.to(last_logits.device), : self.vocab_size].float()
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
        self.last_sync = (row, keep, len(self.pending[row]))

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
            **{self.member.cache_argument: self.cache},
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

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the rows ``keep`` (indices, in order)."""
        assert self.cache is not None
        self.cache.batch_select_indices(keep.to(self.device))
        self.mask = self.mask[keep.to(self.device)]
        self._logits = self._logits[keep.to(self._logits.device)]
        rows = keep.tolist()
        for name in ("next_position", "cached", "cached_slots", "pending", "fresh"):
            values = getattr(self, name)
            setattr(self, name, [values[r] for r in rows])

    @torch.inference_mode()
    def merge(self, other: TextModelState, spare: int) -> None:
        """Append ``other``'s rows (just prefilled) to this state's. Slots are right-aligned
        at the merged slot count, so each row's cached slots shift by its side's offset;
        pending tokens stay pending (catch-ups here are ragged anyway)."""
        assert self.cache is not None and other.cache is not None
        slots = concat_rows(self.cache, self.slots, other.cache, other.slots)
        self.mask = merge_masks(self.mask, self.slots, other.mask, other.slots, spare)
        for state in (self, other):
            shift = slots - state.slots
            state.cached_slots = [[s + shift for s in row] for row in state.cached_slots]
        self.slots = slots
        for name in ("next_position", "cached", "cached_slots", "pending", "fresh"):
            getattr(self, name).extend(getattr(other, name))
        self._logits = torch.cat([self._logits, other._logits])
        for name in ("forward_passes", "forward_tokens", "synced_tokens", "reused_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        other.release()

    def release(self) -> None:
        """Free the cache now rather than when the state is collected."""
        self.cache = None
        self.pending = []
