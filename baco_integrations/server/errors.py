"""Errors as OpenAI clients read them: ``{"error": {"message", "type", "param", "code"}}``.

A bad request is a 400 that names the field (``param``), never a 500: clients retry a 5xx,
and a retried bad setting fails again. FastAPI's 422 for a malformed body becomes such a
400 too. A full engine queue is a 503 with ``Retry-After``, which clients do retry.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..config import SETTING_NAMES
from ..decoding.scheduler import EngineOverloaded

logger = logging.getLogger("baco_integrations.server")

INVALID_REQUEST = "invalid_request_error"


class APIError(Exception):
    """An error response: status, OpenAI error fields and extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(
    message: str, *, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def overloaded(error: EngineOverloaded, retry_after_s: int) -> APIError:
    return APIError(
        503,
        f"the engine is busy: {error}",
        type="server_error",
        code="engine_overloaded",
        headers={"Retry-After": str(retry_after_s)},
    )


# ------------------------------------------------------------------------- naming the field

_LEADING_NAME = re.compile(r"^(?:Value error, )?([A-Za-z_]+)")


def param_of(message: str, prompt_param: str, wire: Mapping[str, str]) -> str | None:
    """The request field an engine or settings error message is about, when it names one.

    Engine messages start with the setting (``"n=300 is out of range"``, ``"stop: ..."``) or
    with ``prompts`` / ``prompt``; ``wire`` maps setting names to the names the client used
    (``max_new_tokens`` -> ``max_tokens``).
    """
    if re.match(r"^\d+ rows", message):  # the scheduler's cap on rows: prompts x n
        return wire.get("n", "n")
    found = _LEADING_NAME.match(message)
    if found is None:
        return None
    name = found.group(1)
    if name.startswith("prompt"):
        return prompt_param
    return wire.get(name, name) if name in SETTING_NAMES else None


def loc_name(loc: Sequence[int | str]) -> str | None:
    """``("body", "messages", 0, "content")`` as ``messages[0].content``."""
    parts = [part for part in loc if part != "body"]
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or None


def from_validation(
    errors: Sequence[Mapping[str, Any]], wire: Mapping[str, str], prompt_param: str
) -> APIError:
    """A 400 for the first error of a pydantic validation (of a request or of settings)."""
    first = errors[0]
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    kind = str(first.get("type", ""))
    loc = [wire.get(str(p), p) if i == 0 else p for i, p in enumerate(first.get("loc", ()))]
    param = loc_name(loc) or param_of(message, prompt_param, wire)
    if kind == "json_invalid":
        return bad_request(f"the request body is not valid JSON: {message}", None, "invalid_json")
    if kind == "extra_forbidden":
        return bad_request(f"unknown field {param!r}", param, "unknown_field")
    if kind == "missing":
        return bad_request(f"missing required field {param!r}", param, "missing_field")
    where = f"invalid value for {param!r}: " if param else ""
    return bad_request(where + message, param)


# ------------------------------------------------------------------------- handlers


def install_handlers(app: FastAPI, retry_after_s: int) -> None:
    """Every error the app can raise, answered in OpenAI's error format."""

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return exc.response()

    async def invalid_body(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return from_validation(list(exc.errors()), {}, "messages").response()

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        error = APIError(exc.status_code, str(exc.detail), code=code, headers=exc.headers)
        return error.response()

    async def busy(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EngineOverloaded)
        return overloaded(exc, retry_after_s).response()

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("error while serving %s %s", request.method, request.url.path)
        body = error_body("internal server error", type="server_error", code="internal_error")
        return JSONResponse(body, status_code=500)

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_body)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(EngineOverloaded, busy)
    app.add_exception_handler(Exception, internal)
