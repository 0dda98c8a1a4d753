"""What both framework adapters are made of: the settings fields plus the engine they run on.

Nothing here knows LangChain or LlamaIndex; each adapter inherits :class:`EngineSettings`
before its framework's base class. Facts both adapters state (the display name, the settings
as traces show them, the ``max_tokens`` alias, which calls can stream) are defined here once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Self

from pydantic import Field, model_validator

from .config import SETTING_NAMES, GenerationSettings
from .engine import BacoEngine, CacheImplementation
from .limits import EngineLimits
from .outputs import BacoOutput, TokenLogProb, TopLogProb

#: The provider name both adapters report, and the prefix of :func:`display_name`.
PROVIDER = "baco"

#: The standard name (LangChain's, OpenAI's) of the output length limit; both adapters accept
#: it, at construction and per call, as an alias of ``max_new_tokens``.
MAX_TOKENS_ALIAS = "max_tokens"


def display_name(model_names: Mapping[str, str]) -> str:
    """``baco:<base>+<aligned>``: how traces, metadata and responses name a pair."""
    return f"{PROVIDER}:{model_names['base']}+{model_names['aligned']}"


def fold_max_tokens(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with ``max_tokens`` renamed ``max_new_tokens``; both, disagreeing, is an error.

    ``max_tokens=None`` (what generic code passes for "no limit given") is dropped.
    """
    values = dict(values)
    if MAX_TOKENS_ALIAS not in values:
        return values
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


def checked_stop(stop: object) -> list[str] | None:
    """A call's ``stop`` as :class:`GenerationSettings` validates it: a string is one stop
    string (``"abc"`` is ``["abc"]``, never three letters), anything but strings is a
    ``ValueError`` naming ``stop``, and an empty list is None."""
    return GenerationSettings.model_validate({"stop": stop}).stop


def describe_setting(value: Any) -> Any:
    """A plain, printable form of a setting for traces, instrumentation and cache keys.

    A router object (RouterConfig or callable) becomes its ``repr``: two different callables
    then never share a cache entry.
    """
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [describe_setting(v) for v in value]
    return repr(value)


def is_streamable(settings: GenerationSettings) -> bool:
    """Whether a call can stream: one text stream carries one sample."""
    return settings.n == 1


def check_streamable(settings: GenerationSettings) -> None:
    """Refuse to stream ``n`` samples: interleaved in one text stream they would be garbled."""
    if not is_streamable(settings):
        raise ValueError(
            f"streaming returns one sample, but n={settings.n}; call without streaming to get "
            "all n samples, or stream with n=1"
        )


def token_bytes(entry: TokenLogProb | TopLogProb) -> list[int]:
    """A token's UTF-8 bytes, as OpenAI reports them (its text's where the engine recorded
    none); a byte-level token may hold part of a character."""
    return list(entry.bytes) if entry.bytes else list(entry.token.encode("utf-8"))


def openai_logprobs(entries: Sequence[TokenLogProb]) -> dict[str, Any]:
    """Token log-probs in the shape of an OpenAI chat completion's ``choice.logprobs``, as
    LangChain's ChatOpenAI reports them in ``response_metadata["logprobs"]``::

        {"content": [{"token": str, "bytes": [int, ...], "logprob": float,
                      "top_logprobs": [{"token": str, "bytes": [int, ...], "logprob": float},
                                       ...]}, ...]}

    One entry per generated token (the writing model's tokens), each with its alternatives
    most likely first (``top_logprobs=k``; an empty list when none were asked). The chunks of
    a stream each carry their own tokens' entries: LangChain's ``merge_dicts`` concatenates
    the ``content`` lists when chunks are added, so the sum holds them all.
    """
    return {
        "content": [
            {
                "token": entry.token,
                "bytes": token_bytes(entry),
                "logprob": entry.logprob,
                "top_logprobs": [
                    {"token": top.token, "bytes": token_bytes(top), "logprob": top.logprob}
                    for top in entry.top_logprobs
                ],
            }
            for entry in entries
        ]
    }


def mean_logprobs(output: BacoOutput) -> dict[str, float | None]:
    """Each model's mean log-prob per token of a finished sample (``aligned_mean_logprob``,
    ``base_mean_logprob``; None where the model cannot score it) when its call asked for
    log-probs, else nothing: metadata without ``logprobs`` is unchanged."""
    if output.logprobs is None:
        return {}
    return {
        "aligned_mean_logprob": output.aligned_mean_logprob,
        "base_mean_logprob": output.base_mean_logprob,
    }


class EngineSettings(GenerationSettings):
    """Every router and sampling setting as a field (inherited, validators included), plus the
    engine that decodes."""

    engine: BacoEngine = Field(
        exclude=True, repr=False, description="The loaded base/aligned pair that decodes."
    )

    @model_validator(mode="before")
    @classmethod
    def _fold_max_tokens(cls, data: Any) -> Any:
        return fold_max_tokens(data) if isinstance(data, Mapping) else data

    def __setattr__(self, name: str, value: Any) -> None:
        # The frameworks differ on validate_assignment (LangChain's BaseChatModel cannot have
        # it: it assigns a field inside its own validator). A setting is validated here, with
        # all the others as one GenerationSettings, before it is stored: ``llm.gamma = 7``
        # raises at once in both adapters, and a failed assignment leaves nothing behind.
        if name in SETTING_NAMES:
            value = getattr(self.generation_settings.updated(**{name: value}), name)
        super().__setattr__(name, value)

    @classmethod
    def from_model_ids(
        cls,
        base: str | os.PathLike[str],
        aligned: str | os.PathLike[str],
        *,
        device: str | None = "cpu",
        dtype: str = "auto",
        device_map: str | dict[str, Any] | None = None,
        base_gguf_file: str | None = None,
        aligned_gguf_file: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        cache_implementation: CacheImplementation = "dynamic",
        compile: bool = False,
        limits: EngineLimits | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Self:
        """Load a (base, aligned) pair with :meth:`BacoEngine.from_pretrained` and wrap it.

        ``fields`` are settings (``router=``, ``gamma=``, ...) and the framework's own options
        (callbacks, ...). They are checked before the models load, so a typo fails fast.
        ``model_kwargs`` go to ``AutoModelForCausalLM.from_pretrained``.
        """
        if "engine" in fields:
            raise ValueError("from_model_ids loads its own engine; pass engine= to the class")
        fields = fold_max_tokens(fields)
        unknown = sorted(set(fields) - set(cls.model_fields))
        if unknown:
            raise ValueError(
                f"unknown field(s) {', '.join(unknown)} for {cls.__name__}; settings are: "
                f"{', '.join(SETTING_NAMES)}"
            )
        GenerationSettings.model_validate({k: v for k, v in fields.items() if k in SETTING_NAMES})
        engine = BacoEngine.from_pretrained(
            base,
            aligned,
            device=device,
            dtype=dtype,
            device_map=device_map,
            base_gguf_file=base_gguf_file,
            aligned_gguf_file=aligned_gguf_file,
            trust_remote_code=trust_remote_code,
            revision=revision,
            cache_implementation=cache_implementation,
            compile=compile,
            limits=limits,
            **dict(model_kwargs or {}),
        )
        return cls(engine=engine, **fields)

    @property
    def generation_settings(self) -> GenerationSettings:
        """This instance's settings as a plain, validated :class:`GenerationSettings`."""
        # Attribute values, not model_dump(): a RouterConfig or callable router stays as is.
        return GenerationSettings.model_validate({n: getattr(self, n) for n in SETTING_NAMES})

    def settings_for_call(self, overrides: Mapping[str, Any]) -> GenerationSettings:
        """The settings of one call: the fields with ``overrides`` on top (``max_tokens``
        accepted); an unknown name or a bad value raises ``ValueError`` naming it."""
        overrides = fold_max_tokens(overrides)
        settings = self.generation_settings
        return settings.updated(**overrides) if overrides else settings

    def described_settings(self) -> dict[str, Any]:
        """Every setting in printable form (:func:`describe_setting`), for traces and events."""
        return {name: describe_setting(getattr(self, name)) for name in SETTING_NAMES}

    @property
    def model_names(self) -> dict[str, str]:
        """``{"base": ..., "aligned": ...}``: the two checkpoints."""
        return dict(self.engine.model_names)

    @property
    def model_name(self) -> str:
        """``baco:<base>+<aligned>`` (:func:`display_name`), as traces and responses report it."""
        return display_name(self.engine.model_names)
