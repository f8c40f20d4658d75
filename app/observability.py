"""Structured JSON logs (structlog) with request and job ids, and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db.models import Job, Takedown
from app.db.session import session_scope
from app.db.types import utcnow
from app.states import TERMINAL, State

HTTP_REQUESTS = Counter("lethe_http_requests_total", "HTTP requests", ["method", "status"])
HTTP_LATENCY = Histogram("lethe_http_request_seconds", "HTTP request latency", ["method"])
DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level, force=True)
    renderer: Any = (structlog.processors.JSONRenderer() if json_logs
                     else structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )


class RequestContext:
    """Pure ASGI middleware: request id in logs and the X-Request-ID header; HTTP metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode()[:64] or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started, status = time.perf_counter(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            HTTP_REQUESTS.labels(scope["method"], str(status)).inc()
            HTTP_LATENCY.labels(scope["method"]).observe(time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars("request_id")


class QueueCollector(Collector):
    """Read at scrape time from the database, so it is right whichever process did the work."""

    def collect(self) -> Iterator[Any]:
        states = GaugeMetricFamily("lethe_takedowns", "Takedowns by state", labels=["state"])
        depth = GaugeMetricFamily("lethe_queue_depth", "Jobs waiting for a worker",
                                  labels=["queue"])
        overdue = GaugeMetricFamily("lethe_takedowns_overdue",
                                    "Open takedowns past their legal due_at")
        durations = HistogramMetricFamily("lethe_job_duration_seconds",
                                          "Erasure step wall time, claim to finish")
        try:
            with session_scope() as session:
                counts = dict(session.execute(
                    select(Takedown.state, func.count()).group_by(Takedown.state)).all())
                late = session.scalar(select(func.count()).select_from(Takedown).where(
                    Takedown.due_at < utcnow(),
                    Takedown.state.in_([s.value for s in State if s not in TERMINAL]))) or 0
                queued = session.scalar(select(func.count()).select_from(Job).where(
                    Job.state == State.QUEUED.value)) or 0
                spans = session.execute(select(Job.started_at, Job.finished_at).where(
                    Job.finished_at.is_not(None), Job.started_at.is_not(None))
                    .order_by(Job.finished_at.desc()).limit(1000)).all()
        except Exception:
            return  # the database is down; /readyz says so
        for state in State:
            states.add_metric([state.value], counts.get(state.value, 0))
        depth.add_metric(["unlearn"], queued)
        overdue.add_metric([], late)
        seconds = [(end - start).total_seconds() for start, end in spans if start and end]
        buckets = [(str(b), sum(s <= b for s in seconds)) for b in DURATION_BUCKETS]
        durations.add_metric([], [*buckets, ("+Inf", len(seconds))], sum(seconds))
        yield from (states, depth, overdue, durations)
