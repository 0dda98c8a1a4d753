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


def _logprobs_of(logits: torch.Tensor, tokens: Sequence[int]) -> list[float]:
    """``log_softmax(logits[i])[tokens[i]]`` for each row, without the softmax's output."""
    logits = logits.float()
    wanted = torch.tensor(list(tokens), device=logits.device)
    chosen = logits.gather(1, wanted[:, None])[:, 0]
    return (chosen - torch.logsumexp(logits, dim=-1)).tolist()


#: Per-row lists, kept in row order through joins and selections.
_ROW_LISTS = (
    "next_position",
    "run_slots",
    "pending",
    "fresh",
    "scoring",
    "run_ids",
    "scored",
    "pending_scored",
    "prompt_logits",
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
        # Rows that record their response's log-probs (RowSettings.score): the ids and
        # log-probs of the tokens run (beside run_slots), the log-probs already known of a
        # prefix of the pending tokens, and the logits after the prompt (for a rewind to 0).
        self.scoring: list[bool] = []
        self.run_ids: list[list[int]] = []
        self.scored: list[list[float]] = []
        self.pending_scored: list[list[float]] = []
        self.prompt_logits: list[torch.Tensor | None] = []

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
        scoring = [s.score for s in sampling] if sampling is not None else [False] * sum(repeats)
        if self.cache is None:
            self._prefill(prompts, repeats, capacity, scoring)
            return
        if self.static:
            raise ValueError("rows cannot join a static cache; it is sized for one batch")
        joining = TransformersRunner(self.model, self.pad_id)
        joining._prefill(prompts, repeats, capacity, scoring)
        self._merge(joining, spare=capacity)

    def _prefill(
        self,
        prompts: Sequence[list[int]],
        repeats: Sequence[int],
        capacity: int,
        scoring: Sequence[bool],
    ) -> None:
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
        self.scoring = list(scoring)
        self.run_ids = [[] for _ in index]
        self.scored = [[] for _ in index]
        self.pending_scored = [[] for _ in index]
        self.prompt_logits = [
            self._logits[r].clone() if score else None for r, score in enumerate(scoring)
        ]

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
        for name in _ROW_LISTS:
            getattr(self, name).extend(getattr(other, name))
        self._logits = torch.cat([self._logits, other._logits])
        self._forward_passes += other._forward_passes
        self._forward_tokens += other._forward_tokens
        other.release()

    # ------------------------------------------------------------- rows going on

    @torch.inference_mode()
    def append(self, row: int, tokens: Sequence[int]) -> None:
        if not tokens:
            return
        if self.scoring[row] and not self.pending[row] and not self.fresh[row]:
            # Every response token was dropped (a rewind to 0): the first token's log-prob
            # comes from the prompt's logits. A fresh row's comes, at the catch-up, from the
            # logits it holds; the others' from the forward that runs them.
            before = self.prompt_logits[row]
            assert before is not None
            self.pending_scored[row] = [_logprobs_of(before[None], [tokens[0]])[0]]
        self.pending[row].extend(tokens)
        self.fresh[row] = False

    @torch.inference_mode()
    def rewind(self, row: int, length: int) -> None:
        run = len(self.run_slots[row])
        repend = self.scoring[row] and 0 < length < run
        if repend:
            # The logits after the kept prefix were dropped with the rest: its last token
            # runs again (same position, same context) so the next token's log-prob is known.
            length -= 1
            again, again_score = self.run_ids[row][length], self.scored[row][length]
        if length >= run:
            del self.pending[row][length - run :]
            del self.pending_scored[row][length - run :]
            dropped: list[int] = []
        else:
            dropped = self.run_slots[row][length:]
            self.mask[row, dropped] = 0
            del self.run_slots[row][length:]
            del self.run_ids[row][length:], self.scored[row][length:]
            self.next_position[row] -= len(dropped)
            self.pending[row], self.pending_scored[row] = [], []
        if repend:
            self.pending[row], self.pending_scored[row] = [again], [again_score]
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
        self._score_first(ran)
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
            logits_to_keep=width if self._scores_block(ran) else 1,
            **extra,
        )
        self._score_block(out.logits, width, ran)
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

    def _scores_block(self, ran: list[int]) -> bool:
        """Whether a scoring row runs tokens whose log-probs only this forward gives."""
        return any(
            self.scoring[r] and len(self.pending_scored[r]) < len(self.pending[r]) for r in ran
        )

    def _score_first(self, ran: list[int]) -> None:
        """Scoring rows whose first pending token has no log-prob yet: read it from the
        logits the row holds (those after its last run token), all rows at once."""
        rows = [r for r in ran if self.scoring[r] and not self.pending_scored[r]]
        if rows:
            index = torch.tensor(rows, device=self._logits.device)
            firsts = _logprobs_of(self._logits[index], [self.pending[r][0] for r in rows])
            for row, value in zip(rows, firsts, strict=True):
                self.pending_scored[row] = [value]

    def _score_block(self, logits: torch.Tensor, width: int, ran: list[int]) -> None:
        """Scoring rows: each pending token's log-prob from the block's logits before it."""
        for row in ran:
            tokens, known = self.pending[row], self.pending_scored[row]
            if not self.scoring[row] or len(known) == len(tokens):
                continue
            start = width - len(tokens)
            before = logits[row, start + len(known) - 1 : width - 1]
            known += _logprobs_of(before, tokens[len(known) :])

    def response_logprobs(self, rows: Sequence[int]) -> list[list[float] | None]:
        # A row's first pending token is scored from the logits the row holds: a row with
        # no other token pending (the usual end of a sample) needs no forward at all.
        self._score_first([r for r in rows if self.pending[r]])
        if any(len(self.pending_scored[r]) < len(self.pending[r]) for r in rows):
            self._catch_up()
        return [self.scored[r] + self.pending_scored[r] if self.scoring[r] else None for r in rows]

    def _settle(self, width: int, ran: list[int]) -> None:
        for row in ran:
            if self.scoring[row]:
                self.run_ids[row].extend(self.pending[row])
                self.scored[row].extend(self.pending_scored[row])
                self.pending_scored[row] = []
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
        for name in _ROW_LISTS:
            values = getattr(self, name)
            setattr(self, name, [values[r] for r in keep])

    def release(self) -> None:
        compiled_step = self.compiled_step
        self._reset()
        self.compiled_step = compiled_step  # kept on the model by transformers anyway
