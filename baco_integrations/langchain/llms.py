"""BacoLLM: BACO collaborative decoding as a LangChain text-completion model (``BaseLLM``)."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import closing
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

from .._streaming import SourceTracker, generate_in_thread, iterate_in_thread
from ..config import GenerationSettings
from ..outputs import BacoOutput
from ._common import (
    BacoSettingsMixin,
    check_streamable,
)


def generation_info(output: BacoOutput) -> dict[str, Any]:
    """What a finished sample reports besides its text."""
    return {
        "sources": list(output.sources),
        "token_ids": list(output.token_ids),
        "base_fraction": output.base_fraction,
        "finish_reason": output.finish_reason,
        "num_tokens": output.num_tokens,
        "prompt_tokens": output.prompt_tokens,
        "sample_index": output.sample_index,
    }


def token_usage(outputs: Sequence[Sequence[BacoOutput]]) -> dict[str, int]:
    """OpenAI-style usage; a prompt counts once whatever ``n`` (its samples share one prefill)."""
    prompt = sum(samples[0].prompt_tokens for samples in outputs if samples)
    completion = sum(o.num_tokens for samples in outputs for o in samples)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


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
    """

    model_config = ConfigDict(
        extra="forbid",  # an unknown setting is an error, never silently dropped
        arbitrary_types_allowed=True,
        # Off, as in ChatBaco (where LangChain's own validators assign fields): settings are
        # validated at construction and again, as a GenerationSettings, at every call.
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
        cached for ``gamma=0.3``.
        """
        llm = self._with_overrides(kwargs)
        return BaseLLM.generate(
            llm,
            prompts,
            stop=stop if stop is not None else llm.stop,
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
        """Async :meth:`generate`; the engine runs in a worker thread."""
        llm = self._with_overrides(kwargs)
        return await BaseLLM.agenerate(
            llm,
            prompts,
            stop=stop if stop is not None else llm.stop,
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
            chunks = list(self._stream_with(prompts[0], settings, run_manager))
            return self._result_from_chunks(chunks)
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
            chunks = [c async for c in self._astream_with(prompts[0], settings, run_manager)]
            return self._result_from_chunks(chunks)
        if not prompts:
            return LLMResult(generations=[])
        outputs = await generate_in_thread(self.engine, list(prompts), settings)
        return self._result(outputs)

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
        return self.streaming and len(prompts) == 1 and settings.n == 1

    def _chunks(self, prompt: str, settings: GenerationSettings) -> Iterator[GenerationChunk]:
        """The engine's stream as GenerationChunks (no callbacks: the caller fires them)."""
        check_streamable(settings)
        tracker = SourceTracker()
        # Closing the engine's iterator stops decoding and releases the engine's lock.
        with closing(self.engine.stream(prompt, settings=settings)) as chunks:
            for chunk in chunks:
                info: dict[str, Any] = {
                    "sources": tracker.add(chunk),
                    "token_ids": list(chunk.token_ids),
                }
                if chunk.finish_reason is not None:
                    info |= {
                        "finish_reason": chunk.finish_reason,
                        "base_fraction": tracker.base_fraction,
                        "num_tokens": len(tracker.sources),
                        "prompt_tokens": chunk.prompt_tokens,
                    }
                yield GenerationChunk(text=chunk.text, generation_info=info)

    def _stream_with(
        self,
        prompt: str,
        settings: GenerationSettings,
        run_manager: CallbackManagerForLLMRun | None,
    ) -> Iterator[GenerationChunk]:
        for chunk in self._chunks(prompt, settings):
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream_with(
        self,
        prompt: str,
        settings: GenerationSettings,
        run_manager: AsyncCallbackManagerForLLMRun | None,
    ) -> AsyncIterator[GenerationChunk]:
        check_streamable(settings)  # raise here, not in the worker thread
        chunks = await iterate_in_thread(lambda: self._chunks(prompt, settings))
        try:
            async for chunk in chunks:
                if run_manager:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        finally:
            # Close now rather than when garbage-collected: this stops the worker thread.
            await chunks.aclose()  # type: ignore[attr-defined]

    def _result(self, outputs: list[list[BacoOutput]]) -> LLMResult:
        generations = [
            [Generation(text=o.text, generation_info=generation_info(o)) for o in samples]
            for samples in outputs
        ]
        return LLMResult(
            generations=generations,
            llm_output={
                "token_usage": token_usage(outputs),
                "model_name": self.model_name,
                "models": dict(self.engine.model_names),
            },
        )

    def _result_from_chunks(self, chunks: list[GenerationChunk]) -> LLMResult:
        merged: GenerationChunk | None = None
        for chunk in chunks:
            merged = chunk if merged is None else merged + chunk
        generation = merged or GenerationChunk(text="")
        info = generation.generation_info or {}
        prompt, completion = int(info.get("prompt_tokens", 0)), int(info.get("num_tokens", 0))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        return LLMResult(
            generations=[[Generation(text=generation.text, generation_info=info or None)]],
            llm_output={
                "token_usage": usage,
                "model_name": self.model_name,
                "models": dict(self.engine.model_names),
            },
        )
