"""The FastAPI app: OpenAI's endpoints over one engine's continuous-batching scheduler.

No decoding happens here: each request becomes prompts plus
:class:`~baco_integrations.GenerationSettings` (:mod:`.protocol`), runs as one
``engine.agenerate`` or ``engine.astream`` call that joins the engine's running batch, and its
outputs go back in the wire format (:mod:`.responses`, :mod:`.streaming`). A client that
disconnects cancels its call, which leaves the batch at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from .._adapter import PROVIDER, display_name
from ..decoding.scheduler import EngineOverloaded
from ..engine import BacoEngine
from ..outputs import Usage
from .config import ServerConfig
from .errors import APIError, bad_request, install_handlers, overloaded, param_of
from .metrics import Metrics, MetricsMiddleware
from .middleware import Guard
from .playground import router as playground
from .protocol import Call, ChatCompletionRequest, CompletionRequest, chat_call, completion_call
from .responses import Reply, response
from .streaming import StreamContext, events, merged

T = TypeVar("T")

#: Status of a response nobody reads: the client closed the connection first (nginx's 499).
CLIENT_CLOSED = 499


class Service:
    """One engine served under one model name, with the server's caps and metrics."""

    def __init__(self, engine: BacoEngine, config: ServerConfig) -> None:
        self.engine = engine
        self.config = config
        self.model = config.model_name or display_name(engine.model_names)
        self.metrics = Metrics(engine)
        self.created = int(time.time())

    def model_card(self) -> dict[str, Any]:
        return {
            "id": self.model,
            "object": "model",
            "created": self.created,
            "owned_by": PROVIDER,
            "baco": dict(self.engine.model_names),
        }

    def check_model(self, name: str) -> None:
        if name != self.model:
            raise APIError(
                404,
                f"the model {name!r} does not exist; this server serves {self.model!r}",
                param="model",
                code="model_not_found",
            )

    def check_call(self, call: Call) -> None:
        """Refuse what the engine would refuse only once the call is queued or running."""
        load = self.engine.load()
        rows = len(call.prompts) * call.settings.n
        if rows > load.max_live_rows:
            raise bad_request(
                f"{rows} rows (prompts x n) is more than the engine decodes at once "
                f"({load.max_live_rows}; EngineLimits.max_live_rows); lower n",
                "n",
            )
        # A stream is submitted once its response has started; checked here, a full queue is
        # a 503 rather than an error event (a race past this check still gets the event).
        if load.waiting + len(call.prompts) > load.max_waiting:
            raise overloaded_now(self, load.waiting)
        # EngineLimits caps characters, not tokens: the server counts them (the engine keeps
        # the ids and does not tokenize the prompt again when it prepares the call).
        for prompt in call.prompts:
            try:
                ids = self.engine.encode_prompts(
                    prompt, call.settings.system_prompt, call.settings.base_template
                )
            except ValueError as exc:
                raise engine_error(exc, call) from None
            tokens = max(len(ids["base"]), len(ids["aligned"]))
            if tokens > self.config.max_prompt_tokens:
                raise bad_request(
                    f"the prompt is {tokens} tokens long, more than this server allows "
                    f"({self.config.max_prompt_tokens}; ServerConfig.max_prompt_tokens)",
                    call.prompt_param,
                    "context_length_exceeded",
                )


def overloaded_now(service: Service, waiting: int) -> APIError:
    busy = EngineOverloaded(
        f"{waiting} requests are already waiting for this engine (EngineLimits.max_waiting="
        f"{service.engine.load().max_waiting}); retry later"
    )
    return overloaded(busy, service.config.retry_after_s)


def engine_error(exc: ValueError, call: Call) -> APIError:
    """An engine's refusal (a ValueError naming a setting or the prompt) as a 400."""
    message = str(exc)
    code = "context_length_exceeded" if "context window" in message else "invalid_value"
    return bad_request(message, param_of(message, call.prompt_param, call.wire), code)


# ------------------------------------------------------------------------- the app


def create_app(engine: BacoEngine, config: ServerConfig | None = None) -> FastAPI:
    """An app serving ``engine`` under OpenAI's protocol (see docs/serving.md)."""
    config = config or ServerConfig()
    service = Service(engine, config)
    app = FastAPI(
        title="BACO", version=__version__, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.service = service
    install_handlers(app, config.retry_after_s)
    # Added innermost first: metrics see every response, CORS answers preflights before the
    # key is checked (a preflight carries no credentials).
    api_key = config.api_key.get_secret_value() if config.api_key else None
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=config.max_body_bytes)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    _add_routes(app, service)
    app.include_router(playground)  # the page at / (docs/playground.md)
    return app


def _add_routes(app: FastAPI, service: Service) -> None:
    @app.get("/health")
    async def health() -> dict[str, Any]:
        load = service.engine.load()
        return {
            "status": "ok",
            "model": service.model,
            "live_rows": load.live_rows,
            "waiting": load.waiting,
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [service.model_card()]}

    @app.get("/v1/models/{model:path}")
    async def model(model: str) -> dict[str, Any]:
        service.check_model(model)
        return service.model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        started = time.perf_counter()
        service.check_model(body.model)
        call = chat_call(body, service.config)
        return await _complete(service, call, Reply.new(service.model, chat=True), request, started)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        started = time.perf_counter()
        service.check_model(body.model)
        call = completion_call(body, service.config)
        reply = Reply.new(service.model, chat=False)
        return await _complete(service, call, reply, request, started)


async def _complete(
    service: Service, call: Call, reply: Reply, request: Request, started: float
) -> Response:
    service.check_call(call)
    engine = service.engine
    if call.stream:
        try:  # the settings and prompts are validated here, before the response starts
            streams = [engine.astream(p, settings=call.settings) for p in call.prompts]
        except ValueError as exc:
            raise engine_error(exc, call) from None
        context = StreamContext(
            reply=reply,
            n=call.settings.n,
            prompts=len(call.prompts),
            include_usage=call.include_usage,
            tokenizer=engine.aligned_tokenizer,
            metrics=service.metrics,
            retry_after_s=service.config.retry_after_s,
            started=started,
            tools=call.tools,
        )
        return StreamingResponse(
            events(context, merged(streams)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        results = await _unless_disconnected(
            request, engine.agenerate(call.prompts, settings=call.settings)
        )
    except ValueError as exc:
        raise engine_error(exc, call) from None
    n = call.settings.n
    outputs = [(i * n + j, out) for i, row in enumerate(results) for j, out in enumerate(row)]
    usage = Usage.of(out for _, out in outputs)
    service.metrics.finished((out for _, out in outputs), usage.prompt_tokens)
    return JSONResponse(response(reply, outputs, usage, engine.aligned_tokenizer, call.tools))


async def _unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first (its rows leave the
    batch); then the answer is a 499 nobody reads."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():  # the client left, or this handler is cancelled (shutdown)
            task.cancel()
    await asyncio.wait({task})  # a cancelled call ends once the engine has let it go
    if task.cancelled():
        raise APIError(CLIENT_CLOSED, "the client closed the request", code="client_closed")
    return task.result()


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body is already read: receive() waits)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
