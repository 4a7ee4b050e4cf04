"""OpenAI-shaped errors: every failure answers `{"error": {"message", "type", "param", "code"}}`
with the HTTP status OpenAI uses (400 bad request, 401 bad key, 404 unknown model or id, 413 too
large), so clients raise their usual exception types. Nothing reaches the client as a traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
         422: "invalid_request_error", 500: "server_error", 503: "server_error"}


class APIError(Exception):
    def __init__(self, message: str, status: int = 400, *, param: str | None = None,
                 code: str | None = None, type: str | None = None):
        super().__init__(message)
        self.message, self.status, self.param, self.code = message, status, param, code
        self.type = type or TYPES.get(status, "invalid_request_error")


def error_body(message: str, status: int, param: str | None = None, code: str | None = None,
               type: str | None = None) -> dict:
    return {"error": {"message": message, "type": type or TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(exc: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(error_body(exc.message, exc.status, exc.param, exc.code, exc.type),
                        status_code=exc.status, headers=headers)


def _loc(loc: tuple) -> str:
    """('body', 'messages', 2, 'role') -> 'messages[2].role'."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "tagged-union", "literal[", "str", "list[", "dict[")):
            out += f".{part}" if out else str(part)
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        param = _loc(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            return error_response(APIError(f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}".strip(),
                                           code="invalid_json"))
        msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        return error_response(APIError(f"{param or 'body'}: {msg}{more}", param=param or None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path} (see /docs for the API)"
        return error_response(APIError(message, exc.status_code))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(APIError(f"internal error: {type(exc).__name__}: {exc}", 500))
