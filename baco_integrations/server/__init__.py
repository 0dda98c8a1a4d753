"""Serve a BACO engine over HTTP with OpenAI's protocol (``baco serve``; docs/serving.md).

``create_app(engine, ServerConfig(...))`` builds the FastAPI app; :func:`serve` runs it with
uvicorn. Needs the ``server`` extra: ``pip install 'baco-integrations[server]'``.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import prometheus_client  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the BACO server needs the 'server' extra ({exc.name} is missing): "
        "pip install 'baco-integrations[server]'"
    ) from exc

from .app import create_app
from .config import API_KEY_ENV, ServerConfig
from .run import serve, uvicorn_config

__all__ = ["API_KEY_ENV", "ServerConfig", "create_app", "serve", "uvicorn_config"]
