"""Running the app with uvicorn, and ``baco serve``: load a pair, then serve it.

With no ``--base``/``--aligned``, ``baco serve`` serves the offline real pair (Gemma-3-270m
base, SmolLM2-135M-Instruct aligned) through :func:`~baco_integrations.load_offline_engine`,
installing it first if it is not in the cache, like ``examples/quickstart.py``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI

from ..engine import BacoEngine
from ..limits import EngineLimits
from .app import create_app
from .config import API_KEY_ENV, ServerConfig

#: The model name ``baco serve`` gives the offline pair.
OFFLINE_MODEL_NAME = "baco:gemma-3-270m+smollm2-135m-instruct"


def uvicorn_config(app: FastAPI, config: ServerConfig, **overrides: Any) -> uvicorn.Config:
    """uvicorn's settings for ``app``: the address, and a graceful shutdown that lets live
    requests finish for ``config.shutdown_timeout_s`` before it cancels them."""
    options: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "timeout_graceful_shutdown": config.shutdown_timeout_s,
        "server_header": False,
        "proxy_headers": False,
        **overrides,
    }
    return uvicorn.Config(app, **options)


def serve(engine: BacoEngine, config: ServerConfig) -> None:
    """Serve ``engine`` until interrupted (SIGINT/SIGTERM stop it gracefully)."""
    server = uvicorn.Server(uvicorn_config(create_app(engine, config), config))
    try:
        server.run()
    finally:
        engine.shutdown()  # whatever a forced exit left running


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The server's settings from ``baco serve``'s options (validated before any model loads)."""
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    values = {
        "host": args.host,
        "port": args.port,
        "api_key": api_key or None,
        "model_name": args.model_name,
        "max_body_bytes": args.max_body_bytes,
        "max_prompt_tokens": args.max_prompt_tokens,
        "max_tokens": args.max_tokens,
        "default_max_tokens": args.default_max_tokens,
        "max_n": args.max_n,
        "cors_origins": tuple(args.cors_origin or ()),
        "shutdown_timeout_s": args.shutdown_timeout,
    }
    return ServerConfig.model_validate({k: v for k, v in values.items() if v is not None})


#: ``baco serve`` options that only a pair loaded here takes (not one over endpoints).
_LOCAL_OPTIONS = ("base", "aligned", "base_gguf_file", "aligned_gguf_file")
#: ``baco serve`` options that only a pair over endpoints takes.
_REMOTE_OPTIONS = ("base_tokenizer", "aligned_tokenizer", "base_api_key", "aligned_api_key")


def engine_from_args(args: argparse.Namespace) -> tuple[BacoEngine, str]:
    """The engine ``baco serve`` serves and its default model name."""
    limits = EngineLimits.model_validate(
        {
            name: value
            for name in ("max_live_rows", "max_waiting")
            if (value := getattr(args, name)) is not None
        }
    )
    if getattr(args, "base_url", None) is not None:
        return _engine_over_endpoints(args, limits)
    if args.base is None:
        from ..offline import load_offline_engine

        print("baco: preparing the offline pair (installed once, then cached) ...", file=sys.stderr)
        engine = load_offline_engine(device=args.device, dtype=args.dtype, limits=limits)
        return engine, OFFLINE_MODEL_NAME
    engine = BacoEngine.from_pretrained(
        args.base,
        args.aligned,
        device=args.device,
        dtype=args.dtype,
        base_gguf_file=args.base_gguf_file,
        aligned_gguf_file=args.aligned_gguf_file,
        limits=limits,
    )
    return engine, f"baco:{args.base}+{args.aligned}"


def _engine_over_endpoints(
    args: argparse.Namespace, limits: EngineLimits
) -> tuple[BacoEngine, str]:
    """``baco serve --base-url URL --aligned-url URL``: BACO in front of two engines."""
    from ..runners.remote import Endpoint

    endpoints = [
        Endpoint(
            url=url,
            api_key=key or os.environ.get(f"BACO_{side.upper()}_API_KEY") or None,
        )
        for side, url, key in (
            ("base", args.base_url, args.base_api_key),
            ("aligned", args.aligned_url, args.aligned_api_key),
        )
    ]
    print(f"baco: connecting to {args.base_url} and {args.aligned_url} ...", file=sys.stderr)
    engine = BacoEngine.from_endpoints(
        endpoints[0],
        endpoints[1],
        base_tokenizer=args.base_tokenizer,
        aligned_tokenizer=args.aligned_tokenizer,
        limits=limits,
    )
    names = [member.runner.facts.name for member in engine.pair.members]
    return engine, f"baco:{names[0]}+{names[1]}"


def _check_pair_options(args: argparse.Namespace) -> None:
    """A pair is loaded here (``--base``/``--aligned`` or the offline pair) or reached over
    HTTP (``--base-url``/``--aligned-url`` with both tokenizers); not a mix."""
    remote = [getattr(args, name, None) for name in ("base_url", "aligned_url")]
    if any(value is not None for value in remote):
        needed = ("base_url", "aligned_url", "base_tokenizer", "aligned_tokenizer")
        if missing := [f"--{n.replace('_', '-')}" for n in needed if getattr(args, n) is None]:
            raise ValueError(f"serving over endpoints needs {', '.join(missing)} too")
        if mixed := [f"--{n.replace('_', '-')}" for n in _LOCAL_OPTIONS if getattr(args, n)]:
            raise ValueError(f"{', '.join(mixed)} load a pair here; not with --base-url")
        return
    if given := [f"--{n.replace('_', '-')}" for n in _REMOTE_OPTIONS if getattr(args, n, None)]:
        raise ValueError(f"{', '.join(given)} need --base-url and --aligned-url")
    if (args.base is None) != (args.aligned is None):
        raise ValueError("give both --base and --aligned, or neither (the offline pair)")
    if args.base is None and (args.base_gguf_file or args.aligned_gguf_file):
        raise ValueError("--base-gguf-file and --aligned-gguf-file need --base and --aligned")


def serve_command(args: argparse.Namespace) -> int:
    """``baco serve``: check the options, load the pair, serve until interrupted."""
    _check_pair_options(args)
    config = config_from_args(args)
    if config.api_key is None and not _is_loopback(config.host):
        print(
            f"baco: warning: serving on {config.host} without an API key; anyone who can reach "
            f"it may use it (set {API_KEY_ENV} or --api-key)",
            file=sys.stderr,
        )
    engine, name = engine_from_args(args)
    if config.model_name is None:
        config = config.updated(model_name=name)
    print(
        f"baco: serving {config.model_name!r} at http://{config.host}:{config.port}/v1",
        file=sys.stderr,
    )
    serve(engine, config)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
