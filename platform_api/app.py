"""The platform API application (FastAPI). Started by `orchard up` with uvicorn.

Start-up (the lifespan) migrates the database to the newest schema, reads or generates
the platform's secrets under `<home>/secrets`, opens the engine and the client to
serving, and makes the `Starter` default plan when there is no plan at all. Every
product endpoint is under /api/v1; /healthz is the liveness probe.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlmodel import Session

import orchard
from orchard.settings import Settings, load_settings
from platform_api import observability, reembedding
from platform_api.ab_loop import GuardrailTask
from platform_api.config import PlatformOptions
from platform_api.db import database_url, make_engine, make_loop_engine, migrate
from platform_api.errors import install_error_handlers
from platform_api.knowledge import Knowledge
from platform_api.memory import after_turn
from platform_api.metering import Pricing
from platform_api.oauth import install as install_oauth
from platform_api.plans import ensure_starter_plan
from platform_api.ratelimit import RateLimiter, limit_request_ip
from platform_api.request_limits import RequestLimits
from platform_api.routes import (
    admin,
    admin_access,
    admin_analytics,
    admin_errors,
    admin_health,
    admin_jobs,
    admin_knowledge,
    admin_models,
    admin_monitoring,
    auth,
    chat_knowledge,
    chat_socket,
    chats,
    credits,
    folders,
    gateway,
    knowledge,
    memory,
    messages,
    oauth,
    plans,
    privacy,
    shared_knowledge,
    shares,
    usage,
    users,
)
from platform_api.security import Keys, Passwords
from platform_api.serving import Serving
from platform_api.turns import TurnRunner
from platform_api.webui import mount_webui

API_PREFIX = "/api/v1"
# Multipart uploads, read up to the upload limit instead of the JSON body limit.
UPLOAD_PATHS = re.compile(rf"^{API_PREFIX}/(?:knowledge|chats)/[^/]+/files$")


class Health(BaseModel):
    status: str
    version: str


def _seed(engine, settings: Settings) -> None:
    with Session(engine) as session:
        ensure_starter_plan(session, settings.starter_plan_credits)


def create_app(settings: Settings | None = None, options: PlatformOptions | None = None) -> FastAPI:
    settings = settings or load_settings()
    options = options or PlatformOptions()
    url = database_url(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(migrate, url)
        await run_in_threadpool(app.state.rate_limiter.check_storage)
        app.state.keys = Keys.load(settings)
        app.state.passwords = await run_in_threadpool(Passwords, options)
        app.state.engine = make_engine(url)
        # The gateway's admission on the event loop: SQLite with in-process rate counters.
        in_process = app.state.rate_limiter.in_memory
        app.state.loop_engine = make_loop_engine(url) if in_process else None
        await run_in_threadpool(_seed, app.state.engine, settings)
        app.state.serving = Serving(settings.serving_base_url)
        app.state.knowledge = Knowledge(settings, app.state.engine)
        app.state.turns = TurnRunner(
            app.state.engine,
            app.state.serving,
            app.state.knowledge,
            after_turn=after_turn(settings, app.state.engine),
        )
        # Stale bases first: files queued again below are ingested after their base is
        # re-embedded (one ingestion thread runs both).
        await run_in_threadpool(reembedding.start_if_stale, app.state.knowledge)
        await run_in_threadpool(app.state.knowledge.resume)
        app.state.guardrail = GuardrailTask(app.state.engine, settings)
        app.state.guardrail.start()
        try:
            yield
        finally:
            await app.state.guardrail.aclose()
            await run_in_threadpool(app.state.knowledge.close)
            await app.state.turns.aclose()
            await app.state.serving.aclose()
            app.state.engine.dispose()
            if app.state.loop_engine is not None:
                app.state.loop_engine.dispose()

    app = FastAPI(title="Orchard platform API", version=orchard.__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.pricing = Pricing.from_settings(settings)  # read once, used by every request
    app.state.rate_limiter = RateLimiter.from_settings(settings)
    install_error_handlers(app)
    # Before anything parses a body (inside the metrics, which count its refusals).
    app.add_middleware(
        RequestLimits,
        max_bytes=settings.request_max_bytes,
        max_depth=settings.request_max_json_depth,
        uploads=UPLOAD_PATHS,
        upload_max_bytes=settings.knowledge_max_file_bytes,
    )
    observability.install(app, settings)
    install_oauth(app, settings)  # sign-in providers, and their state cookie's middleware

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> Health:
        return Health(status="ok", version=orchard.__version__)

    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(limit_request_ip)])
    for module in (
        auth,
        oauth,
        users,
        privacy,
        admin,
        admin_models,
        admin_access,
        admin_analytics,
        admin_jobs,
        admin_health,
        admin_errors,
        admin_monitoring,
        plans,
        credits,
        usage,
        folders,
        chats,
        messages,
        chat_socket,
        shares,
        knowledge,
        shared_knowledge,
        memory,
        chat_knowledge,
        admin_knowledge,
    ):
        api.include_router(module.router)
    app.include_router(api)
    # The OpenAI-compatible gateway at /v1 (SDK base_url http://<host>/v1): counted against
    # the client IP like the rest, and against the API key through its principal.
    app.include_router(gateway.router, dependencies=[Depends(limit_request_ip)])
    mount_webui(app, settings.ui_dir)  # last: every API route matches before the UI
    return app
