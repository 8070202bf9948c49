"""Limits on what a request body may cost, checked at the edge before anything parses it.

Python's JSON parser recurses once per nested array or object, so a body nested 100,000
levels deep exhausts the stack (a RecursionError, a 500) and a large one costs CPU and
memory in every layer after it. `RequestLimits` (pure ASGI, for every HTTP route) reads
the body up to `request_max_bytes` (413 `body_too_large` past it, at once when
`Content-Length` says so), then refuses a body nested deeper than
`request_max_json_depth` (400 `json_too_deep`) or not UTF-8 (400 `body_not_utf8`), in
the route's error shape (OpenAI's under /v1). The WebSocket's frames go through
`body_problem` too.

The depth is measured on the raw bytes without parsing: strings are cut out (a bracket
inside a string is text), braces count as brackets, and each pass of `replace(b"[]",
b"")` removes the innermost level, so valid JSON nested d deep is empty after d passes,
each a C-speed scan of a buffer that only shrinks.
"""

from __future__ import annotations

import re

from platform_api.errors import ApiError, error_response

# A JSON string, or one that never closes (to the end: else each quote in it would start
# another scan to the end). Possessive: no backtracking.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")


def nesting_exceeds(body: bytes, limit: int) -> bool:
    """Whether the JSON text `body` nests arrays and objects deeper than `limit`.

    Exact for valid JSON; for invalid JSON an upper bound of how deep a parser gets before
    it fails (`json.loads` reads one value and stops at its first error, and up to there
    strings and brackets are what this sees), so whatever it lets through parses within
    `limit` levels."""
    brackets = _STRING.sub(b"", body).translate(_AS_BRACKETS, _NOT_BRACKETS)
    if b"[" * (limit + 1) in brackets:
        return True  # the usual attack, found by one scan
    passes = 0
    while b"[]" in brackets:
        if passes == limit:
            return True
        brackets = brackets.replace(b"[]", b"")
        passes += 1
    # Left: closers, then brackets that never close; each could have been one level more.
    return passes + brackets.count(b"[") > limit


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "body_too_large",
        f"the request body is larger than {limit:,} bytes, the most this API reads: send less",
    )


MULTIPART_FRAMING = 64 * 1024  # boundaries and part headers around an uploaded file


def upload_too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "file_too_large",
        f"the file is larger than {limit:,} bytes, the most an upload may be: upload a "
        "smaller file or split it",
    )


def body_problem(body: bytes, max_depth: int) -> ApiError | None:
    """Why `body` (within the size limit) must not be parsed as JSON, or None."""
    if b"\x00" in body:  # UTF-16/32 JSON has NUL bytes; UTF-8 JSON never does
        return ApiError(400, "body_not_utf8", "the body must be JSON encoded as UTF-8 (RFC 8259)")
    if nesting_exceeds(body, max_depth):
        return ApiError(
            400,
            "json_too_deep",
            f"the JSON body nests arrays and objects more than {max_depth} levels deep, "
            "the most this API accepts: flatten it",
        )
    return None


class RequestLimits:
    """Pure ASGI: reads each HTTP request's body (at most `max_bytes`), checks it with
    `body_problem`, and hands the app the same body. WebSocket and lifespan pass by.

    A multipart request to a path `uploads` matches (a file upload) may be as large as
    `upload_max_bytes` plus room for the multipart framing, and is not JSON: it skips
    the JSON checks, and the route checks the file itself."""

    def __init__(
        self,
        app,
        max_bytes: int,
        max_depth: int,
        uploads: re.Pattern[str] | None = None,
        upload_max_bytes: int = 0,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.uploads = uploads
        self.upload_max_bytes = upload_max_bytes

    def _is_upload(self, scope) -> bool:
        if self.uploads is None or not self.uploads.match(scope["path"]):
            return False
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        return content_type.startswith(b"multipart/form-data")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = self._is_upload(scope)
        limit = self.upload_max_bytes + MULTIPART_FRAMING if upload else self.max_bytes
        refusal = upload_too_large(self.upload_max_bytes) if upload else too_large(limit)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await error_response(scope["path"], refusal)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: the app hears it
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await error_response(scope["path"], refusal)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = body_problem(body, self.max_depth) if body and not upload else None
        if problem is not None:
            await error_response(scope["path"], problem)(scope, receive, send)
            return
        request = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([request], receive), send)


def _content_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before we see it
    return None


def _replay(messages: list[dict], receive):
    """A `receive` that answers `messages` first, then the server's own (a disconnect)."""
    pending = list(messages)

    async def replayed() -> dict:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
