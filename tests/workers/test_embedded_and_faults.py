"""Embedded `lethe serve`, migrations, and Postgres going away under a running API."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from app.db.models import Base
from app.db.session import reset_engine
from app.main import create_app
from app.settings import get_settings
from bench.takedown import embedded_service, free_port
from tests.conftest import create_key_all, parse_sse
from tests.service_env import PG, create_database, drop_database, make_conceptworld, migrate

CLAIMANT = {"name": "A", "email": "a@example.com"}
TAKEDOWN = {"model": "conceptworld", "concept": "red tulip", "kind": "object",
            "legal_basis": "copyright", "claimant": CLAIMANT}
EMBEDDED_ADMIN_KEY = "lethe_embedded-test-admin-key-0123456789abcdef"


def test_migrations_on_empty_postgres_match_models() -> None:
    name = create_database("lethe_mig")
    try:
        url = f"{PG}/{name}"
        migrate({"LETHE_DATABASE_URL": url})
        engine = create_engine(url)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    Base.metadata)
        engine.dispose()
        assert diff == []
    finally:
        drop_database(name)


def test_embedded_serve_completes_a_takedown(tmp_path: Path) -> None:
    stand_in = {"LETHE_CONCEPTWORLD_DIR": str(make_conceptworld(tmp_path)),
                "LETHE_ENGINE_MODULE": "tests.stand_in_engine"}
    with embedded_service(tmp_path / "data", EMBEDDED_ADMIN_KEY, env=stand_in) as client:
        base, auth = str(client.base_url).rstrip("/"), f"Bearer {EMBEDDED_ADMIN_KEY}"
        started = time.monotonic()
        assert httpx.post(f"{base}/v1/takedowns", json=TAKEDOWN).status_code == 401
        td = client.post("/v1/takedowns", json=TAKEDOWN).json()
        # Follow the live stream while the worker writes (what `submit --follow` does): on SQLite
        # an open stream must not hold a lock that stops the worker or the stream's own reads.
        states = follow_states(f"{base}/v1/takedowns/{td['id']}/events",
                               {"Authorization": auth}, deadline=60)
        assert states == ["received", "queued", "running", "evaluating", "completed"]
        td = client.get(f"/v1/takedowns/{td['id']}").json()
        assert td["state"] == "completed", td
        assert time.monotonic() - started < 60
        versions = client.get("/v1/models/conceptworld/versions").json()
        assert [v["erased"] for v in versions] == [[], ["red tulip"]]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_serve_stopped_by_a_signal_stops_its_worker(stop: signal.Signals, tmp_path: Path
                                                    ) -> None:
    """uvicorn re-raises the SIGTERM it caught once it has shut down; with the default action
    that killed `lethe serve` before it stopped its worker, which ran on, orphaned. A hang-up
    (the terminal closed) killed it outright."""
    with stand_in_service(tmp_path) as (_, serve, worker):
        os.kill(serve, stop)  # the process only, as `docker stop` or `kill` would
        deadline = time.monotonic() + 30
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = _alive(worker)
        if alive:
            os.kill(worker, signal.SIGKILL)
        assert not alive, "the worker outlived `lethe serve`"


@contextmanager
def stand_in_service(tmp_path: Path) -> Iterator[tuple[httpx.Client, int, int]]:
    """`lethe serve` with the stand-in engine: its client, its pid and its worker's."""
    stand_in = {"LETHE_CONCEPTWORLD_DIR": str(make_conceptworld(tmp_path)),
                "LETHE_ENGINE_MODULE": "tests.stand_in_engine"}
    data_dir = tmp_path / "data"
    with embedded_service(data_dir, EMBEDDED_ADMIN_KEY, env=stand_in) as client:
        serve = next(pid for pid in _pids() if str(data_dir) in _cmdline(pid))
        yield client, serve, next(pid for pid in _pids() if _parent(pid) == serve)


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: state, parent, …"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _parent(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[1]) if fields else 0


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def test_serve_starts_its_worker_again_when_it_dies(tmp_path: Path) -> None:
    """A worker that died (it lost the broker's queue race at start, was killed, ran out of
    memory) was never replaced: every takedown waited forever, its event stream open."""
    with stand_in_service(tmp_path) as (client, serve, first):
        os.kill(first, signal.SIGKILL)
        td = client.post("/v1/takedowns", json=TAKEDOWN).json()
        deadline = time.monotonic() + 60
        while client.get(f"/v1/takedowns/{td['id']}").json()["state"] != "completed":
            assert time.monotonic() < deadline, "the takedown waited for a dead worker"
            time.sleep(0.5)
        second = [pid for pid in _pids() if _parent(pid) == serve and _alive(pid)]
        assert second and first not in second


def test_the_embedded_broker_has_its_queues_before_any_worker_starts(tmp_path: Path) -> None:
    """On the SQLite broker a worker that loses the race to create a queue's row dies."""
    import sqlite3

    from celery import Celery

    from app.embedded_worker import declare_queues
    from workers.celery_app import celery_app

    app = Celery("lethe-test", broker=f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    app.conf.task_queues = celery_app.conf.task_queues
    declare_queues(app)
    with sqlite3.connect(tmp_path / "broker.db") as db:
        names = {name for (name,) in db.execute("SELECT name FROM kombu_queue")}
    assert names == {"unlearn", "preview"}


def test_stopping_serve_kills_a_worker_that_is_still_busy() -> None:
    """A warm shutdown waits for the running job; `lethe serve` must not leave it orphaned."""
    from app.embedded_worker import stop_process

    busy = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                             "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); "
                             "time.sleep(120)"], stdout=subprocess.PIPE)
    assert busy.stdout is not None
    busy.stdout.readline()  # SIGTERM is ignored from here on
    clock = time.monotonic()
    stop_process(busy, grace_seconds=1)
    assert busy.poll() is not None
    assert time.monotonic() - clock < 10


def follow_states(url: str, headers: dict[str, str], deadline: float) -> list[str]:
    """The state events of a live SSE stream, read until the server ends it or `deadline`
    seconds pass (its pings would keep a stream that never ends open forever)."""
    end = time.monotonic() + deadline
    with httpx.stream("GET", url, headers=headers, timeout=deadline) as stream:
        lines = itertools.takewhile(lambda _: time.monotonic() < end, stream.iter_lines())
        return [data["state"] for kind, data in parse_sse(lines) if kind == "state"]


class TcpProxy:
    """Forwards a local port to Postgres; `cut()` makes the database unreachable."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self.conns: list[socket.socket] = []
        self.server: socket.socket | None = None

    def start(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            if server.fileno() == -1:
                client.close()
                return
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        assert self.server is not None
        try:
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread on Linux
        except OSError:
            pass
        self.server.close()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conns.clear()


@pytest.fixture
def proxied_client(service_db: dict[str, str]) -> Iterator[tuple[TestClient, TcpProxy]]:
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.start()
    db_name = service_db["LETHE_DATABASE_URL"].rsplit("/", 1)[1]
    os.environ["LETHE_DATABASE_URL"] = f"{PG.rsplit(':', 1)[0]}:{proxy.port}/{db_name}"
    get_settings.cache_clear()
    reset_engine()
    try:
        with TestClient(create_app(reconcile=False), raise_server_exceptions=False) as client:
            client.headers["Authorization"] = f"Bearer {create_key_all()}"
            yield client, proxy
    finally:
        proxy.cut()
        os.environ["LETHE_DATABASE_URL"] = service_db["LETHE_DATABASE_URL"]
        get_settings.cache_clear()
        reset_engine()


def test_postgres_unreachable_gives_503_then_recovers(
        proxied_client: tuple[TestClient, TcpProxy]) -> None:
    client, proxy = proxied_client
    assert client.get("/readyz").status_code == 200
    assert client.post("/v1/takedowns", json=TAKEDOWN).status_code == 202
    proxy.cut()
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["database"] is False
    for method, url in (("POST", "/v1/takedowns"), ("GET", "/v1/takedowns"),
                        ("GET", "/v1/models/conceptworld")):
        r = client.request(method, url, json=TAKEDOWN if method == "POST" else None)
        assert r.status_code == 503, (url, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    proxy.start()
    assert client.get("/readyz").status_code == 200
    assert client.post("/v1/takedowns", json=TAKEDOWN).status_code == 202
