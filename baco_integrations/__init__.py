"""BACO (Base-Aligned Model Collaboration) decoding, with LangChain and LlamaIndex adapters.

The engine lives here; the adapters are in ``baco_integrations.langchain`` and
``baco_integrations.llama_index``. ``baco_integrations.render`` shows which words each model
wrote (its dispatcher ``render`` is not re-exported here, so that the name
``baco_integrations.render`` stays the module). ``load_offline_engine()`` is an engine on the
offline pair (docs/offline-pair.md).
"""

from typing import TYPE_CHECKING

from .config import (
    DEFAULT_BASE_TEMPLATE,
    ROUTER_NAMES,
    GenerationSettings,
    RouterConfig,
)
from .constraints import Constraint
from .decoding.scheduler import EngineOverloaded
from .engine import BacoEngine, DecodeStats, DecodingCancelled
from .limits import EngineLimits
from .outputs import BacoChunk, BacoOutput
from .render import (
    Span,
    render_ansi,
    render_brackets,
    render_html,
    source_spans,
    spans_from_chunks,
)
from .routers import Router, RouterInputs, build_router

__all__ = [
    "DEFAULT_BASE_TEMPLATE",
    "ROUTER_NAMES",
    "BacoChunk",
    "BacoEngine",
    "BacoOutput",
    "Constraint",
    "DecodeStats",
    "DecodingCancelled",
    "EngineLimits",
    "EngineOverloaded",
    "GenerationSettings",
    "Router",
    "RouterConfig",
    "RouterInputs",
    "Span",
    "build_router",
    "load_offline_engine",
    "render_ansi",
    "render_brackets",
    "render_html",
    "source_spans",
    "spans_from_chunks",
]

__version__ = "0.1.0"


if TYPE_CHECKING:
    from .offline import load_offline_engine as load_offline_engine


def __getattr__(name: str) -> object:
    # Imported on first use: ``python -m baco_integrations.offline`` runs that module as
    # __main__, and it must not already be in sys.modules through the package.
    if name == "load_offline_engine":
        from .offline import load_offline_engine

        return load_offline_engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
