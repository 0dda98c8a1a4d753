"""BACO (Base-Aligned Model Collaboration) decoding, with LangChain and LlamaIndex adapters.

The engine lives here; the adapters are in ``baco_integrations.langchain`` and
``baco_integrations.llama_index``.
"""

from .config import (
    DEFAULT_BASE_TEMPLATE,
    ROUTER_NAMES,
    GenerationSettings,
    RouterConfig,
)
from .engine import BacoEngine, DecodeStats, DecodingCancelled
from .outputs import BacoChunk, BacoOutput
from .routers import Router, RouterInputs, build_router

__all__ = [
    "DEFAULT_BASE_TEMPLATE",
    "ROUTER_NAMES",
    "BacoChunk",
    "BacoEngine",
    "BacoOutput",
    "DecodeStats",
    "DecodingCancelled",
    "GenerationSettings",
    "Router",
    "RouterConfig",
    "RouterInputs",
    "build_router",
]

__version__ = "0.1.0"
