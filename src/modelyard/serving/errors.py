"""Every error the server answers is `{"error": "..."}` with a 4xx saying what was wrong, or a 5xx that is the
server's fault (logged with its traceback). Bodies are written with ASCII escapes, so a message that quotes a
client's string (a lone surrogate included) can always be sent."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from modelyard.errors import ModelyardError
from modelyard.serving.protocol import BadRequest, ErrorResponse

log = logging.getLogger("modelyard.serving")


# The error answers every route documents in the OpenAPI document.
ERRORS = {400: {"model": ErrorResponse, "description": "The request is malformed or does not fit the model."},
          401: {"model": ErrorResponse, "description": "Missing or invalid API key."},
          404: {"model": ErrorResponse, "description": "No such model or version on this server."},
          413: {"model": ErrorResponse, "description": "Body or item count over this server's limit."},
          422: {"model": ErrorResponse, "description": "The body does not match the schema."},
          429: {"model": ErrorResponse, "description": "Over the key's rate or monthly quota; retry after the "
                                                       "Retry-After header's seconds."}}


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=True).encode()


class AsciiJSONResponse(JSONResponse):
    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def error_response(status: int, message: str, headers: dict | None = None) -> AsciiJSONResponse:
    return AsciiJSONResponse({"error": message}, status_code=status, headers=headers)


async def send_error(send, status: int, message: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Answer from ASGI middleware, before any route runs."""
    payload = error_body(message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": payload})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, str(exc), headers)

    @app.exception_handler(ModelyardError)
    async def user_error(request: Request, exc: ModelyardError):  # e.g. a table row missing a column
        return error_response(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        hint = ("" if "json" in request.headers.get("content-type", "")
                else " (send the body as JSON with Content-Type: application/json)")
        return error_response(422, f"the body does not match the schema: {problems}{hint}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # unknown routes, wrong methods, unreadable bodies
        message = {404: f"no route {request.method} {request.url.path}; see /docs for this server's routes",
                   405: f"{request.method} is not allowed on {request.url.path}; see /docs"}.get(exc.status_code,
                                                                                             str(exc.detail))
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):  # the server's fault: logged by uvicorn, with traceback
        return error_response(500, f"internal server error ({exc.__class__.__name__}); the server log has the "
                                   "details")
