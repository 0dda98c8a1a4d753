"""The BACO engine: the façade over the decoding loop (load, validate, run, stream, cancel).

One continuation is decoded by a base model and its aligned counterpart: at each word a router
picks the model whose distribution the next token is drawn from (docs/algorithm.md). The loop
itself lives in :mod:`baco_integrations.decoding`; this module turns calls into validated
requests and their results into outputs and chunks. It knows nothing of LangChain,
LlamaIndex or HTTP.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .config import GenerationSettings
from .decoding import (
    ALIGNED,
    BASE,
    DecodeStats,
    DecodingCancelled,
    Pair,
    Request,
    make_samples,
)
from .decoding.grammar import SampleMatchers
from .decoding.guard import check_guard_readable
from .decoding.pair import pad_id
from .decoding.scheduler import Listener, Progress, Scheduler, SchedulerLoad
from .limits import EngineLimits
from .loading import load_causal_lm
from .outputs import BacoChunk, BacoOutput
from .prompts import (
    Prompt,
    RenderedPrompts,
    check_rendered,
    check_text,
    is_conversation,
    normalize_prompts,
)
from .runners import (
    CACHE_IMPLEMENTATIONS,
    CacheImplementation,
    ModelRunner,
    TransformersRunner,
)
from .runners.remote import Endpoint, EndpointRunner
from .share import (
    CALIBRATION_TOKENS,
    Calibration,
    CalibrationRecorder,
    ShareTarget,
    calibration_prompts,
    warn_if_out_of_reach,
)

__all__ = ["BacoEngine", "CacheImplementation", "DecodeStats", "DecodingCancelled"]


def _check_options(cache_implementation: object, compile: object, shares_tokenizer: bool) -> None:
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
    if not shares_tokenizer and cache_implementation != "dynamic":
        raise ValueError(
            f"cache_implementation={cache_implementation!r} needs a shared tokenizer; a "
            "cross-family pair re-tokenizes text into caches of varying length, so use "
            "cache_implementation='dynamic'"
        )


def _endpoint(name: str, spec: object) -> Endpoint:
    if isinstance(spec, Endpoint):
        return spec
    if isinstance(spec, str):
        return Endpoint(url=spec)
    if isinstance(spec, Mapping):
        return Endpoint.model_validate(dict(spec))
    raise ValueError(
        f"{name} must be a base URL (str), an Endpoint or a mapping of Endpoint settings, "
        f"got {type(spec).__name__}"
    )


def _tokenizer(name: str, spec: object) -> PreTrainedTokenizerBase:
    if isinstance(spec, PreTrainedTokenizerBase):
        return spec
    if isinstance(spec, str | os.PathLike):
        from transformers import AutoTokenizer

        path = Path(spec)
        if path.suffix == ".gguf" and path.is_file():  # the file a llama.cpp server serves
            return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        return AutoTokenizer.from_pretrained(spec)
    raise ValueError(
        f"{name} must be a hub id, a folder, a GGUF file or a tokenizer, got {type(spec).__name__}"
    )


class BacoEngine:
    """Collaborative decoding with a base model and its aligned counterpart.

    When the two tokenizers differ (a cross-family pair), decoding works on text (see
    docs/algorithm.md, Cross-family pairs). Threads and asyncio tasks may share one engine:
    concurrent calls join one running batch and share its decoding steps (continuous
    batching, see :mod:`baco_integrations.decoding.scheduler` and docs/performance.md).
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
        aligned_tokenizer = aligned_tokenizer or base_tokenizer
        shares = base_tokenizer.get_vocab() == aligned_tokenizer.get_vocab()
        _check_options(cache_implementation, compile, shares)
        self.cache_implementation: CacheImplementation = cache_implementation
        #: Single-token decoding steps run through ``torch.compile``.
        self.compile = compile
        base_runner, aligned_runner = (
            TransformersRunner(model, pad_id(tokenizer), cache_implementation, compile)
            for model, tokenizer in (
                (base_model, base_tokenizer),
                (aligned_model, aligned_tokenizer),
            )
        )
        pair = Pair.build(base_runner, aligned_runner, base_tokenizer, aligned_tokenizer)
        self._start(pair, limits)

    def _start(self, pair: Pair, limits: EngineLimits | None) -> None:
        if limits is not None and not isinstance(limits, EngineLimits):
            raise ValueError(f"limits must be an EngineLimits, got {type(limits).__name__}")
        #: Size caps of one call (samples, rows, prompt characters, max_new_tokens), checked
        #: before any tokenization or allocation; see :class:`~baco_integrations.limits.
        #: EngineLimits`.
        self.limits = limits or EngineLimits()
        #: Both models (their runners) and what decoding reads about each, computed once.
        self.pair = pair
        #: The one decoding loop that every call of this engine joins.
        self.scheduler = Scheduler(
            self.pair,
            max_live_rows=self.limits.max_live_rows,
            max_prefill_tokens=self.limits.max_prefill_tokens,
            max_waiting=self.limits.max_waiting,
            admission_wait_steps=self.limits.admission_wait_steps,
        )
        #: Work done by the most recent call that finished.
        self.last_stats = DecodeStats()
        self._calibration: Calibration | None = None
        self._calibration_lock = threading.Lock()
        self._rendered = RenderedPrompts(self.base_tokenizer, self.aligned_tokenizer)

    @classmethod
    def from_runners(
        cls,
        base: ModelRunner,
        aligned: ModelRunner,
        base_tokenizer: PreTrainedTokenizerBase,
        aligned_tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        limits: EngineLimits | None = None,
    ) -> BacoEngine:
        """An engine over two runners (:mod:`baco_integrations.runners`), each with the
        tokenizer whose ids it takes: models that run elsewhere than in this process, or in
        a way of your own. ``aligned_tokenizer`` defaults to ``base_tokenizer``."""
        for name, runner in (("base", base), ("aligned", aligned)):
            if not isinstance(runner, ModelRunner):
                raise ValueError(
                    f"{name} must be a ModelRunner (baco_integrations.runners), got "
                    f"{type(runner).__name__}"
                )
        engine = cls.__new__(cls)
        engine.cache_implementation = "dynamic"
        engine.compile = False
        engine._start(
            Pair.build(base, aligned, base_tokenizer, aligned_tokenizer or base_tokenizer), limits
        )
        return engine

    @classmethod
    def from_endpoints(
        cls,
        base: str | Endpoint | Mapping[str, Any],
        aligned: str | Endpoint | Mapping[str, Any],
        *,
        base_tokenizer: str | os.PathLike[str] | PreTrainedTokenizerBase,
        aligned_tokenizer: str | os.PathLike[str] | PreTrainedTokenizerBase,
        limits: EngineLimits | None = None,
    ) -> BacoEngine:
        """An engine over two models served elsewhere: OpenAI-compatible ``/v1/completions``
        endpoints that return log-probs (llama.cpp's ``llama-server``, vLLM, SGLang).

        ``base`` and ``aligned`` are base URLs (``"http://127.0.0.1:8080/v1"``) or
        :class:`~baco_integrations.runners.Endpoint` settings (a model name to send, an API
        key, a timeout, how many log-probs to ask for). Each model's tokenizer is loaded here
        (hub id or folder, or a tokenizer object) so that word boundaries are exact; it must be
        the tokenizer the endpoint serves. See docs/remote.md.
        """
        specs = [
            (_endpoint(name, spec), _tokenizer(f"{name}_tokenizer", tokenizer))
            for name, spec, tokenizer in (
                ("base", base, base_tokenizer),
                ("aligned", aligned, aligned_tokenizer),
            )
        ]  # every setting checked before any connection
        base_runner = EndpointRunner(*specs[0])
        try:
            aligned_runner = EndpointRunner(*specs[1])
        except BaseException:
            base_runner.close()
            raise
        return cls.from_runners(
            base_runner,
            aligned_runner,
            base_runner.tokenizer,
            aligned_runner.tokenizer,
            limits=limits,
        )

    @classmethod
    def from_pretrained(
        cls,
        base: str | os.PathLike[str],
        aligned: str | os.PathLike[str],
        *,
        device: str | Any | None = "cpu",
        dtype: str | Any = "auto",
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
        (base_model, base_tokenizer), (aligned_model, aligned_tokenizer) = (
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
        )
        return cls(
            base_model,
            aligned_model,
            base_tokenizer,
            aligned_tokenizer,
            cache_implementation=cache_implementation,
            compile=compile,
            limits=limits,
        )

    # ----------------------------------------------------------------- the pair

    def _model(self, source: int) -> PreTrainedModel:
        runner = self.pair.members[source].runner
        if not isinstance(runner, TransformersRunner):
            raise AttributeError(
                f"the {self.pair.members[source].name} model runs on a "
                f"{type(runner).__name__}, not as a transformers model in this process"
            )
        return runner.model

    @property
    def base_model(self) -> PreTrainedModel:
        """The base transformers model (engines whose models run in this process)."""
        return self._model(BASE)

    @property
    def aligned_model(self) -> PreTrainedModel:
        """The aligned transformers model (engines whose models run in this process)."""
        return self._model(ALIGNED)

    @property
    def base_tokenizer(self) -> PreTrainedTokenizerBase:
        return self.pair.base.tokenizer

    @property
    def aligned_tokenizer(self) -> PreTrainedTokenizerBase:
        return self.pair.aligned.tokenizer

    @property
    def shares_tokenizer(self) -> bool:
        """Same vocabulary: tokens are the shared currency (the fast path); else text is."""
        return self.pair.shares_tokenizer

    @property
    def context_window(self) -> int | None:
        """The smaller of the two models' context windows, when their configs declare one."""
        return self.pair.context_window

    @property
    def device(self) -> Any:
        return self.pair.device

    @property
    def model_names(self) -> dict[str, str]:
        return {
            member.name: member.runner.facts.name or member.name
            for member in (self.pair.base, self.pair.aligned)
        }

    def load(self) -> SchedulerLoad:
        """How busy the engine is (live rows, waiting calls, steps run) and its caps."""
        return self.scheduler.load()

    def shutdown(self, timeout: float | None = 30.0) -> bool:
        """Cancel every call, wait for the decoding thread to end (True if it did) and close
        the runners (a remote runner's connections and thread)."""
        ended = self.scheduler.shutdown(timeout)
        if ended:
            for member in self.pair.members:
                member.runner.close()
        return ended

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
        base, aligned = self._rendered.ids(single, settings.system_prompt, settings.base_template)
        return {"base": base, "aligned": aligned}

    def token_ids(self, text: str) -> list[int]:
        """``text``'s ids under the aligned tokenizer (no special tokens). The text is checked
        first: valid Unicode, at most ``limits.max_prompt_chars`` characters."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        if len(text) > self.limits.max_prompt_chars:
            raise ValueError(
                f"text is too long to tokenize: {len(text)} characters, more than the "
                f"{self.limits.max_prompt_chars} allowed (EngineLimits.max_prompt_chars)"
            )
        check_text(text, "text")
        return list(self.aligned_tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` under the aligned tokenizer (see :meth:`token_ids`)."""
        return len(self.token_ids(text))

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

        Concurrent calls share decoding steps. Setting ``cancel`` (a
        :class:`threading.Event`, or any object with an ``is_set()`` method) from another
        thread stops this call after the current step and raises :class:`DecodingCancelled`
        (no partial result is returned); the other calls go on unchanged.
        """
        if cancel is not None and not callable(getattr(cancel, "is_set", None)):
            raise ValueError(
                "cancel must be a threading.Event (or have an is_set() method), got "
                f"{type(cancel).__name__}"
            )
        request = self.prepare(prompts, self.resolve_settings(settings, **overrides))
        self._decode(request, cancel)
        return self._finished(request)

    def _decode(self, request: Request, cancel: threading.Event | None = None) -> None:
        """Submit ``request`` to the shared loop and wait for it (cancelled on any error)."""
        events: queue.SimpleQueue[Progress] = queue.SimpleQueue()
        ticket = self.scheduler.submit(request, events.put, cancel)
        try:
            _wait_sync(events)
        except BaseException:
            self.scheduler.cancel(ticket)
            raise

    async def agenerate(
        self,
        prompts: Prompt | Sequence[Prompt],
        *,
        settings: GenerationSettings | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> list[list[BacoOutput]]:
        """:meth:`generate` for asyncio, with no thread per call: the call joins the shared
        decoding loop and is awaited; cancelling the task takes its rows out at once."""
        request = self.prepare(
            prompts, self.resolve_settings(settings, **overrides), calibrate=False
        )
        await self._aim_at_share_async(request)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Progress] = asyncio.Queue()
        ticket = self.scheduler.submit(request, _on_loop(loop, events))
        try:
            await _wait_async(events)
        except BaseException:
            self.scheduler.cancel(ticket)
            raise
        return self._finished(request)

    def stream(
        self,
        prompt: Prompt,
        *,
        settings: GenerationSettings | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> Iterator[BacoChunk]:
        """Stream one prompt's samples as text deltas, each tagged with its source model.

        Settings are validated here, before iteration starts; decoding starts at the first
        ``next()``. Closing the iterator early takes the call out of the batch and frees its
        caches. The last chunk of each sample carries its output.
        """
        request = self.prepare(
            [_one_prompt(prompt)], self.resolve_settings(settings, **overrides), streaming=True
        )
        return self._stream(request)

    def astream(
        self,
        prompt: Prompt,
        *,
        settings: GenerationSettings | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> AsyncIterator[BacoChunk]:
        """:meth:`stream` for asyncio (``async for chunk in engine.astream(...)``), with no
        thread per call. Settings are validated here; ``aclose()`` or cancelling the consumer
        takes the call out of the batch."""
        request = self.prepare(
            [_one_prompt(prompt)],
            self.resolve_settings(settings, **overrides),
            streaming=True,
            calibrate=False,
        )
        return self._astream(request)

    # ----------------------------------------------------------------- requests

    def prepare(
        self,
        prompts: object,
        settings: GenerationSettings,
        streaming: bool = False,
        *,
        calibrate: bool = True,
    ) -> Request:
        """A validated request: sizes checked before tokenizing, prompts rendered for each
        model, the step budget fitted to the context window. ``calibrate=False`` leaves a
        base-share target to :meth:`aim_at_share` (asyncio callers calibrate off the loop)."""
        batch = normalize_prompts(prompts)
        self.limits.check_call(batch, settings)  # sizes, before tokenizing or allocating
        request = self._request(batch, settings, streaming)
        if calibrate:
            self.aim_at_share(request)
        return request

    def _request(
        self, batch: list[Prompt], settings: GenerationSettings, streaming: bool
    ) -> Request:
        if settings.constraint is not None:
            self._check_constrainable()
        self._check_top_logprobs(settings.top_logprobs)
        if settings.guard > 0.0 and not self.pair.shares_tokenizer:
            check_guard_readable(self.pair, settings.guard)
        rendered = [
            self._rendered.ids(p, settings.system_prompt, settings.base_template) for p in batch
        ]
        prompt_ids = ([r[1] for r in rendered], [r[0] for r in rendered])
        check_rendered(prompt_ids[BASE], prompt_ids[ALIGNED])
        request = Request(
            settings=settings,
            prompts=batch,
            prompt_ids=prompt_ids,
            max_steps=self._step_budget(prompt_ids, settings.max_new_tokens),
            streaming=streaming,
        )
        request.samples = make_samples(
            self.pair,
            [len(ids) for ids in request.prompt_ids[ALIGNED]],
            request.n,
            incremental=request.streaming or bool(settings.stop),
        )
        if settings.constraint is not None:
            request.matchers = SampleMatchers(settings.constraint, self.pair, request.samples)
        if settings.logprobs:
            for sample in request.samples:
                sample.logprobs = []
        return request

    def aim_at_share(self, request: Request) -> None:
        """Give a request that aims at a base share (given, or the default one) its
        per-sample thresholds; the first such call calibrates the pair."""
        share = request.settings.resolved_base_share
        if share is not None and not isinstance(request.router, ShareTarget):
            prior = self.share_calibration().prior(request.router)
            request.router = ShareTarget(request.router, share, prior)

    async def _aim_at_share_async(self, request: Request) -> None:
        """:meth:`aim_at_share` without blocking the event loop on the first calibration."""
        if request.settings.resolved_base_share is not None and self._calibration is None:
            await asyncio.to_thread(self.share_calibration)
        self.aim_at_share(request)

    def share_calibration(self) -> Calibration:
        """The pair's signals at word boundaries that ``base_share`` starts each sample's
        threshold from: the packaged tuning prompts decoded once (24 tokens, seed 0, both
        models at every step), on the first call that asks, then kept (docs/routers.md).
        It is the engine's own fixed work, so a call's size limits do not apply to it."""
        with self._calibration_lock:
            if self._calibration is None:
                recorder = CalibrationRecorder()
                settings = GenerationSettings(
                    router=recorder,
                    lazy=False,
                    temperature=1.0,
                    max_new_tokens=CALIBRATION_TOKENS,
                    seed=0,
                )
                prompts: list[Prompt] = list(calibration_prompts())
                width = self.limits.max_live_rows  # the most rows the scheduler takes
                for start in range(0, len(prompts), width):
                    self._decode(self._request(prompts[start : start + width], settings, False))
                self._calibration = recorder.calibration()
            return self._calibration

    def _check_constrainable(self) -> None:
        """A grammar masks each model's whole next-token distribution; a runner that gives
        only its top-k (a remote endpoint) cannot be constrained exactly, so it is refused."""
        for member in self.pair.members:
            if not member.runner.full_distributions:
                raise ValueError(
                    f"constraint: structured output needs the {member.name} model's whole "
                    f"next-token distribution, and {member.runner!r} gives only its top-k "
                    "log-probs, so the grammar could not be applied exactly; use an in-process "
                    "pair (BacoEngine.from_pretrained) for structured output"
                )

    def _check_top_logprobs(self, k: int) -> None:
        """A top-k backend cannot list more alternatives than it returns."""
        for member in self.pair.members:
            limit = member.runner.top_logprobs_limit
            if limit is not None and k > limit:
                raise ValueError(
                    f"top_logprobs={k}: the {member.name} model's {member.runner!r} returns "
                    f"only its top {limit} tokens; allowed values are 0 to {limit}"
                )

    def _step_budget(self, prompt_ids: tuple[list[list[int]], ...], max_new_tokens: int) -> int:
        longest = max(len(ids) for per_model in prompt_ids for ids in per_model)
        window = self.context_window
        if window is None:
            return max_new_tokens
        if longest >= window:
            raise ValueError(
                f"prompt is too long: {longest} tokens, but the models' context window is "
                f"{window} tokens"
            )
        return min(max_new_tokens, window - longest)

    def _finished(self, request: Request) -> list[list[BacoOutput]]:
        self.last_stats = request.stats
        outputs = request.outputs()
        if request.settings.base_share is not None:  # asked for, not the default
            warn_if_out_of_reach(request.settings, outputs)
        return outputs

    def _stream(self, request: Request) -> Iterator[BacoChunk]:
        events: queue.SimpleQueue[Progress] = queue.SimpleQueue()
        ticket = self.scheduler.submit(request, events.put)
        try:
            while (chunks := _next_chunks(events.get())) is not None:
                yield from chunks
            self.last_stats = request.stats
        finally:
            self.scheduler.cancel(ticket)  # a no-op once the request has finished

    async def _astream(self, request: Request) -> AsyncIterator[BacoChunk]:
        await self._aim_at_share_async(request)
        events: asyncio.Queue[Progress] = asyncio.Queue()
        ticket = self.scheduler.submit(request, _on_loop(asyncio.get_running_loop(), events))
        try:
            while (chunks := _next_chunks(await events.get())) is not None:
                for chunk in chunks:
                    yield chunk
            self.last_stats = request.stats
        finally:
            self.scheduler.cancel(ticket)


def _one_prompt(prompt: object) -> Prompt:
    if not (isinstance(prompt, str) or is_conversation(prompt)):
        raise ValueError(
            "stream takes one prompt (a string or a list of {'role','content'} messages), "
            f"got {type(prompt).__name__}; use generate for a list of prompts"
        )
    return prompt  # type: ignore[return-value]


def _next_chunks(event: Progress) -> list[BacoChunk] | None:
    """A stream's next chunks, None at its end; raises the call's error."""
    kind, value = event
    if kind == "error":
        raise value
    return value if kind == "chunks" else None


def _wait_sync(events: queue.SimpleQueue[Progress]) -> None:
    while _next_chunks(events.get()) is not None:
        pass


async def _wait_async(events: asyncio.Queue[Progress]) -> None:
    while _next_chunks(await events.get()) is not None:
        pass


def _on_loop(loop: asyncio.AbstractEventLoop, events: asyncio.Queue[Progress]) -> Listener:
    """A listener that hands the scheduler's events to ``loop`` (it runs on the scheduler's
    thread; a closed loop raises RuntimeError, which cancels the call)."""
    return lambda event: loop.call_soon_threadsafe(events.put_nowait, event)
