"""BacoLLM: BACO collaborative decoding as a LangChain text-completion model (``BaseLLM``)."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, closing
from itertools import chain
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
    Callbacks,
)
from langchain_core.language_models import BaseLLM
from langchain_core.language_models.base import LangSmithParams
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict

from .._adapter import check_streamable, is_streamable, mean_logprobs, openai_logprobs
from ..config import GenerationSettings
from ..outputs import BacoChunk, BacoOutput, Usage
from ._common import BacoSettingsMixin

#: generation_info keys that hold one entry per token: a stream's chunks each carry their own
#: tokens' entries (LangChain concatenates them when chunks are added; for ``logprobs``, its
#: ``content`` list).
PER_TOKEN_INFO = ("sources", "token_ids", "logprobs")

#: Receives the finished sample at the end of a stream.
OnFinished = Callable[[BacoOutput], None]


def generation_info(output: BacoOutput) -> dict[str, Any]:
    """What a finished sample reports besides its text.

    With ``logprobs=True``, ``"logprobs"`` holds the tokens' log-probs in the shape of
    OpenAI's *chat* completions (:func:`~baco_integrations._adapter.openai_logprobs`:
    ``{"content": [{"token", "bytes", "logprob", "top_logprobs"}, ...]}``), the shape ChatBaco
    reports too, rather than the legacy completions' ``{"tokens", "token_logprobs",
    "top_logprobs", "text_offset"}``: one shape for both LangChain adapters, with each
    token's bytes and its alternatives in order. ``aligned_mean_logprob`` and
    ``base_mean_logprob`` are each model's mean log-prob per token of the sample.
    """
    info: dict[str, Any] = {
        "sources": list(output.sources),
        "token_ids": list(output.token_ids),
        "base_fraction": output.base_fraction,
        "finish_reason": output.finish_reason,
        "num_tokens": output.num_tokens,
        "prompt_tokens": output.prompt_tokens,
        "sample_index": output.sample_index,
    }
    if output.logprobs is not None:
        info["logprobs"] = openai_logprobs(output.logprobs)
    return info | mean_logprobs(output)


def generation_chunk(chunk: BacoChunk) -> GenerationChunk:
    """One streamed piece: its tokens' sources, ids and log-probs; the last piece also carries
    the rest of :func:`generation_info`, read from the finished sample, so the added-up chunks
    hold the same ``generation_info`` as a non-streamed generation."""
    info: dict[str, Any] = {"sources": list(chunk.sources), "token_ids": list(chunk.token_ids)}
    if chunk.logprobs is not None:
        info["logprobs"] = openai_logprobs(chunk.logprobs)
    if chunk.output is not None:
        finished = generation_info(chunk.output)
        info |= {key: value for key, value in finished.items() if key not in PER_TOKEN_INFO}
    return GenerationChunk(text=chunk.text, generation_info=info)


class BacoLLM(BacoSettingsMixin, BaseLLM):
    """A base model and its aligned counterpart writing one completion together (BACO).

    Every router and sampling setting of :class:`~baco_integrations.GenerationSettings` is a
    field, and any of them can be overridden per call::

        llm = BacoLLM(engine=engine, router="P-PUNC", gamma=0.3, max_new_tokens=128)
        (prompt | llm | StrOutputParser()).invoke({"topic": "coffee"})
        llm.invoke("Ideas for a party", gamma=0.6, stop=["\\n\\n"])

    ``generate``/``batch`` decode all their prompts in one engine call and return ``n``
    generations per prompt; each generation's ``generation_info`` carries the per-token
    ``sources`` and ``token_ids`` (aligned-tokenizer ids, e.g. for
    :func:`baco_integrations.source_spans`), the ``base_fraction`` and the ``finish_reason``.

    ``logprobs=True`` (and ``top_logprobs=k``, 0 to 20), as a field or per call, adds each
    token's log-prob to ``generation_info["logprobs"]`` in OpenAI's chat shape (see
    :func:`generation_info`), and each model's mean log-prob of the sample.
    """

    model_config = ConfigDict(
        extra="forbid",  # an unknown setting is an error, never silently dropped
        arbitrary_types_allowed=True,
        # Off, as in ChatBaco (where LangChain's own validators assign fields); a setting is
        # still validated when assigned (EngineSettings.__setattr__) and at every call.
        validate_assignment=False,
        protected_namespaces=(),
    )

    @property
    def _llm_type(self) -> str:
        return "baco"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._baco_ls_params("llm", stop, kwargs)

    # ----------------------------------------------------------------- entry points

    def generate(  # type: ignore[override]
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        callbacks: Callbacks | list[Callbacks] | None = None,
        *,
        tags: list[str] | list[list[str]] | None = None,
        metadata: builtins.dict[str, Any] | list[builtins.dict[str, Any]] | None = None,
        run_name: str | list[str] | None = None,
        run_id: uuid.UUID | list[uuid.UUID | None] | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Like ``BaseLLM.generate``; ``kwargs`` are per-call settings (unknown ones raise).

        BaseLLM keys its cache on the instance's fields and ``stop`` only, so the per-call
        settings are applied to a copy first: a call with ``gamma=0.6`` never reads an entry
        cached for ``gamma=0.3``. ``stop`` is validated before LangChain reads it.
        """
        llm = self._with_overrides(kwargs)
        return BaseLLM.generate(
            llm,
            prompts,
            stop=llm._call_stop(stop),
            callbacks=callbacks,
            tags=tags,
            metadata=metadata,
            run_name=run_name,
            run_id=run_id,
        )

    async def agenerate(  # type: ignore[override]
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        callbacks: Callbacks | list[Callbacks] | None = None,
        *,
        tags: list[str] | list[list[str]] | None = None,
        metadata: builtins.dict[str, Any] | list[builtins.dict[str, Any]] | None = None,
        run_name: str | list[str] | None = None,
        run_id: uuid.UUID | list[uuid.UUID | None] | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Async :meth:`generate` (the engine's own async call: the event loop never blocks)."""
        llm = self._with_overrides(kwargs)
        return await BaseLLM.agenerate(
            llm,
            prompts,
            stop=llm._call_stop(stop),
            callbacks=callbacks,
            tags=tags,
            metadata=metadata,
            run_name=run_name,
            run_id=run_id,
        )

    # ----------------------------------------------------------------- LangChain hooks

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        settings = self._call_settings(stop, kwargs)
        if self._streams_invoke(prompts, settings):
            finished: list[BacoOutput] = []
            for _ in self._stream_with(prompts[0], settings, run_manager, finished.append):
                pass  # the callbacks see every chunk
            return self._result([finished])
        if not prompts:
            return LLMResult(generations=[])
        # One engine call for the whole batch: LangChain's batch() arrives here as one list.
        return self._result(self.engine.generate(list(prompts), settings=settings))

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        settings = self._call_settings(stop, kwargs)  # fail fast, on the loop
        if self._streams_invoke(prompts, settings):
            finished: list[BacoOutput] = []
            async for _ in self._astream_with(prompts[0], settings, run_manager, finished.append):
                pass  # the callbacks see every chunk
            return self._result([finished])
        if not prompts:
            return LLMResult(generations=[])
        # The engine's own async call: no thread, and cancelling this task takes the call's
        # rows out of the engine's batch at once.
        return self._result(await self.engine.agenerate(list(prompts), settings=settings))

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        yield from self._stream_with(prompt, self._call_settings(stop, kwargs), run_manager)

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        settings = self._call_settings(stop, kwargs)
        async for chunk in self._astream_with(prompt, settings, run_manager):
            yield chunk

    # ----------------------------------------------------------------- helpers

    def _streams_invoke(self, prompts: list[str], settings: GenerationSettings) -> bool:
        # streaming=True streams what can be streamed: one prompt, one sample. A batch is
        # still decoded in one engine call.
        return self.streaming and len(prompts) == 1 and is_streamable(settings)

    def _engine_stream(self, prompt: str, settings: GenerationSettings) -> Iterator[BacoChunk]:
        """The engine's stream of ``prompt``, validated now; closing it takes the call out of
        the engine's batch."""
        check_streamable(settings)
        return self.engine.stream(prompt, settings=settings)

    def _engine_astream(
        self, prompt: str, settings: GenerationSettings
    ) -> AsyncIterator[BacoChunk]:
        """Async :meth:`_engine_stream` (the engine's own: no thread per stream)."""
        check_streamable(settings)
        return self.engine.astream(prompt, settings=settings)

    def _stream_with(
        self,
        prompt: str,
        settings: GenerationSettings,
        run_manager: CallbackManagerForLLMRun | None,
        on_finished: OnFinished | None = None,
    ) -> Iterator[GenerationChunk]:
        """The engine's stream as GenerationChunks, each reported to the callbacks; the
        finished sample goes to ``on_finished``."""
        # Closing the engine's iterator (also when our consumer stops early) stops decoding.
        with closing(self._engine_stream(prompt, settings)) as chunks:  # type: ignore[type-var]
            for chunk in chunks:
                generation = generation_chunk(chunk)
                if run_manager:
                    run_manager.on_llm_new_token(generation.text, chunk=generation)
                if on_finished is not None and chunk.output is not None:
                    on_finished(chunk.output)
                yield generation

    async def _astream_with(
        self,
        prompt: str,
        settings: GenerationSettings,
        run_manager: AsyncCallbackManagerForLLMRun | None,
        on_finished: OnFinished | None = None,
    ) -> AsyncIterator[GenerationChunk]:
        """Async :meth:`_stream_with`."""
        # Closing the engine's stream now, not when it is garbage-collected, takes the call
        # out of the engine's batch as soon as our consumer stops.
        async with aclosing(self._engine_astream(prompt, settings)) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                generation = generation_chunk(chunk)
                if run_manager:
                    await run_manager.on_llm_new_token(generation.text, chunk=generation)
                if on_finished is not None and chunk.output is not None:
                    on_finished(chunk.output)
                yield generation

    def _result(self, outputs: list[list[BacoOutput]]) -> LLMResult:
        generations = [
            [Generation(text=o.text, generation_info=generation_info(o)) for o in samples]
            for samples in outputs
        ]
        return LLMResult(
            generations=generations,
            llm_output={
                "token_usage": Usage.of(chain.from_iterable(outputs)).as_dict(),
                "model_name": self.model_name,
                "models": self.model_names,
            },
        )
