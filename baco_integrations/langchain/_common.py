"""What BacoLLM and ChatBaco share: the settings fields, per-call overrides, async streaming.

The adapters are thin: decoding, prompt rendering and stop strings are the engine's job. This
module only turns LangChain's calling conventions into one validated
:class:`~baco_integrations.GenerationSettings` per call and moves engine work off the event
loop.
"""

from __future__ import annotations

from typing import Any, Literal, Self, TypeVar

from langchain_core.language_models.base import LangSmithParams
from pydantic import Field, model_validator

from .._adapter import EngineSettings
from ..config import SETTING_NAMES, GenerationSettings

T = TypeVar("T")

#: LangChain's standard name for the output length limit; accepted as an alias of
#: ``max_new_tokens`` (at construction and per call) so that generic LangChain code works.
MAX_TOKENS_ALIAS = "max_tokens"
PROVIDER = "baco"


def fold_max_tokens(values: dict[str, Any]) -> dict[str, Any]:
    """Rename ``max_tokens`` to ``max_new_tokens``; both with different values is an error."""
    if MAX_TOKENS_ALIAS not in values:
        return values
    values = dict(values)
    max_tokens = values.pop(MAX_TOKENS_ALIAS)
    if max_tokens is None:
        return values
    if values.get("max_new_tokens", max_tokens) != max_tokens:
        raise ValueError(
            f"max_tokens={max_tokens!r} and max_new_tokens={values['max_new_tokens']!r} "
            "disagree; max_tokens is an alias of max_new_tokens, pass only one"
        )
    values["max_new_tokens"] = max_tokens
    return values


def describe_setting(value: Any) -> Any:
    """A plain, printable form of a setting for tracing and LangChain's cache key.

    A router object (RouterConfig or callable) becomes its ``repr``: two different callables
    then never share a cache entry.
    """
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [describe_setting(v) for v in value]
    return repr(value)


class BacoSettingsMixin(EngineSettings):
    """Every router and sampling setting as a field, plus the engine they run on.

    The fields are inherited from :class:`GenerationSettings`, validators included, so each
    setting is defined in one place. The adapters list this mixin before their LangChain base
    class so that its methods take precedence in the MRO.
    """

    streaming: bool = Field(
        default=False,
        description="Stream single-sample invoke calls through the callbacks' on_llm_new_token.",
    )

    @model_validator(mode="before")
    @classmethod
    def _baco_max_tokens_alias(cls, data: Any) -> Any:
        return fold_max_tokens(data) if isinstance(data, dict) else data

    @classmethod
    def _normalize_fields(cls, fields: dict[str, Any]) -> dict[str, Any]:
        return fold_max_tokens(fields)

    # ----------------------------------------------------------------- settings

    def _call_settings(self, stop: list[str] | None, kwargs: dict[str, Any]) -> GenerationSettings:
        """The settings of one call: the fields, then ``kwargs`` and ``stop`` on top.

        Unknown keyword arguments raise ``ValueError`` (``GenerationSettings.updated``); a
        ``stop`` given to the call replaces the ``stop`` field.
        """
        overrides = fold_max_tokens(kwargs)
        if stop is not None:
            overrides["stop"] = stop
        return self.generation_settings.updated(**overrides)

    def _with_overrides(self, kwargs: dict[str, Any]) -> Self:
        """A shallow copy whose fields carry the validated per-call overrides in ``kwargs``.

        Used where LangChain builds a cache key from the instance's fields alone.
        """
        if not kwargs:
            return self
        overrides = fold_max_tokens(kwargs)
        settings = self.generation_settings.updated(**overrides)
        copy = self.model_copy(update={name: getattr(settings, name) for name in overrides})
        # LangChain caches the serialised form; the copy's differs, so drop the stale one.
        copy.__dict__.pop("_serialized", None)
        return copy

    # ----------------------------------------------------------------- identity

    @property
    def model_name(self) -> str:
        """``baco:<base>+<aligned>``, as reported in traces and response metadata."""
        names = self.engine.model_names
        return f"{PROVIDER}:{names['base']}+{names['aligned']}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        # Every setting: LangChain builds its cache key (and traces) from these.
        names = self.engine.model_names
        return {
            "base_model": names["base"],
            "aligned_model": names["aligned"],
            **{name: describe_setting(getattr(self, name)) for name in SETTING_NAMES},
        }

    def _baco_ls_params(
        self, model_type: Literal["llm", "chat"], stop: list[str] | None, kwargs: dict[str, Any]
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
        effective_stop = stop if stop is not None else self.stop
        if effective_stop:
            params["ls_stop"] = list(effective_stop)
        return params

    # ----------------------------------------------------------------- tokens

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` under the aligned model's tokenizer (no special tokens)."""
        if self.custom_get_token_ids is not None:  # type: ignore[attr-defined]
            return self.custom_get_token_ids(text)  # type: ignore[attr-defined]
        return list(self.engine.aligned_tokenizer(text, add_special_tokens=False)["input_ids"])

    def get_num_tokens(self, text: str) -> int:
        """Number of tokens in ``text`` under the aligned model's tokenizer."""
        if self.custom_get_token_ids is not None:  # type: ignore[attr-defined]
            return len(self.custom_get_token_ids(text))  # type: ignore[attr-defined]
        return self.engine.count_tokens(text)

    def _prompt_tokens(self, prompt: Any, settings: GenerationSettings) -> int:
        """Length of the aligned model's rendering of ``prompt`` (streams do not report it)."""
        ids = self.engine.encode_prompts(prompt, settings.system_prompt, settings.base_template)
        return len(ids["aligned"])


def check_streamable(settings: GenerationSettings) -> None:
    """Streams carry one sample: interleaving n samples in one text stream would garble them."""
    if settings.n != 1:
        raise ValueError(
            f"streaming returns one sample, but n={settings.n}; use invoke/generate/batch "
            "(which return all n samples) or stream with n=1"
        )
