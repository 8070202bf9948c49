"""Every error the API returns is JSON: `{"detail": "<what went wrong and what to do>",
"code": "<stable machine-readable name>"}`, plus `errors` (one per field) for a request
that failed validation. Nothing answers with a traceback; an unexpected exception is
logged and answered with a 500 that says only that.

An error is never much larger than the request that caused it: a validation error lists
the first `MAX_REPORTED_ERRORS` fields and counts the rest (`errors_not_shown`), a field
name or value quoted back is cut to `ECHO_MAX` characters (`clip`), a field's message to
`FIELD_MESSAGE_MAX`, and any message to `MESSAGE_MAX`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("platform_api")


class ApiError(Exception):
    """An error meant for the client: its status, a stable code and a message that says
    what to do."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        param: str | None = None,  # the request field at fault (OpenAI-shaped errors)
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        self.param = param


def not_found(what: str) -> ApiError:
    """The same answer whether the thing does not exist or belongs to someone else."""
    return ApiError(404, "not_found", f"{what} not found")


def unauthorized(detail: str, code: str = "not_authenticated") -> ApiError:
    return ApiError(401, code, detail, headers={"WWW-Authenticate": "Bearer"})


_STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
}


MAX_REPORTED_ERRORS = 20
ECHO_MAX = 80  # characters of a client's field name or value quoted in a message
FIELD_MESSAGE_MAX = 240
MESSAGE_MAX = 2_000


def clip(text: str, limit: int = ECHO_MAX) -> str:
    """`text`, cut to `limit` characters (the cut marked with an ellipsis)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return clip(".".join(parts) or "body")


def _explain(error: dict) -> str:
    field, kind, message = _field(error["loc"]), error["type"], error["msg"]
    if kind == "extra_forbidden":
        return f"unknown field {field!r}: this endpoint does not accept it, remove it"
    if kind == "missing":
        return f"field {field!r} is required"
    if kind == "json_invalid":
        return f"the body is not valid JSON ({error.get('ctx', {}).get('error', message)})"
    if kind in ("model_attributes_type", "dict_type") and field == "body":
        return "the body must be a JSON object"
    if kind in ("model_type", "model_attributes_type"):  # the latter: a tagged union's
        return f"{field}: must be a JSON object"
    return f"{field}: {message}"


def invalid_request_body(errors: list[dict]) -> dict:
    """The 422 body for pydantic's validation errors: what is wrong, field by field (the
    first MAX_REPORTED_ERRORS of them, and how many more there are)."""
    shown = errors[:MAX_REPORTED_ERRORS]
    fields = [
        {"field": _field(e["loc"]), "message": clip(_explain(e), FIELD_MESSAGE_MAX)} for e in shown
    ]
    detail = "; ".join(e["message"] for e in fields)
    body = {"detail": detail, "code": "invalid_request", "errors": fields}
    if len(errors) > len(shown):
        body["errors_not_shown"] = len(errors) - len(shown)
        body["detail"] += f"; and {len(errors) - len(shown)} more (fix these first)"
    return body


# The OpenAI gateway (/v1/...) answers errors in OpenAI's shape, so SDKs raise their own
# exception classes: {"error": {"message", "type", "param", "code"}}.
OPENAI_PREFIX = "/v1/"
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def _openai(request: Request) -> bool:
    return request.url.path.startswith(OPENAI_PREFIX)


def _openai_error(
    status: int, message: str, code: str, param: str | None = None, headers=None
) -> JSONResponse:
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    message = clip(message, MESSAGE_MAX)
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def error_response(path: str, error: ApiError) -> JSONResponse:
    """`error` in the shape of the route at `path`: OpenAI's under /v1, ours elsewhere."""
    if path.startswith(OPENAI_PREFIX):
        return _openai_error(error.status, error.detail, error.code, error.param, error.headers)
    return JSONResponse(
        {"detail": clip(error.detail, MESSAGE_MAX), "code": error.code},
        status_code=error.status,
        headers=error.headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = invalid_request_body(exc.errors())
        if _openai(request):
            field = body["errors"][0]["field"]
            return _openai_error(400, body["detail"], "invalid_request_error", field)
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        detail = clip(exc.detail if isinstance(exc.detail, str) else str(exc.detail), MESSAGE_MAX)
        if _openai(request):
            headers = getattr(exc, "headers", None)
            return _openai_error(exc.status_code, detail, code, headers=headers)
        return JSONResponse(
            {"detail": detail, "code": code},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        if _openai(request):
            return _openai_error(
                500, "internal error: it has been logged; try again", "internal_error"
            )
        return JSONResponse(
            {"detail": "internal error: it has been logged; try again", "code": "internal_error"},
            status_code=500,
        )
