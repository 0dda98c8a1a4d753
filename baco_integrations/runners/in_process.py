"""The in-process runner: a transformers causal LM in this process, with its KV cache over the
rows of the running batch.

Tokens appended to a row stay pending until a distribution is next asked for; then every row's
pending tokens run in one batched forward (the lazy catch-up). Rows may be ragged (a
cross-family pair re-tokenizes each row's text on its own): each row's new tokens sit at the
right of the forward's block, pad slots and the slots of tokens dropped by ``rewind`` are
masked out, and position ids are given per row. When every row has the same number pending
(always, for a pair with one tokenizer) this is a plain batched forward, and with the static
cache a compiled one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import torch
from transformers import Cache, CompileConfig, DynamicCache, PreTrainedModel, StaticCache

from .base import Distributions, ModelFacts, ModelRunner, RowSettings, RunnerCounters
from .kv_cache import concat_rows, merge_masks, select_rows
from .model_calls import cache_argument, input_device, run_prompts

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


def model_facts(model: PreTrainedModel) -> ModelFacts:
    """What a transformers model declares: output rows, EOS ids, context window, name."""
    config = model.config.get_text_config()
    eos: set[int] = set()
    generation = getattr(model, "generation_config", None)
    for value in (getattr(generation, "eos_token_id", None), config.eos_token_id):
        if isinstance(value, int):
            eos.add(value)
        elif isinstance(value, list | tuple):
            eos.update(int(v) for v in value)
    window = getattr(config, "max_position_embeddings", None)
    return ModelFacts(
        vocab_size=int(model.get_output_embeddings().weight.shape[0]),
        eos_ids=frozenset(eos),
        context_window=int(window) if isinstance(window, int) and window > 0 else None,
        device=input_device(model),
        name=str(getattr(model.config, "name_or_path", "") or ""),
    )


class TransformersRunner(ModelRunner):
    """A transformers model run in this process (module docstring)."""

    def __init__(
        self,
        model: PreTrainedModel,
        pad_id: int,
        cache_implementation: CacheImplementation = "dynamic",
        compiled: bool = False,
    ) -> None:
        if cache_implementation not in CACHE_IMPLEMENTATIONS:
            raise ValueError(
                f"cache_implementation={cache_implementation!r} is not supported; allowed "
                f"values: {', '.join(map(repr, CACHE_IMPLEMENTATIONS))}"
            )
        self.model = model.eval()
        self.pad_id = pad_id
        self.cache_implementation: CacheImplementation = cache_implementation
        #: Single-token steps run through ``torch.compile`` (static cache only: fixed shapes).
        #: transformers keeps the compiled call on the model, so it is compiled once, not per
        #: batch; prefill and multi-token catch-ups stay eager, as in ``generate``.
        self.compiled = compiled
        self._facts = model_facts(model)
        self.device = self._facts.device
        self.cache_argument = cache_argument(model)
        self._forward_passes = 0
        self._forward_tokens = 0
        self._reset()

    def _reset(self) -> None:
        self.cache: Cache | None = None
        self.compiled_step: Callable[..., Any] | None = None
        self.mask = torch.empty(0, dtype=torch.long)
        self.slots = 0  # columns of the mask (and slots of the cache) in use
        self.next_position: list[int] = []
        self.run_slots: list[list[int]] = []  # per row: cache slots of its response tokens
        self.pending: list[list[int]] = []
        self.fresh: list[bool] = []  # the row's logits are those of its last token
        self._logits = torch.empty(0)

    @property
    def facts(self) -> ModelFacts:
        return self._facts

    @property
    def rows(self) -> int:
        return len(self.pending)

    @property
    def static(self) -> bool:
        return self.cache_implementation == "static"

    @property
    def joins_running_rows(self) -> bool:
        return not self.static  # a static cache is sized for one batch

    def counters(self) -> RunnerCounters:
        return RunnerCounters(self._forward_passes, self._forward_tokens)

    # ------------------------------------------------------------- rows joining

    @torch.inference_mode()
    def add_rows(
        self,
        prompts: Sequence[list[int]],
        repeats: Sequence[int],
        capacity: int,
        sampling: Sequence[RowSettings] | None = None,
    ) -> None:
        # ``sampling`` is unused: the loop draws from this runner's full distributions.
        if self.cache is None:
            self._prefill(prompts, repeats, capacity)
            return
        if self.static:
            raise ValueError("rows cannot join a static cache; it is sized for one batch")
        joining = TransformersRunner(self.model, self.pad_id)
        joining._prefill(prompts, repeats, capacity)
        self._merge(joining, spare=capacity)

    def _prefill(self, prompts: Sequence[list[int]], repeats: Sequence[int], capacity: int) -> None:
        """Run the left-padded prompts once; prompt ``i``'s cache serves ``repeats[i]`` rows."""
        width = max(len(p) for p in prompts)
        if self.compiled and self.compiled_step is None:
            self.compiled_step = self.model.get_compiled_call(compile_config(self.device))
        cache: Cache = (
            StaticCache(config=self.model.config, max_cache_len=width + capacity)
            if self.static
            else DynamicCache(config=self.model.config)
        )
        mask, last_logits = run_prompts(self.model, prompts, self.pad_id, cache)
        self._forward_passes += 1
        self._forward_tokens += int(mask.sum())
        index = [i for i, k in enumerate(repeats) for _ in range(k)]
        rows = torch.tensor(index, device=self.device)
        if len(index) != len(prompts):
            select_rows(cache, rows, mark_static=self.compiled_step is not None)
        # Preallocated so that each step slices instead of concatenating (no quadratic copies).
        self.mask = torch.zeros(
            (len(index), width + capacity), dtype=torch.long, device=self.device
        )
        self.mask[:, :width] = mask[rows]
        self.cache, self.slots = cache, width
        self.next_position = [len(prompts[i]) for i in index]
        self.run_slots = [[] for _ in index]
        self.pending = [[] for _ in index]
        self.fresh = [True] * len(index)
        self._logits = last_logits[rows.to(last_logits.device)].float().to(self.device)

    def _merge(self, other: TransformersRunner, spare: int) -> None:
        """Append ``other``'s rows (just prefilled). Slots are right-aligned at the merged slot
        count, so each row's slots shift by its side's offset; pending tokens stay pending."""
        assert self.cache is not None and other.cache is not None
        slots = concat_rows(self.cache, self.slots, other.cache, other.slots)
        self.mask = merge_masks(self.mask, self.slots, other.mask, other.slots, spare)
        for runner in (self, other):
            shift = slots - runner.slots
            runner.run_slots = [[s + shift for s in row] for row in runner.run_slots]
        self.slots = slots
        for name in ("next_position", "run_slots", "pending", "fresh"):
            getattr(self, name).extend(getattr(other, name))
        self._logits = torch.cat([self._logits, other._logits])
        self._forward_passes += other._forward_passes
        self._forward_tokens += other._forward_tokens
        other.release()

    # ------------------------------------------------------------- rows going on

    def append(self, row: int, tokens: Sequence[int]) -> None:
        if tokens:
            self.pending[row].extend(tokens)
            self.fresh[row] = False

    @torch.inference_mode()
    def rewind(self, row: int, length: int) -> None:
        run = len(self.run_slots[row])
        if length >= run:
            del self.pending[row][length - run :]
            dropped: list[int] = []
        else:
            dropped = self.run_slots[row][length:]
            self.mask[row, dropped] = 0
            del self.run_slots[row][length:]
            self.next_position[row] -= len(dropped)
            self.pending[row] = []
        self.fresh[row] = not self.pending[row] and not dropped

    def distributions(self, rows: Sequence[int]) -> Distributions:
        if any(not self.fresh[row] for row in rows):
            self._catch_up()
        return Distributions(self._logits)

    @torch.inference_mode()
    def _catch_up(self) -> None:
        """Run every row's pending tokens in one batched forward (ragged rows padded left)."""
        width = max(len(p) for p in self.pending)
        if width == 0:
            return
        ids, positions, ran = self._block(width)
        uniform = len(ran) == len(self.pending) and all(len(p) == width for p in self.pending)
        step = self.compiled_step
        call = step if step is not None and width == 1 and uniform else self.model
        # A static cache takes the whole preallocated mask (one shape for every step) and is
        # told where to write; a dynamic cache grows with the mask.
        extra = (
            {"cache_position": torch.arange(width, device=self.device) + self.slots}
            if self.static
            else {}
        )
        out = call(
            input_ids=ids.to(self.device),
            attention_mask=self.mask if self.static else self.mask[:, : self.slots + width],
            position_ids=positions.to(self.device),
            **{self.cache_argument: self.cache},
            use_cache=True,
            logits_to_keep=1,
            **extra,
        )
        logits = out.logits[:, -1].float().to(self.device)
        if call is not self.model:
            logits = logits.clone()  # CUDA graphs reuse their output buffers
        if uniform:
            self._logits = logits
        else:
            index = torch.tensor(ran, device=self.device)
            self._logits[index] = logits[index]
        self._settle(width, ran)

    def _block(self, width: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """The forward's ``[rows, width]`` ids and positions (each row's tokens at the right),
        with the mask's new slots set; returns the rows that run tokens."""
        self._reserve(width)
        rows = len(self.pending)
        offsets = torch.arange(width)
        if all(len(tokens) == width for tokens in self.pending):  # one tensor, no per-row work
            self.mask[:, self.slots : self.slots + width] = 1
            positions = torch.tensor(self.next_position)[:, None] + offsets
            return torch.tensor(self.pending, dtype=torch.long), positions, list(range(rows))
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        positions = torch.zeros((rows, width), dtype=torch.long)
        ran: list[int] = []
        for row, tokens in enumerate(self.pending):
            positions[row] = self.next_position[row]  # pad slots: any position, masked out
            if not tokens:
                continue
            start = width - len(tokens)
            ids[row, start:] = torch.tensor(tokens, dtype=torch.long)
            positions[row, start:] = offsets[: len(tokens)] + self.next_position[row]
            self.mask[row, self.slots + start : self.slots + width] = 1
            ran.append(row)
        return ids, positions, ran

    def _settle(self, width: int, ran: list[int]) -> None:
        for row in ran:
            tokens = self.pending[row]
            start = self.slots + width - len(tokens)
            self.run_slots[row].extend(range(start, start + len(tokens)))
            self.next_position[row] += len(tokens)
            self._forward_tokens += len(tokens)
            self.pending[row] = []
            self.fresh[row] = True
        self.slots += width
        self._forward_passes += 1

    def _reserve(self, count: int) -> None:
        """Make room in the mask for ``count`` more slots (a static cache has all it gets)."""
        if self.slots + count <= self.mask.shape[1]:
            return
        if self.static:
            raise ValueError(
                f"the static cache holds {self.mask.shape[1]} slots and is full; it is sized "
                "for the prompt plus max_new_tokens of one batch"
            )
        columns = max(2 * self.mask.shape[1], self.slots + count)
        grown = self.mask.new_zeros((self.mask.shape[0], columns))
        grown[:, : self.slots] = self.mask[:, : self.slots]
        self.mask = grown

    # ------------------------------------------------------------- rows leaving

    def select(self, keep: Sequence[int]) -> None:
        assert self.cache is not None
        index = torch.tensor(list(keep), dtype=torch.long, device=self.device)
        select_rows(self.cache, index, mark_static=self.compiled_step is not None)
        self.mask = self.mask[index]
        self._logits = self._logits[index]
        for name in ("next_position", "run_slots", "pending", "fresh"):
            values = getattr(self, name)
            setattr(self, name, [values[r] for r in keep])

    def release(self) -> None:
        compiled_step = self.compiled_step
        self._reset()
        self.compiled_step = compiled_step  # kept on the model by transformers anyway
