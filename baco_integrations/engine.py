"""The BACO engine: one continuation decoded by a base model and its aligned counterpart.

At every step both models' next-token distributions are available; a token that continues the
current word comes from the model that wrote the previous token, and at a word boundary the
router picks the model whose (tempered, truncated) distribution the token is drawn from. The
token is appended for both models, each of which keeps its own KV cache.

This module knows nothing of LangChain or LlamaIndex.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import torch
from transformers import (
    Cache,
    CompileConfig,
    DynamicCache,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StaticCache,
)

from .config import GenerationSettings, Source
from .cross_family import TextModelState, TextSample, decode_text
from .detokenize import IncrementalDetokenizer
from .limits import EngineLimits
from .loading import load_causal_lm
from .model_calls import cache_argument, input_device, run_prompts
from .outputs import BacoChunk, BacoOutput, FinishReason, SampleRecord
from .prompts import (
    Prompt,
    aligned_ids,
    base_ids,
    check_rendered,
    is_conversation,
    normalize_prompts,
)
from .routers import NO_SOURCE, RouterInputs, build_router, checked_choice, router_needs
from .sampling import Sampler
from .stops import find_stop
from .vocab import VocabMasks, build_vocab_masks

#: Special tokens that end an assistant turn in common chat templates.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")

#: KV cache kinds: ``"dynamic"`` grows with the text (transformers' ``DynamicCache``);
#: ``"static"`` is preallocated for the prompt plus ``max_new_tokens`` (``StaticCache``), so a
#: step writes in place instead of concatenating.
CacheImplementation = Literal["dynamic", "static"]
CACHE_IMPLEMENTATIONS: tuple[str, ...] = get_args(CacheImplementation)


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, chat: bool) -> set[int]:
    ids: set[int] = set()
    for value in (
        tokenizer.eos_token_id,
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
        model.config.get_text_config().eos_token_id,
    ):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if chat:
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_tokens) | {
            str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()
        }
        ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab and t in special)
    return ids


def _context_window(model: PreTrainedModel) -> int | None:
    window = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    return int(window) if isinstance(window, int) and window > 0 else None


def _repeat_static_cache(cache: StaticCache, repeats: int, mark_static: bool = False) -> None:
    """``batch_repeat_interleave`` for a filled ``StaticCache`` (transformers only has it for
    dynamic layers), so that n samples share one prefill here too."""
    layer: Any  # StaticLayer or StaticSlidingWindowLayer
    for layer in cache.layers:
        layer.keys = layer.keys.repeat_interleave(repeats, dim=0)
        layer.values = layer.values.repeat_interleave(repeats, dim=0)
        layer.batch_size = layer.keys.shape[0]
        if mark_static:  # as StaticLayer does: fixed addresses let CUDA graphs skip copies
            torch._dynamo.mark_static_address(layer.keys)
            torch._dynamo.mark_static_address(layer.values)


def _compile_config(device: torch.device) -> CompileConfig:
    """``generate``'s compile settings, with CUDA graphs only where there is CUDA; shapes that
    change between calls (batch, prompt width) are compiled once more as dynamic."""
    return CompileConfig(
        fullgraph=False,
        dynamic=None,
        mode="reduce-overhead" if device.type == "cuda" else "default",
    )


class _ModelState:
    """One model's KV cache, attention mask and positions during a decoding run.

    Tokens appended with :meth:`push` stay pending until the model's distribution is next
    needed; :meth:`logits` then runs all of them in one multi-token forward (the lazy
    catch-up). Every row has the same number of pending tokens, so this is a plain batched
    forward.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        vocab_size: int,
        decode_device: torch.device,
        cache_implementation: CacheImplementation = "dynamic",
        compiled: bool = False,
    ):
        self.model = model
        self.cache_argument = cache_argument(model)
        self.vocab_size = vocab_size
        self.decode_device = decode_device
        self.device = input_device(model)
        self.cache_implementation = cache_implementation
        #: Single-token steps run through ``torch.compile`` (static cache only: fixed shapes).
        #: transformers keeps the compiled call on the model, so it is compiled once, not per
        #: decoding call; prefill and multi-token catch-ups stay eager, as in ``generate``.
        self.compiled_step: Callable[..., Any] | None = (
            model.get_compiled_call(_compile_config(self.device)) if compiled else None
        )
        self.cache: Cache | None = None
        self.mask = torch.empty(0)
        self.length = 0
        self.positions = torch.empty(0)
        self.pending: list[torch.Tensor] = []
        self._logits: torch.Tensor | None = None
        self.forward_passes = 0
        self.forward_tokens = 0

    @torch.inference_mode()
    def prefill(
        self, prompts: Sequence[list[int]], n: int, pad_id: int, max_new_tokens: int
    ) -> None:
        """Run the left-padded prompts once and share each prompt's cache with its n samples."""
        width = max(len(p) for p in prompts)
        if self.cache_implementation == "static":
            self.cache = StaticCache(config=self.model.config, max_cache_len=width + max_new_tokens)
        else:
            self.cache = DynamicCache(config=self.model.config)
        mask, last_logits = run_prompts(self.model, prompts, pad_id, self.cache)
        self.forward_passes += 1
        self.forward_tokens += int(mask.sum())
        if n > 1:
            if isinstance(self.cache, StaticCache):
                _repeat_static_cache(self.cache, n, mark_static=self.compiled_step is not None)
            else:
                self.cache.batch_repeat_interleave(n)
        # Preallocated so that each step slices instead of concatenating (no quadratic copies).
        self.mask = torch.zeros(
            (len(prompts) * n, width + max_new_tokens), dtype=torch.long, device=self.device
        )
        self.mask[:, :width] = mask.repeat_interleave(n, dim=0)
        self.length = width
        self.positions = mask.sum(-1).repeat_interleave(n, dim=0)  # each row's next position
        logits = last_logits[:, : self.vocab_size].float().repeat_interleave(n, dim=0)
        self._logits = logits.to(self.decode_device)

    def push(self, tokens: torch.Tensor) -> None:
        """Append one token per row; it is run at the next catch-up."""
        self.pending.append(tokens.to(self.device))
        self._logits = None

    @property
    def ready(self) -> bool:
        return self._logits is not None

    @torch.inference_mode()
    def logits(self) -> torch.Tensor:
        """Next-token logits ``[batch, vocab]`` (float32), catching up on pending tokens."""
        if self._logits is None:
            count = len(self.pending)
            ids = torch.stack(self.pending, dim=1)
            self.mask[:, self.length : self.length + count] = 1
            self.length += count
            offsets = torch.arange(count, device=self.device)
            static = self.cache_implementation == "static"
            # A static cache takes the whole preallocated mask (one shape for every step) and
            # says where to write; a dynamic cache grows with the mask.
            step = self.compiled_step
            call = step if step is not None and count == 1 else self.model
            extra = {"cache_position": offsets + (self.length - count)} if static else {}
            out = call(
                input_ids=ids,
                attention_mask=self.mask if static else self.mask[:, : self.length],
                position_ids=self.positions[:, None] + offsets,
                **{self.cache_argument: self.cache},
                use_cache=True,
                logits_to_keep=1,
                **extra,
            )
            self.positions = self.positions + count
            self.pending.clear()
            self.forward_passes += 1
            self.forward_tokens += count * int(ids.shape[0])
            logits = out.logits[:, -1, : self.vocab_size].float()
            if call is not self.model:  # CUDA graphs reuse their output buffers
                logits = logits.clone()
            self._logits = logits.to(self.decode_device)
        return self._logits


@dataclass
class _Sample(SampleRecord):
    """A sample of a same-tokenizer pair: one token at a time.

    Text is decoded token by token only when ``incremental`` (streaming or stop strings);
    otherwise it is decoded once when the sample finishes.
    """

    detokenizer: IncrementalDetokenizer = field(kw_only=True)
    incremental: bool = field(default=True, kw_only=True)

    def append(self, token_id: int, source: Source) -> str:
        self.token_ids.append(token_id)
        self.sources.append(source)
        if not self.incremental:
            return ""
        delta = self.detokenizer.push(token_id)
        self.text += delta
        self.ends.append(len(self.text))
        return delta

    def finish(self, reason: FinishReason) -> None:
        if not self.incremental:
            self.text = self.detokenizer.decode(self.token_ids)
        elif tail := self.detokenizer.flush():
            self.text += tail
            self.ends[-1] = len(self.text)
        self.finish_reason = reason

    def check_stop(self, stops: Sequence[str], longest: int, delta: str) -> bool:
        """Cut the text before the first stop string that ``delta`` completed."""
        cut = find_stop(self.text, stops, longest, delta)
        if cut is None:
            return False
        # keep the tokens whose text starts before the cut
        keep = sum(1 for i in range(len(self.ends)) if (self.ends[i - 1] if i else 0) < cut)
        del self.token_ids[keep:], self.sources[keep:], self.ends[keep:]
        self.text = self.text[:cut]
        if self.ends:
            self.ends[-1] = min(self.ends[-1], cut)
        self.finish_reason = "stop"
        return True


class DecodingCancelled(RuntimeError):
    """Raised by :meth:`BacoEngine.generate` when its ``cancel`` event was set."""


@dataclass
class DecodeStats:
    """Work done by one call: forward passes and tokens run through each model."""

    steps: int = 0
    base_forward_passes: int = 0
    aligned_forward_passes: int = 0
    base_forward_tokens: int = 0
    aligned_forward_tokens: int = 0
    #: Cross-family pairs: tokens run after re-tokenizing the text, and tokens kept in the
    #: cache because they matched (the longest common prefix).
    base_synced_tokens: int = 0
    aligned_synced_tokens: int = 0
    base_reused_tokens: int = 0
    aligned_reused_tokens: int = 0


@dataclass
class _Job:
    """A validated call, ready to decode."""

    settings: GenerationSettings
    prompts: list[Prompt]
    base_prompt_ids: list[list[int]]
    aligned_prompt_ids: list[list[int]]
    router: Callable[[RouterInputs], torch.Tensor]
    sampler: Sampler
    max_steps: int
    samples: list[SampleRecord]  # _Sample, or TextSample for a cross-family pair
    vocab_size: int
    device: torch.device
    stats: DecodeStats = field(default_factory=DecodeStats)

    @functools.cached_property
    def router_needs(self) -> frozenset[Source]:
        """The distributions the router reads, looked up once per call."""
        return router_needs(self.router)

    @functools.cached_property
    def absent(self) -> torch.Tensor:
        """Stands in for a model's scores where no row reads them (lazy mode)."""
        return torch.zeros((len(self.samples), self.vocab_size), device=self.device)

    def outputs(self) -> list[list[BacoOutput]]:
        n = self.settings.n
        return [
            [s.output() for s in self.samples[i * n : (i + 1) * n]]
            for i in range(len(self.prompts))
        ]


class BacoEngine:
    """Collaborative decoding with a base model and its aligned counterpart.

    When the two tokenizers differ (a cross-family pair), decoding works on text: see
    :mod:`baco_integrations.cross_family`. Calls are serialised by a lock, so threads
    may share one engine: concurrent calls wait their turn.
    """

    def __init__(
        self,
        base_model: PreTrainedModel,
        aligned_model: PreTrainedModel,
        base_tokenizer: PreTrainedTokenizerBase,
        aligned_tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        cache_implementation: CacheImplementation = "dynamic",
        compile: bool = False,
        limits: EngineLimits | None = None,
    ) -> None:
        if limits is not None and not isinstance(limits, EngineLimits):
            raise ValueError(f"limits must be an EngineLimits, got {type(limits).__name__}")
        #: Size caps of one call (samples, rows, prompt characters, max_new_tokens), checked
        #: before any tokenization or allocation; see :class:`~baco_integrations.limits.
        #: EngineLimits`.
        self.limits = limits or EngineLimits()
        if cache_implementation not in CACHE_IMPLEMENTATIONS:
            raise ValueError(
                f"cache_implementation={cache_implementation!r} is not supported; allowed "
                f"values: {', '.join(map(repr, CACHE_IMPLEMENTATIONS))}"
            )
        if compile and cache_implementation != "static":
            raise ValueError(
                "compile=True needs cache_implementation='static' (a compiled step needs the "
                f"fixed shapes of a preallocated cache), got {cache_implementation!r}"
            )
        self.cache_implementation: CacheImplementation = cache_implementation
        #: Single-token decoding steps run through ``torch.compile``.
        self.compile = compile
        aligned_tokenizer = aligned_tokenizer or base_tokenizer
        #: Same vocabulary: tokens are the shared currency (the fast path). Otherwise text is
        #: (cross-family pairs, see :mod:`baco_integrations.cross_family`).
        self.shares_tokenizer = base_tokenizer.get_vocab() == aligned_tokenizer.get_vocab()
        if not self.shares_tokenizer and cache_implementation != "dynamic":
            raise ValueError(
                f"cache_implementation={cache_implementation!r} needs a shared tokenizer; a "
                "cross-family pair re-tokenizes text into caches of varying length, so use "
                "cache_implementation='dynamic'"
            )
        self.base_model = base_model.eval()
        self.aligned_model = aligned_model.eval()
        self.base_tokenizer = base_tokenizer
        self.aligned_tokenizer = aligned_tokenizer
        self.device = input_device(aligned_model)
        base_vocab = min(base_model.get_output_embeddings().weight.shape[0], len(base_tokenizer))
        aligned_vocab = min(
            aligned_model.get_output_embeddings().weight.shape[0], len(aligned_tokenizer)
        )
        if self.shares_tokenizer:
            base_vocab = aligned_vocab = min(base_vocab, aligned_vocab)
        #: Rows of each model's logits that BACO reads (embedding padding rows are left out).
        self.vocab_sizes: dict[Source, int] = {"base": base_vocab, "aligned": aligned_vocab}
        self.vocab_size = aligned_vocab
        #: Word-boundary masks; the routers read the aligned tokenizer's.
        self.masks: VocabMasks = build_vocab_masks(aligned_tokenizer, aligned_vocab, self.device)
        self.vocab_masks: dict[Source, VocabMasks] = {
            "aligned": self.masks,
            "base": (
                self.masks
                if self.shares_tokenizer
                else build_vocab_masks(base_tokenizer, base_vocab, self.device)
            ),
        }
        #: End-of-sequence ids per model, and (for a shared tokenizer) their union.
        self.model_eos_ids: dict[Source, set[int]] = {
            "base": _eos_ids(base_model, base_tokenizer, chat=False),
            "aligned": _eos_ids(aligned_model, aligned_tokenizer, chat=True),
        }
        self.eos_ids = self.model_eos_ids["base"] | self.model_eos_ids["aligned"]
        windows = [w for w in map(_context_window, (base_model, aligned_model)) if w]
        self.context_window: int | None = min(windows) if windows else None
        self.pad_token_ids: dict[Source, int] = {
            source: next(
                t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if t is not None
            )
            for source, tokenizer in (("base", base_tokenizer), ("aligned", aligned_tokenizer))
        }
        self.pad_token_id = self.pad_token_ids["aligned"]
        self._lock = threading.Lock()
        self.last_stats = DecodeStats()

    @classmethod
    def from_pretrained(
        cls,
        base: str | os.PathLike[str],
        aligned: str | os.PathLike[str],
        *,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype = "auto",
        device_map: str | dict[str, Any] | None = None,
        base_gguf_file: str | None = None,
        aligned_gguf_file: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        cache_implementation: CacheImplementation = "dynamic",
        compile: bool = False,
        limits: EngineLimits | None = None,
        **model_kwargs: Any,
    ) -> BacoEngine:
        """Load a (base, aligned) pair from hub ids, local directories or GGUF files.

        ``device_map`` (e.g. ``"auto"``) shards with accelerate instead of moving to
        ``device``. ``dtype="auto"`` is bfloat16 on CUDA, float32 otherwise.
        ``cache_implementation="static"`` preallocates each model's KV cache for the prompt
        plus ``max_new_tokens``; with it, ``compile=True`` runs single-token steps through
        ``torch.compile`` (CUDA graphs on CUDA). The first call of a new batch or prompt shape
        pays the compilation.
        """
        loaded = [
            load_causal_lm(
                path,
                gguf_file=gguf_file,
                device=device,
                dtype=dtype,
                device_map=device_map,
                trust_remote_code=trust_remote_code,
                revision=revision,
                **model_kwargs,
            )
            for path, gguf_file in ((base, base_gguf_file), (aligned, aligned_gguf_file))
        ]
        (base_model, base_tokenizer), (aligned_model, aligned_tokenizer) = loaded
        return cls(
            base_model,
            aligned_model,
            base_tokenizer,
            aligned_tokenizer,
            cache_implementation=cache_implementation,
            compile=compile,
            limits=limits,
        )

    # ----------------------------------------------------------------- prompts

    def encode_prompts(
        self,
        prompt: Prompt,
        system_prompt: str | None = None,
        base_template: str | None = None,
    ) -> dict[str, list[int]]:
        """The token ids each model is conditioned on for ``prompt``."""
        settings = GenerationSettings(
            system_prompt=system_prompt,
            **({"base_template": base_template} if base_template is not None else {}),
        )
        (single,) = normalize_prompts([prompt])
        self.limits.check_call([single], settings)
        return {
            "base": base_ids(self.base_tokenizer, single, settings.base_template),
            "aligned": aligned_ids(
                self.aligned_tokenizer, single, settings.system_prompt, settings.base_template
            ),
        }

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` under the aligned tokenizer (no special tokens)."""
        return len(self.aligned_tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def model_names(self) -> dict[str, str]:
        return {
            "base": str(getattr(self.base_model.config, "name_or_path", "") or "base"),
            "aligned": str(getattr(self.aligned_model.config, "name_or_path", "") or "aligned"),
        }

    # ----------------------------------------------------------------- public calls

    def resolve_settings(
        self, settings: GenerationSettings | Mapping[str, Any] | None = None, **overrides: Any
    ) -> GenerationSettings:
        """Validate a call's settings: ``settings`` (or defaults) with ``overrides`` applied.

        ``settings`` is a :class:`GenerationSettings` or a mapping of setting names to values
        (validated as one); anything else raises ``ValueError`` naming ``settings``.
        """
        if settings is None:
            base = GenerationSettings()
        elif isinstance(settings, GenerationSettings):
            base = settings
        elif isinstance(settings, Mapping):
            base = GenerationSettings.model_validate(dict(settings))
        else:
            raise ValueError(
                "settings must be a GenerationSettings or a mapping of setting names to "
                f"values, got {type(settings).__name__}"
            )
        return base.updated(**overrides) if overrides else base

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        *,
        settings: GenerationSettings | Mapping[str, Any] | None = None,
        cancel: threading.Event | None = None,
        **overrides: Any,
    ) -> list[list[BacoOutput]]:
        """Decode ``n`` samples for each prompt; ``outputs[i][j]`` is sample j of prompt i.

        Setting ``cancel`` (a :class:`threading.Event`, or any object with an ``is_set()``
        method) from another thread stops decoding after the current step and raises
        :class:`DecodingCancelled` (no partial result is returned).
        """
        if cancel is not None and not callable(getattr(cancel, "is_set", None)):
            raise ValueError(
                "cancel must be a threading.Event (or have an is_set() method), got "
                f"{type(cancel).__name__}"
            )
        job = self._prepare(prompts, self.resolve_settings(settings, **overrides), stream=False)
        with self._lock:
            decoding = self._decode(job)
            try:
                for _ in decoding:
                    if cancel is not None and cancel.is_set():
                        raise DecodingCancelled("generate was cancelled")
            finally:
                decoding.close()
        return job.outputs()

    def stream(
        self,
        prompt: Prompt,
        *,
        settings: GenerationSettings | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> Iterator[BacoChunk]:
        """Stream one prompt's samples as text deltas, each tagged with its source model.

        Settings are validated here, before iteration starts. Closing the iterator early stops
        decoding and frees the caches.
        """
        if not (isinstance(prompt, str) or is_conversation(prompt)):
            raise ValueError(
                "stream takes one prompt (a string or a list of {'role','content'} messages), "
                f"got {type(prompt).__name__}; use generate for a list of prompts"
            )
        job = self._prepare([prompt], self.resolve_settings(settings, **overrides), stream=True)
        return self._stream(job)

    # ----------------------------------------------------------------- internals

    def _prepare(self, prompts: object, settings: GenerationSettings, stream: bool) -> _Job:
        batch = normalize_prompts(prompts)
        self.limits.check_call(batch, settings)  # sizes, before tokenizing or allocating
        router = build_router(settings.router_config())
        router_needs(router)  # a malformed `needs` is refused now, not mid-decoding
        base_prompt_ids = [base_ids(self.base_tokenizer, p, settings.base_template) for p in batch]
        aligned_prompt_ids = [
            aligned_ids(self.aligned_tokenizer, p, settings.system_prompt, settings.base_template)
            for p in batch
        ]
        check_rendered(base_prompt_ids, aligned_prompt_ids)
        longest = max(len(ids) for ids in base_prompt_ids + aligned_prompt_ids)
        max_steps = settings.max_new_tokens
        if self.context_window is not None:
            if longest >= self.context_window:
                raise ValueError(
                    f"prompt is too long: {longest} tokens, but the models' context window is "
                    f"{self.context_window} tokens"
                )
            max_steps = min(max_steps, self.context_window - longest)
        samples: list[SampleRecord] = [
            (
                _Sample(
                    i,
                    j,
                    len(aligned_prompt_ids[i]),
                    detokenizer=IncrementalDetokenizer(self.aligned_tokenizer),
                    incremental=stream or bool(settings.stop),
                )
                if self.shares_tokenizer
                else TextSample(
                    i, j, len(aligned_prompt_ids[i]), aligned_tokenizer=self.aligned_tokenizer
                )
            )
            for i in range(len(batch))
            for j in range(settings.n)
        ]
        return _Job(
            settings=settings,
            prompts=batch,
            base_prompt_ids=base_prompt_ids,
            aligned_prompt_ids=aligned_prompt_ids,
            router=router,
            sampler=Sampler(settings.temperature, settings.top_k, settings.top_p, settings.min_p),
            max_steps=max_steps,
            samples=samples,
            vocab_size=self.vocab_size,
            device=self.device,
        )

    def _generator(self, seed: int | None) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return generator

    def _choose(
        self,
        job: _Job,
        states: dict[Source, _ModelState],
        prev_sources: torch.Tensor,
        prev_host: list[int],
        active_host: list[bool],
        active: torch.Tensor,
        step: int,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick each row's next token and its source (True = base) for one step.

        A model's distribution is computed only when some active row needs it, and the random
        draws do not depend on which models ran, so lazy and lock-step decoding give the same
        tokens. Rows that need nothing from a model read zeros in its place.
        """
        sampler, masks = job.sampler, self.masks
        tempered: dict[Source, torch.Tensor] = {}
        truncated: dict[Source, torch.Tensor] = {}

        def scores(source: Source, needed: bool) -> torch.Tensor:
            if not needed and not states[source].ready:
                return job.absent
            if source not in truncated:
                tempered[source] = sampler.temper(states[source].logits())
                truncated[source] = sampler.truncate(tempered[source])
            return truncated[source]

        active_prev = [p for p, a in zip(prev_host, active_host, strict=True) if a]
        has_prev = prev_sources != NO_SOURCE
        prev_base = prev_sources == 1
        if any(p != NO_SOURCE for p in active_prev):
            # The previous model proposes the next token; if it continues the word, it stays.
            stay_scores = torch.where(
                prev_base[:, None],
                scores("base", 1 in active_prev),
                scores("aligned", 0 in active_prev),
            )
            stay = sampler.draw(stay_scores, generator)
        else:
            stay = torch.zeros_like(prev_sources)
        boundary = active & (~has_prev | ~masks.continuation[stay])
        if not bool(boundary.any()):
            return stay, prev_base

        for source in job.router_needs:
            scores(source, True)
        inputs = RouterInputs(
            base_probs=torch.softmax(tempered["base"], dim=-1) if "base" in tempered else None,
            aligned_probs=(
                torch.softmax(tempered["aligned"], dim=-1) if "aligned" in tempered else None
            ),
            prev_sources=prev_sources,
            step=step,
            masks=masks,
            generator=generator,
        )
        want_base = checked_choice(job.router(inputs), prev_sources)
        switch = boundary & (~has_prev | (want_base != prev_base))
        to_base, to_aligned = (switch & want_base).any().item(), (switch & ~want_base).any().item()
        if not (to_base or to_aligned):
            return stay, prev_base
        # The incoming model starts a new word: it may not continue the other model's word.
        fresh_scores = torch.where(
            want_base[:, None], scores("base", bool(to_base)), scores("aligned", bool(to_aligned))
        )
        blocked = (switch & has_prev)[:, None] & masks.continuation[None, :]
        fresh_scores = fresh_scores.masked_fill(blocked, float("-inf"))
        switch &= torch.isfinite(fresh_scores).any(dim=-1)
        fresh = sampler.draw(fresh_scores, generator)
        return torch.where(switch, fresh, stay), torch.where(switch, want_base, prev_base)

    def _decode(self, job: _Job) -> Iterator[list[int]]:
        """Run the decoding loop; after each step yield the indices of samples that changed."""
        if not self.shares_tokenizer:
            yield from self._decode_text(job)
            return
        settings = job.settings
        stops = settings.stop
        longest_stop = max(map(len, stops)) if stops else 0
        samples = cast(list[_Sample], job.samples)
        states: dict[Source, _ModelState] = {
            "base": _ModelState(
                self.base_model,
                self.vocab_size,
                self.device,
                self.cache_implementation,
                compiled=self.compile,
            ),
            "aligned": _ModelState(
                self.aligned_model,
                self.vocab_size,
                self.device,
                self.cache_implementation,
                compiled=self.compile,
            ),
        }
        generator = self._generator(settings.seed)
        try:
            states["base"].prefill(
                job.base_prompt_ids, settings.n, self.pad_token_id, job.max_steps
            )
            states["aligned"].prefill(
                job.aligned_prompt_ids, settings.n, self.pad_token_id, job.max_steps
            )
            prev_sources = torch.full(
                (len(samples),), NO_SOURCE, dtype=torch.long, device=self.device
            )
            prev_host = [NO_SOURCE] * len(samples)
            active_host = [True] * len(samples)
            active = torch.ones(len(samples), dtype=torch.bool, device=self.device)
            for step in range(job.max_steps):
                tokens, from_base = self._choose(
                    job, states, prev_sources, prev_host, active_host, active, step, generator
                )
                prev_sources = from_base.long()
                job.stats.steps += 1
                changed: list[int] = []
                last_step = step == job.max_steps - 1
                token_list, base_list = tokens.tolist(), from_base.tolist()
                prev_host = [int(b) for b in base_list]
                for index, (token, is_base) in enumerate(zip(token_list, base_list, strict=True)):
                    sample = samples[index]
                    if sample.finish_reason is not None:
                        continue
                    changed.append(index)
                    if token in self.eos_ids:
                        sample.finish("stop")
                        continue
                    delta = sample.append(token, "base" if is_base else "aligned")
                    if stops and sample.check_stop(stops, longest_stop, delta):
                        continue
                    if last_step:
                        sample.finish("length")
                yield changed
                if all(s.finish_reason is not None for s in samples):
                    break
                still = [s.finish_reason is None for s in samples]
                if still != active_host:
                    active_host = still
                    active = torch.tensor(still, device=self.device)
                for state in states.values():
                    state.push(tokens)
                    if not settings.lazy:
                        state.logits()  # lock-step: every model runs every step
        finally:
            stats = job.stats
            stats.base_forward_passes = states["base"].forward_passes
            stats.aligned_forward_passes = states["aligned"].forward_passes
            stats.base_forward_tokens = states["base"].forward_tokens
            stats.aligned_forward_tokens = states["aligned"].forward_tokens
            self.last_stats = stats
            # Free both caches now rather than when the generator is collected.
            for state in states.values():
                state.cache = None
                state.pending.clear()

    def _decode_text(self, job: _Job) -> Iterator[list[int]]:
        """The cross-family loop (:func:`~baco_integrations.cross_family.decode_text`)."""
        states = {
            source: TextModelState(model, tokenizer, self.vocab_sizes[source], self.device)
            for source, model, tokenizer in (
                ("base", self.base_model, self.base_tokenizer),
                ("aligned", self.aligned_model, self.aligned_tokenizer),
            )
        }
        try:
            prompt_ids: dict[Source, list[list[int]]] = {
                "base": job.base_prompt_ids,
                "aligned": job.aligned_prompt_ids,
            }
            for source in states:
                states[source].prefill(
                    prompt_ids[source], job.settings.n, self.pad_token_ids[source], job.max_steps
                )
            yield from decode_text(
                job,
                states,
                self.vocab_masks,
                self.model_eos_ids,
                self._generator(job.settings.seed),
            )
        finally:
            stats = job.stats
            for source, state in states.items():
                setattr(stats, f"{source}_forward_passes", state.forward_passes)
                setattr(stats, f"{source}_forward_tokens", state.forward_tokens)
                setattr(stats, f"{source}_synced_tokens", state.synced_tokens)
                setattr(stats, f"{source}_reused_tokens", state.reused_tokens)
                state.release()
            self.last_stats = stats

    def _stream(self, job: _Job) -> Iterator[BacoChunk]:
        stops = job.settings.stop
        with self._lock:
            decoding = self._decode(job)
            try:
                for changed in decoding:
                    for index in changed:
                        yield from self._chunks(job.samples[index], stops)
            finally:
                decoding.close()

    @staticmethod
    def _chunks(sample: SampleRecord, stops: Sequence[str] | None) -> Iterator[BacoChunk]:
        """Chunks for the tokens of ``sample`` whose text is now safe to show.

        A token with no text of its own yet (half a character) joins the next chunk.
        """
        safe = sample.safe_length(stops)
        start = sample.ends[sample.emitted_tokens - 1] if sample.emitted_tokens else 0
        for i in range(sample.emitted_tokens, len(sample.token_ids)):
            end = sample.ends[i]
            if end > safe:
                break
            if end > start:
                first = sample.emitted_tokens
                yield BacoChunk(
                    text=sample.text[start:end],
                    source=sample.sources[i],
                    token_ids=tuple(sample.token_ids[first : i + 1]),
                    sources=tuple(sample.sources[first : i + 1]),
                    sample_index=sample.sample_index,
                    prompt_tokens=sample.prompt_tokens,
                )
                sample.emitted_tokens, start = i + 1, end
        if sample.finish_reason is not None:
            rest = sample.text[start:]
            first = sample.emitted_tokens
            yield BacoChunk(
                text=rest,
                source=sample.sources[-1] if rest else None,
                token_ids=tuple(sample.token_ids[first:]),
                sources=tuple(sample.sources[first:]),
                sample_index=sample.sample_index,
                finish_reason=sample.finish_reason,
                prompt_tokens=sample.prompt_tokens,
                output=sample.output(),  # consumers need not add the chunks up themselves
            )
            sample.emitted_tokens = len(sample.token_ids)
