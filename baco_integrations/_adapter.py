"""What both framework adapters are made of: the settings fields plus the engine they run on.

Nothing here knows LangChain or LlamaIndex; each adapter inherits this before its framework's
base class.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Self

from pydantic import Field

from .config import SETTING_NAMES, GenerationSettings
from .engine import BacoEngine, CacheImplementation


class EngineSettings(GenerationSettings):
    """Every router and sampling setting as a field (inherited, validators included), plus the
    engine that decodes."""

    engine: BacoEngine = Field(
        exclude=True, repr=False, description="The loaded base/aligned pair that decodes."
    )

    @classmethod
    def _normalize_fields(cls, fields: dict[str, Any]) -> dict[str, Any]:
        """Hook for an adapter to accept its framework's aliases of settings."""
        return fields

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
        fields = cls._normalize_fields(fields)
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
            **dict(model_kwargs or {}),
        )
        return cls(engine=engine, **fields)

    @property
    def generation_settings(self) -> GenerationSettings:
        """This instance's settings as a plain, validated :class:`GenerationSettings`."""
        # Attribute values, not model_dump(): a RouterConfig or callable router stays as is.
        return GenerationSettings.model_validate({n: getattr(self, n) for n in SETTING_NAMES})
