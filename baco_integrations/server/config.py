"""What one server instance allows: address, key, model name and the caps on one request.

The engine's own :class:`~baco_integrations.EngineLimits` bound what any caller may ask; these
caps are tighter, per HTTP request, because a server answers callers it does not know. Every
refusal is a 400 (or 413 for the body) that names the field and the cap.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from ..config import Int

#: Environment variable read by ``baco serve`` when ``--api-key`` is not given (a key on the
#: command line shows in ``ps``; one in the environment does not).
API_KEY_ENV = "BACO_API_KEY"

_Positive = Annotated[Int, Field(ge=1)]


class ServerConfig(BaseModel):
    """Settings of one BACO server (see docs/serving.md).

    Safe by default: it binds to 127.0.0.1, allows no cross-origin browser calls, and caps the
    body size, prompt tokens, ``max_tokens`` and ``n`` of every request.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(default="127.0.0.1", min_length=1, description="Address to bind.")
    port: Annotated[Int, Field(ge=0, le=65535)] = Field(
        default=8000, description="TCP port (0: any free port)."
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="When set, /v1 endpoints require 'Authorization: Bearer <api_key>'.",
    )
    model_name: str | None = Field(
        default=None,
        min_length=1,
        description="The id clients pass as 'model' (default: baco:<base>+<aligned>).",
    )
    max_body_bytes: _Positive = Field(
        default=2 * 1024 * 1024, description="Largest request body accepted (else 413)."
    )
    max_prompt_tokens: _Positive = Field(
        default=8192, description="Most prompt tokens per prompt, under either model."
    )
    max_tokens: _Positive = Field(
        default=4096, description="Most tokens a request may ask for per choice (max_tokens)."
    )
    default_max_tokens: _Positive = Field(
        default=512, description="max_tokens of a request that gives none."
    )
    max_n: _Positive = Field(default=16, description="Most choices per prompt (n).")
    max_prompts: _Positive = Field(
        default=16, description="Most prompts in one /v1/completions request."
    )
    cors_origins: tuple[str, ...] = Field(
        default=(), description="Browser origins allowed to call the server (none by default)."
    )
    retry_after_s: _Positive = Field(
        default=1, description="Retry-After of a 503 when the engine's queue is full."
    )
    shutdown_timeout_s: float = Field(
        default=30.0,
        ge=0.0,
        allow_inf_nan=False,
        description="On shutdown, live requests may finish for this long; then they are cancelled.",
    )

    @model_validator(mode="after")
    def _check_default_max_tokens(self) -> ServerConfig:
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(
                f"default_max_tokens={self.default_max_tokens} is more than "
                f"max_tokens={self.max_tokens}, the cap it must respect"
            )
        return self

    def updated(self, **changes: Any) -> ServerConfig:
        """A validated copy with ``changes`` applied (``model_copy`` would not validate)."""
        return type(self).model_validate({**dict(self), **changes})
