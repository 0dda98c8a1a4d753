"""One model's KV cache over a batch of rows that all see the same token ids (a shared
tokenizer): the fast path, fully tensorised."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import torch
from transformers import Cache, CompileConfig, DynamicCache, StaticCache

from ..model_calls import run_prompts
from .kv_cache import concat_rows, merge_masks, select_rows
from .pair import PairMember

#: KV cache kinds: ``"dynamic"`` grows with the text (transformers' ``DynamicCache``);
#: ``"static"`` is preallocated for the prompt plus ``max_new_tokens`` (``StaticCache``), so a
#: step writes in place instead of concatenating.
CacheImplementation = Literal["dynamic", "static"]
CACHE_IMPLEMENTATIONS: tuple[str, ...] = get_args(CacheImplementation)


def compile_config(device: torch.device) -> CompileConfig:
    """``generate``'s compile settings, with CUDA graphs only where there is CUDA; shapes that
    change between calls (batch, prompt width) are compiled once more as dynamic."""
    return CompileConfig(
        fullgraph=False,
        dynamic=None,
        mode="reduce-overhead" if device.type == "cuda" else "default",
    )


class TokenModelState:
    """One model's KV cache, attention mask and positions during a decoding run.

    Tokens appended with :meth:`push` stay pending until the model's distribution is next
    needed; :meth:`logits` then runs all of them in one multi-token forward (the lazy
    catch-up). Every row has the same number of pending tokens, so this is a plain batched
    forward.
    """

    def __init__(
        self,
        member: PairMember,
        decode_device: torch.device,
        cache_implementation: CacheImplementation = "dynamic",
        compiled: bool = False,
    ) -> None:
        self.member = member
        self.decode_device = decode_device
        self.device = member.device
        self.static = cache_implementation == "static"
        #: Single-token steps run through ``torch.compile`` (static cache only: fixed shapes).
        #: transformers keeps the compiled call on the model, so it is compiled once, not per
        #: decoding call; prefill and multi-token catch-ups stay eager, as in ``generate``.
        self.compiled = compiled
        self.compiled_step: Callable[..., Any] | None = None  # fetched at the first prefill
        self.cache: Cache | None = None
        self.mask = torch.empty(0)
        self.length = 0
        self.positions = torch.empty(0)
        self.pending: list[torch.Tensor] = []
        self._logits: torch.Tensor | None = None
        self.forward_passes = 0
        self.forward_tokens = 0

    @property
    def model(self) -> Any:
        return self.member.model

    @property
    def vocab_size(self) -> int:
        return self.member.vocab_size

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[list[int]], repeats: Sequence[int], capacity: int) -> None:
        """Run the left-padded prompts once; prompt ``i``'s cache serves ``repeats[i]`` rows
        (its samples). ``capacity`` is the most tokens any row will add."""
        width = max(len(p) for p in prompts)
        if self.compiled and self.compiled_step is None:
            self.compiled_step = self.model.get_compiled_call(compile_config(self.device))
        if self.static:
            self.cache = StaticCache(config=self.model.config, max_cache_len=width + capacity)
        else:
            self.cache = DynamicCache(config=self.model.config)
        mask, last_logits = run_prompts(self.model, prompts, self.member.pad_id, self.cache)
        self.forward_passes += 1
        self.forward_tokens += int(mask.sum())
        rows = torch.arange(len(prompts), device=self.device).repeat_interleave(
            torch.tensor(list(repeats), device=self.device)
        )
        if len(rows) != len(prompts):
            select_rows(self.cache, rows, mark_static=self.compiled_step is not None)
        # Preallocated so that each step slices instead of concatenating (no quadratic copies).
        self.mask = torch.zeros((len(rows), width + capacity), dtype=torch.long, device=self.device)
        self.mask[:, :width] = mask[rows]
        self.length = width
        self.positions = mask.sum(-1)[rows]  # each row's next position
        self._logits = (
            last_logits[rows.to(last_logits.device), : self.vocab_size]
            .float()
            .to(self.decode_device)
        )

    def push(self, tokens: torch.Tensor) -> None:
        """Append one token per row; it is run at the next catch-up."""
        self.pending.append(tokens.to(self.device))
        self._logits = None

    @property
    def ready(self) -> bool:
        return self._logits is not None

    @torch.inference_mode()
    def logits(self) -> torch.Tensor:
        """Next-token logits ``[rows, vocab]`` (float32), catching up on pending tokens."""
        if self._logits is None:
            self._logits = self._catch_up().to(self.decode_device)
        return self._logits

    def _catch_up(self) -> torch.Tensor:
        count = len(self.pending)
        ids = torch.stack(self.pending, dim=1)
        if not self.static:
            self.reserve(count)
        self.mask[:, self.length : self.length + count] = 1
        self.length += count
        offsets = torch.arange(count, device=self.device)
        # A static cache takes the whole preallocated mask (one shape for every step) and says
        # where to write; a dynamic cache grows with the mask.
        step = self.compiled_step
        call = step if step is not None and count == 1 else self.model
        extra = {"cache_position": offsets + (self.length - count)} if self.static else {}
        out = call(
            input_ids=ids,
            attention_mask=self.mask if self.static else self.mask[:, : self.length],
            position_ids=self.positions[:, None] + offsets,
            **{self.member.cache_argument: self.cache},
            use_cache=True,
            logits_to_keep=1,
            **extra,
        )
        self.positions = self.positions + count
        self.pending.clear()
        self.forward_passes += 1
        self.forward_tokens += count * int(ids.shape[0])
        logits = out.logits[:, -1, : self.vocab_size].float()
        return logits.clone() if call is not self.model else logits  # CUDA graphs reuse buffers

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the rows ``keep`` (indices, in order); their caches stay as they are."""
        assert self.cache is not None
        index = keep.to(self.device)
        select_rows(self.cache, index, mark_static=self.compiled_step is not None)
        self.mask = self.mask[index]
        self.positions = self.positions[index]
        self.pending = [p[index] for p in self.pending]
        if self._logits is not None:
            self._logits = self._logits[keep.to(self._logits.device)]

    @torch.inference_mode()
    def merge(self, other: TokenModelState, spare: int) -> None:
        """Append ``other``'s rows (just prefilled) to this state's, with room for ``spare``
        more tokens. Rows here first run their pending tokens: every row must have the same
        number pending, and the joining rows have none."""
        assert self.cache is not None and other.cache is not None
        if self.pending:
            self.logits()
        assert self._logits is not None and other._logits is not None
        slots = concat_rows(self.cache, self.length, other.cache, other.length)
        self.mask = merge_masks(self.mask, self.length, other.mask, other.length, spare)
        self.length = slots
        self.positions = torch.cat([self.positions, other.positions])
        self._logits = torch.cat([self._logits, other._logits])
        self.forward_passes += other.forward_passes
        self.forward_tokens += other.forward_tokens
        other.release()

    def reserve(self, count: int) -> None:
        """Make room in the attention mask for ``count`` more tokens (dynamic cache)."""
        if self.length + count > self.mask.shape[1]:
            grown = self.mask.new_zeros(
                (self.mask.shape[0], max(2 * self.mask.shape[1], self.length + count))
            )
            grown[:, : self.length] = self.mask[:, : self.length]
            self.mask = grown

    def release(self) -> None:
        """Free the cache now rather than when the state is collected."""
        self.cache = None
        self.pending.clear()
        self._logits = None
