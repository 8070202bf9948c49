"""Request ids, structured JSON logs, Prometheus metrics and CORS for the platform API.

- Every response carries `X-Request-ID`: the caller's own (letters, digits, `-_.:`, up
  to 64) or a new one. Log lines written while a request is handled carry it too.
- Logs of the `platform_api` loggers are one JSON object per line (time, level, logger,
  message, request_id, and the exception when there is one), on stderr, which `orchard up`
  keeps in `<home>/logs/api.log`.
- The last `RECENT_ERRORS_MAX` ERROR records of those loggers are also kept in memory
  (`recent_errors`, for `GET /api/v1/admin/errors`): time, logger, message, request id,
  method and route, and the exception's type only (no traceback, no exception text,
  which can hold a connection string). Per process: each API worker keeps its own.
- `GET /metrics` (Prometheus text format): requests by method, route template and status,
  their latency, requests in flight; and the business metrics read from the database at
  scrape time (platform_api/business_metrics.py). Each app has its own registry, so several apps in
  one process (tests) do not collide.
- CORS: `ORCHARD_CORS_ORIGINS` lists the browser origins allowed to call the API (none by
  default: the UI is served by the API itself, same origin).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from orchard.settings import Settings
from platform_api.business_metrics import BusinessCollector

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# The ASGI scope of the request being handled: its method, path and, once routed, route.
request_scope: ContextVar[dict | None] = ContextVar("request_scope", default=None)
RECENT_ERRORS_MAX = 200
RECENT_MESSAGE_MAX = 2_000


class JsonFormatter(logging.Formatter):
    converter = time.gmtime  # the `Z` in the timestamps

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id.get(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


@dataclass(frozen=True)
class ErrorRecord:
    time: datetime
    logger: str
    message: str
    request_id: str | None
    method: str | None
    path: str | None
    exception: str | None


def _type_name(kind: type) -> str:
    name = kind.__qualname__
    return name if kind.__module__ == "builtins" else f"{kind.__module__}.{name}"


class RecentErrors(logging.Handler):
    """A bounded ring buffer of ERROR (and CRITICAL) records, newest kept."""

    def __init__(self, capacity: int = RECENT_ERRORS_MAX) -> None:
        super().__init__(level=logging.ERROR)
        self._records: deque[ErrorRecord] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            scope = request_scope.get()
            route = getattr(scope.get("route"), "path", None) if scope else None
            kind = record.exc_info[0] if record.exc_info else None
            entry = ErrorRecord(
                time=datetime.fromtimestamp(record.created, UTC),
                logger=record.name,
                message=record.getMessage()[:RECENT_MESSAGE_MAX],
                request_id=request_id.get(),
                method=scope.get("method") if scope else None,
                path=(route or scope.get("path")) if scope else None,
                exception=_type_name(kind) if kind else None,
            )
        except Exception:
            self.handleError(record)
            return
        self._records.append(entry)  # under the handler's lock (Handler.handle takes it)

    def newest(self, limit: int) -> list[ErrorRecord]:
        with self.lock:
            records = list(self._records)
        return records[::-1][:limit]


recent_errors = RecentErrors()


def configure_logging() -> None:
    """JSON lines for the platform's own loggers, and the recent errors; once per process."""
    logger = logging.getLogger("platform_api")
    if recent_errors not in logger.handlers:
        logger.addHandler(recent_errors)
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "orchard_api_requests",
            "Platform API requests by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "orchard_api_request_seconds",
            "Platform API time to the response headers (first byte of a stream).",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.in_flight = Gauge(
            "orchard_api_requests_in_flight", "Requests being handled.", registry=self.registry
        )


class ObserveMiddleware:
    """Pure ASGI (streams and client disconnects pass through untouched): sets the request
    id, adds `X-Request-ID` to the response, and counts the request by route template
    (bounded labels, never the raw path)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), ""
        )
        rid = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        started = time.perf_counter()
        status = 500

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        # Not reset afterwards: each request runs in a task (and context) of its own, and
        # the 500 handler, which runs outside this middleware, logs with the id too.
        request_id.set(rid)
        request_scope.set(scope)
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


def install(app: FastAPI, settings: Settings) -> None:
    configure_logging()
    metrics = Metrics()
    metrics.registry.register(BusinessCollector(lambda: getattr(app.state, "engine", None)))
    app.state.metrics = metrics
    app.add_middleware(ObserveMiddleware, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After", "X-Orchard-Model-Version"],
            max_age=600,
        )
