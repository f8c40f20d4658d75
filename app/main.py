"""The FastAPI application: routers under /v1, problem+json errors, logs, metrics, reconciler."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import APIRouter, FastAPI
from prometheus_client import REGISTRY

from app.api import problems
from app.api.idempotency import Idempotency
from app.api.routes import (
    audit,
    integrations,
    jobs,
    keys,
    models,
    ops,
    reports,
    takedowns,
    versions,
)
from app.db.session import session_scope
from app.observability import QueueCollector, RequestContext, configure_logging
from app.services import keys as api_keys
from app.services.reconciler import run_reconciler_loop
from app.services.registry import ensure_builtin_models
from app.services.webhooks import run_webhook_loop
from app.settings import Settings, get_settings

log = structlog.get_logger(__name__)
_collector = QueueCollector()


def create_app(settings: Settings | None = None, *, reconcile: bool = True) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            with session_scope() as session:
                ensure_builtin_models(session, settings)
                if settings.admin_key:
                    api_keys.ensure_admin(session, settings.admin_key)
        except Exception as exc:  # DB down at boot: serve 503s until it is back
            log.warning("startup.registry_unavailable", error=str(exc))
        tasks = [asyncio.create_task(run_reconciler_loop(settings)),
                 asyncio.create_task(run_webhook_loop(settings))] if reconcile else []
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="Lethe", version="0.1.0", lifespan=lifespan,
                  description="Remove concepts from text-to-image models on demand.")
    v1 = APIRouter(prefix="/v1")
    for module in (models, versions, takedowns, jobs, audit, keys, integrations, reports):
        v1.include_router(module.router)
    app.include_router(v1)
    app.include_router(ops.router)
    problems.install(app)
    app.add_middleware(problems.RejectNul)  # innermost: NUL bytes never reach Postgres
    app.add_middleware(Idempotency)  # inside BodyLimit: it buffers bodies already capped
    app.add_middleware(problems.BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext)
    with contextlib.suppress(ValueError):  # already registered by an earlier create_app
        REGISTRY.register(_collector)
    return app
