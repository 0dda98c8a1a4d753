"""Validated settings: the one place where router and sampling options are defined.

The engine validates a :class:`GenerationSettings` once per call, before any model runs; the
LangChain and LlamaIndex adapters inherit its fields so that every setting has one definition.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .constraints import Constraint
from .prompts import check_text, template_fields

Source = Literal["base", "aligned"]
Gate = Literal["base", "aligned"]

#: Canonical router names, in the order of docs/algorithm.md, Routers.
ROUTER_NAMES: tuple[str, ...] = (
    "aligned",
    "base",
    "random",
    "P",
    "H",
    "PUNC",
    "FC",
    "P-PUNC",
    "H-PUNC",
    "P-FC",
    "H-FC",
    "nudging",
)
_CANONICAL = {name.lower(): name for name in ROUTER_NAMES}

#: gamma a router is built with when none is given (``build_router``). A call without gamma
#: aims at DEFAULT_BASE_SHARE instead, which sets each sample's threshold itself. P-style
#: thresholds are probabilities, H-style ones are entropies in nats.
DEFAULT_GAMMA: dict[str, float] = {
    "random": 0.5,
    "P": 0.5,
    "P-PUNC": 0.5,
    "P-FC": 0.5,
    "H": 1.0,
    "H-PUNC": 1.0,
    "H-FC": 1.0,
    "nudging": 0.3,
}
_PROBABILITY_GAMMA = {"random", "P", "P-PUNC", "P-FC", "nudging"}

DEFAULT_BASE_TEMPLATE = "{prompt}\n"

#: Temperatures below this (but above 0) decode greedily, exactly as ``temperature=0``:
#: dividing float32 logits by a smaller number overflows them to inf/NaN, and the result would
#: be argmax-like anyway.
MIN_TEMPERATURE = 1e-5
#: Routers whose pick is a threshold on a signal, and so take ``base_share``.
THRESHOLD_ROUTERS = ("P", "H", "P-PUNC", "H-PUNC", "P-FC", "H-FC", "nudging", "random")
#: The base share a router with a threshold aims at when a call gives neither ``gamma`` nor
#: ``base_share``: chosen on the tuning half of the packaged prompts on the offline pair
#: (docs/evaluation.md, Base share on held-out prompts). A share reads the same for every
#: router, where a default γ would not.
DEFAULT_BASE_SHARE = 0.2
#: The most alternatives per token ``top_logprobs`` may ask (OpenAI's and vLLM's cap).
MAX_TOP_LOGPROBS = 20

#: ``seed`` is a 64-bit unsigned integer (what ``torch.Generator.manual_seed`` stores).
MAX_SEED = 2**64 - 1


def _number(value: object) -> object:
    """Refuse booleans and strings where a number is expected (pydantic would coerce
    ``True`` to 1 and ``"2"`` to 2); other numbers (numpy's included) go on to pydantic."""
    if isinstance(value, bool | str | bytes):
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r:.40}")
    return value


#: An int or a float field that takes numbers only (see :func:`_number`).
Int = Annotated[int, BeforeValidator(_number)]
Float = Annotated[float, BeforeValidator(_number)]


def canonical_router_name(name: str) -> str:
    """Map a case-insensitive router name to its canonical spelling, or raise ``ValueError``."""
    canonical = _CANONICAL.get(name.strip().lower())
    if canonical is None:
        raise ValueError(
            f"router={name!r} is not a known router; allowed values: {', '.join(ROUTER_NAMES)} "
            "or a callable router"
        )
    return canonical


class RouterConfig(BaseModel):
    """Which router decides the source of each word, and its knob.

    ``strategy`` is a router name (case-insensitive) or a callable router (see
    :class:`baco_integrations.routers.Router`). ``gamma`` is the router's threshold: a
    probability in [0, 1] for ``random``/``P*``/``nudging``, an entropy in nats (>= 0) for
    ``H*``; when omitted the router's documented default applies. ``gate`` picks the model
    whose distribution the logit rules read.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    strategy: str | Callable[..., Any] = "P-PUNC"
    gamma: Float | None = None
    gate: Gate = "base"

    @field_validator("strategy", mode="before")
    @classmethod
    def _check_strategy(cls, value: object) -> object:
        if isinstance(value, str):
            return canonical_router_name(value)
        if callable(value):
            return value
        raise ValueError(
            f"router must be a router name ({', '.join(ROUTER_NAMES)}) or a callable, "
            f"got {type(value).__name__}"
        )

    @model_validator(mode="after")
    def _check_gamma(self) -> RouterConfig:
        if self.gamma is None:
            return self
        if not math.isfinite(self.gamma):
            raise ValueError(f"gamma={self.gamma} must be a finite number")
        if isinstance(self.strategy, str) and self.strategy in _PROBABILITY_GAMMA:
            if not 0.0 <= self.gamma <= 1.0:
                raise ValueError(
                    f"gamma={self.gamma} is out of range for router {self.strategy!r}: "
                    "allowed values are probabilities in [0, 1]"
                )
        elif self.gamma < 0.0:
            raise ValueError(f"gamma={self.gamma} is out of range: allowed values are >= 0")
        return self

    @property
    def name(self) -> str:
        """The router's name (a callable router's ``__name__``)."""
        if isinstance(self.strategy, str):
            return self.strategy
        return getattr(self.strategy, "__name__", type(self.strategy).__name__)

    @property
    def resolved_gamma(self) -> float:
        """gamma, or the router's default when none was given (0.0 for routers without one)."""
        if self.gamma is not None:
            return self.gamma
        return DEFAULT_GAMMA.get(self.name, 0.0)


class GenerationSettings(BaseModel):
    """Every router and sampling setting of one BACO call.

    ``gamma`` and ``gate`` override the values of a :class:`RouterConfig` passed as
    ``router``; left as ``None`` they keep them (or the router's defaults).
    """

    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, validate_assignment=True
    )

    router: str | RouterConfig | Callable[..., Any] = Field(
        default="P-PUNC", description="Router name, RouterConfig or callable router."
    )
    gamma: Float | None = Field(default=None, description="Router threshold (see RouterConfig).")
    gate: Gate | None = Field(default=None, description="Model whose distribution P/H rules read.")
    base_share: Float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Target share of tokens the base model writes, in [0, 1], tracked per "
        "sample (instead of gamma; routers with a threshold; docs/routers.md). None: "
        f"{DEFAULT_BASE_SHARE} for a router with a threshold when gamma is not given either.",
    )
    guard: Float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Keep a base token only if the aligned model gives it at least guard x "
        "its top probability (0: off; docs/routers.md).",
    )
    n: Int = Field(
        default=1,
        ge=1,
        description="Samples per prompt (at most the engine's EngineLimits.max_n, 256 by "
        "default; prompts x n at most EngineLimits.max_rows).",
    )
    max_new_tokens: Int = Field(
        default=128,
        ge=1,
        description="Most tokens generated per sample (at most the engine's "
        "EngineLimits.max_new_tokens, 32768 by default; the context window also bounds it).",
    )
    temperature: Float = Field(
        default=1.0,
        ge=0.0,
        allow_inf_nan=False,
        description=f"0 means greedy decoding; so does any temperature below {MIN_TEMPERATURE} "
        "(smaller ones would overflow the scaled logits).",
    )
    top_p: Float = Field(
        default=1.0, gt=0.0, le=1.0, allow_inf_nan=False, description="Nucleus sampling mass."
    )
    top_k: Int = Field(default=0, ge=0, description="Keep the k most likely tokens; 0 disables.")
    min_p: Float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Min-p truncation; 0 disables.",
    )
    stop: list[str] | None = Field(
        default=None,
        description="Stop strings; output is cut before. Total length at most the engine's "
        "EngineLimits.max_stop_chars (10000 by default).",
    )
    seed: Int | None = Field(
        default=None, description="Seed for reproducible sampling: an integer in [0, 2**64 - 1]."
    )
    system_prompt: str | None = Field(default=None, description="System prompt (aligned model).")
    base_template: str = Field(
        default=DEFAULT_BASE_TEMPLATE,
        description="Plain-text template for the base model: exactly the field '{prompt}' "
        "(one or more times), other braces doubled ('{{', '}}').",
    )
    constraint: Constraint | None = Field(
        default=None,
        description="What every sample must match: a JSON schema (or pydantic model class), "
        "any JSON object, a regex or a choice of strings (see Constraint).",
    )
    lazy: bool = Field(
        default=True,
        description="Run a model only when its distribution is needed (same tokens either way).",
    )
    logprobs: bool = Field(
        default=False,
        description="Record each generated token's log-prob under the distribution it was "
        "drawn from (BacoOutput.logprobs, BacoChunk.logprobs).",
    )
    top_logprobs: Int = Field(
        default=0,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description=f"With logprobs: also the k most likely tokens of that distribution "
        f"(0 to {MAX_TOP_LOGPROBS}).",
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _check_stop(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(s, str) for s in value):
            raise ValueError(
                f"stop must be a string or a list of strings, got {type(value).__name__}"
            )
        for i, s in enumerate(value):
            if s == "":
                raise ValueError("stop strings must be non-empty")
            check_text(s, f"stop[{i}]")
        return list(value) or None

    @field_validator("seed")
    @classmethod
    def _check_seed(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= MAX_SEED:
            raise ValueError(
                f"seed={value} is out of range: allowed values are integers in [0, 2**64 - 1]"
            )
        return value

    @field_validator("system_prompt")
    @classmethod
    def _check_system_prompt(cls, value: str | None) -> str | None:
        return None if value is None else check_text(value, "system_prompt")

    @field_validator("base_template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        check_text(value, "base_template")
        template_fields(value)  # exactly '{prompt}' fields, at least one
        return value

    @field_validator("constraint", mode="before")
    @classmethod
    def _coerce_constraint(cls, value: object) -> object:
        return Constraint.coerce(value)

    @field_validator("router", mode="before")
    @classmethod
    def _check_router(cls, value: object) -> object:
        if isinstance(value, str):
            return canonical_router_name(value)
        if isinstance(value, RouterConfig) or callable(value):
            return value
        raise ValueError(
            f"router must be a router name ({', '.join(ROUTER_NAMES)}), a RouterConfig or a "
            f"callable, got {type(value).__name__}"
        )

    @model_validator(mode="after")
    def _check_router_gamma(self) -> GenerationSettings:
        self.router_config()  # surfaces an out-of-range gamma at validation time
        return self

    @model_validator(mode="after")
    def _check_base_share(self) -> GenerationSettings:
        if self.base_share is None:
            return self
        config = self.router_config()
        if config.gamma is not None:
            raise ValueError(
                f"base_share={self.base_share} and gamma={config.gamma} were both given: give "
                "one (base_share sets each sample's threshold itself)"
            )
        if config.name not in THRESHOLD_ROUTERS:
            raise ValueError(
                f"base_share needs a router with a threshold; router {config.name!r} has none "
                f"(allowed: {', '.join(THRESHOLD_ROUTERS)})"
            )
        return self

    @model_validator(mode="after")
    def _check_top_logprobs(self) -> GenerationSettings:
        if self.top_logprobs and not self.logprobs:
            raise ValueError(
                f"top_logprobs={self.top_logprobs} needs logprobs=True (the alternatives are "
                "recorded with each token's log-prob)"
            )
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        # validate_assignment stores the value before the model validators run and does not
        # roll back when they fail: restore the old value so no bad state survives.
        if name not in type(self).model_fields:
            super().__setattr__(name, value)
            return
        old = self.__dict__.get(name)
        try:
            super().__setattr__(name, value)
        except ValidationError:
            self.__dict__[name] = old
            raise

    def router_config(self) -> RouterConfig:
        """The effective router configuration, with ``gamma``/``gate`` overrides applied."""
        if isinstance(self.router, RouterConfig):
            base = self.router
            return RouterConfig(
                strategy=base.strategy,
                gamma=self.gamma if self.gamma is not None else base.gamma,
                gate=self.gate if self.gate is not None else base.gate,
            )
        return RouterConfig(strategy=self.router, gamma=self.gamma, gate=self.gate or "base")

    @property
    def resolved_base_share(self) -> float | None:
        """The base share the call aims at: ``base_share``, else :data:`DEFAULT_BASE_SHARE`
        for a router with a threshold when no ``gamma`` was given either; None when a γ (given,
        or a router without a threshold) decides."""
        if self.base_share is not None:
            return self.base_share
        config = self.router_config()
        if config.gamma is None and config.name in THRESHOLD_ROUTERS:
            return DEFAULT_BASE_SHARE
        return None

    def updated(self, **overrides: Any) -> GenerationSettings:
        """A validated copy with ``overrides`` applied; unknown names raise ``ValueError``."""
        unknown = sorted(set(overrides) - set(type(self).model_fields))
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(unknown)}; allowed settings: "
                f"{', '.join(type(self).model_fields)}"
            )
        # Attribute values, not model_dump(): a RouterConfig or callable router must stay as is.
        current = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self).model_validate({**current, **overrides})


SETTING_NAMES: tuple[str, ...] = tuple(GenerationSettings.model_fields)
