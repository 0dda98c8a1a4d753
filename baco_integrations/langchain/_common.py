"""What BacoLLM and ChatBaco share: the settings fields, per-call overrides, stop strings.

The adapters are thin: decoding, prompt rendering, stop strings, usage and the facts both
adapters report are the core's (:mod:`baco_integrations._adapter`, :mod:`..outputs`). This
module only turns LangChain's calling conventions into one validated
:class:`~baco_integrations.GenerationSettings` per call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, NoReturn, Self

from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.runnables import RunnableConfig
from pydantic import Field

from .._adapter import (
    MAX_TOKENS_ALIAS,
    PROVIDER,
    EngineSettings,
    checked_stop,
    fold_max_tokens,
)
from ..config import GenerationSettings

#: Where structured output comes from with BACO (no tool calling; decoding under a grammar).
STRUCTURED_OUTPUT_ADVICE = (
    "For structured output, use ChatBaco.with_structured_output(schema) (method 'json_schema' "
    "or 'json_mode'): every sample is decoded under the schema and parsed. Any call also "
    "takes constraint= (a pydantic model class, or a baco_integrations.constraints.Constraint): "
    "`llm.invoke(prompt, constraint=Idea)` gives JSON valid against Idea; see "
    "docs/structured.md."
)


class BacoSettingsMixin(EngineSettings):
    """Every router and sampling setting as a field, plus the engine they run on.

    The fields are inherited from :class:`GenerationSettings`, validators included, so each
    setting is defined in one place; an assignment is validated too
    (:meth:`EngineSettings.__setattr__`). The adapters list this mixin before their LangChain
    base class so that its methods take precedence in the MRO.
    """

    streaming: bool = Field(
        default=False,
        description="Stream single-sample invoke calls through the callbacks' on_llm_new_token.",
    )

    # ----------------------------------------------------------------- entry points

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[Any]:
        """LangChain's ``stream``, with ``stop`` validated before LangChain reads it."""
        yield from super().stream(  # type: ignore[misc]
            input, config, stop=self._call_stop(stop), **kwargs
        )

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """LangChain's ``astream``, with ``stop`` validated before LangChain reads it."""
        stream = super().astream(  # type: ignore[misc]
            input, config, stop=self._call_stop(stop), **kwargs
        )
        try:
            async for item in stream:
                yield item
        finally:
            # Close the inner stream now (not when the loop finalises it): that stops decoding.
            await stream.aclose()

    def with_structured_output(self, schema: Any, **kwargs: Any) -> NoReturn:
        """Not on a text-completion model: raises ``NotImplementedError`` saying what to use
        (ChatBaco overrides this with decoding under the schema)."""
        raise NotImplementedError(
            f"{type(self).__name__} is a text-completion model and has no "
            "with_structured_output. " + STRUCTURED_OUTPUT_ADVICE
        )

    # ----------------------------------------------------------------- settings

    def _call_stop(self, stop: object) -> list[str] | None:
        """A call's stop strings, validated as the ``stop`` setting is; the field if None.

        Every entry point passes ``stop`` through here before LangChain's own handling
        (tracing, cache keys, callbacks), so ``stop=5`` is a ``ValueError`` naming ``stop``
        and ``stop="abc"`` is traced as ``["abc"]``.
        """
        return checked_stop(stop) if stop is not None else self.stop

    def _call_settings(self, stop: list[str] | None, kwargs: dict[str, Any]) -> GenerationSettings:
        """The settings of one call: the fields, then ``kwargs`` and ``stop`` on top.

        Unknown keyword arguments raise ``ValueError`` (``GenerationSettings.updated``); a
        ``stop`` given to the call replaces the ``stop`` field.
        """
        overrides = dict(kwargs)
        if stop is not None:
            overrides["stop"] = stop
        return self.settings_for_call(overrides)

    def _with_overrides(self, kwargs: dict[str, Any]) -> Self:
        """A shallow copy whose fields carry the validated per-call overrides in ``kwargs``.

        Used where LangChain builds a cache key from the instance's fields alone.
        """
        if not kwargs:
            return self
        overrides = fold_max_tokens(kwargs)
        settings = self.settings_for_call(overrides)
        copy = self.model_copy(update={name: getattr(settings, name) for name in overrides})
        # LangChain caches the serialised form; the copy's differs, so drop the stale one.
        copy.__dict__.pop("_serialized", None)
        return copy

    # ----------------------------------------------------------------- identity

    @property
    def _identifying_params(self) -> dict[str, Any]:
        # Every setting: LangChain builds its cache key (and traces) from these.
        names = self.model_names
        return {
            "base_model": names["base"],
            "aligned_model": names["aligned"],
            **self.described_settings(),
        }

    def _baco_ls_params(
        self, model_type: Literal["llm", "chat"], stop: object, kwargs: dict[str, Any]
    ) -> LangSmithParams:
        """Standard tracing params, honouring per-call ``model``/``temperature``/length."""
        model = kwargs.get("model")
        temperature = kwargs.get("temperature", self.temperature)
        max_tokens = kwargs.get("max_new_tokens", kwargs.get(MAX_TOKENS_ALIAS))
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=model if isinstance(model, str) else self.model_name,
            ls_model_type=model_type,
            ls_max_tokens=max_tokens if isinstance(max_tokens, int) else self.max_new_tokens,
        )
        if isinstance(temperature, int | float):
            params["ls_temperature"] = float(temperature)
        effective_stop = self._call_stop(stop)
        if effective_stop:
            params["ls_stop"] = effective_stop
        return params

    # ----------------------------------------------------------------- tokens

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` under the aligned model's tokenizer (no special tokens)."""
        if self.custom_get_token_ids is not None:  # type: ignore[attr-defined]
            return self.custom_get_token_ids(text)  # type: ignore[attr-defined]
        return self.engine.token_ids(text)

    def get_num_tokens(self, text: str) -> int:
        """Number of tokens in ``text`` under the aligned model's tokenizer."""
        if self.custom_get_token_ids is not None:  # type: ignore[attr-defined]
            return len(self.custom_get_token_ids(text))  # type: ignore[attr-defined]
        return self.engine.count_tokens(text)

    def _prompt_tokens(self, prompt: Any, settings: GenerationSettings) -> int:
        """Length of the aligned model's rendering of ``prompt`` (streams do not report it)."""
        ids = self.engine.encode_prompts(prompt, settings.system_prompt, settings.base_template)
        return len(ids["aligned"])
