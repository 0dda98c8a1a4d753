"""Runners: where models run. The decoding loop (:mod:`baco_integrations.decoding`) asks a
runner per model for next-token distributions and never runs a model itself.

* :mod:`.base` — the interface (:class:`ModelRunner`), :class:`ModelFacts`,
  :class:`Distributions`, :class:`RunnerCounters`.
* :mod:`.in_process` — :class:`TransformersRunner`: a transformers model in this process, its
  KV cache over the batch's rows (dynamic or static, optionally compiled).
* :mod:`.remote` — :class:`~.remote.EndpointRunner`: a model behind an OpenAI-compatible
  ``/v1/completions`` endpoint (llama.cpp, vLLM, SGLang), drafting runs of tokens.
* :mod:`.kv_cache`, :mod:`.model_calls` — what the in-process runner needs of transformers.

A new backend is one more runner here; see docs/architecture.md.
"""

from .base import (
    Distributions,
    ModelFacts,
    ModelRunner,
    RowSettings,
    RowsFailed,
    RunnerCounters,
)
from .in_process import (
    CACHE_IMPLEMENTATIONS,
    CacheImplementation,
    TransformersRunner,
    compile_config,
    model_facts,
)

__all__ = [
    "CACHE_IMPLEMENTATIONS",
    "CacheImplementation",
    "Distributions",
    "ModelFacts",
    "ModelRunner",
    "RowSettings",
    "RowsFailed",
    "RunnerCounters",
    "TransformersRunner",
    "compile_config",
    "model_facts",
]
