from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.db.models import Base
from app.db.session import get_engine, reset_engine
from app.main import create_app
from app.settings import get_settings
from tests.service_env import create_database, drop_database, migrate, service_env


@pytest.fixture(scope="session")
def service_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    name = create_database("lethe_app")
    data = tmp_path_factory.mktemp("data")
    env = service_env(name, data, redis_db=11)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    reset_engine()
    if "workers.celery_app" in sys.modules:  # imported at collection, before this env existed
        sys.modules["workers.celery_app"].celery_app.conf.broker_url = env["LETHE_BROKER_URL"]
    migrate(env)
    (data / "models" / "house-model").mkdir(parents=True)
    yield env
    reset_engine()
    drop_database(name)
    restore_env(saved)


def restore_env(saved: dict[str, str | None]) -> None:
    """Put environment variables back as `saved` recorded them (None: was unset)."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


def sse_events(client: Any, td_id: str) -> list[tuple[str, dict[str, Any]]]:
    """A finished takedown's event stream as (event type, data) pairs; `client` is a
    TestClient or an httpx.Client."""
    return list(parse_sse(client.get(f"/v1/takedowns/{td_id}/events").text.splitlines()))


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event type, data) pairs from Server-Sent Events lines, as they arrive."""
    kind = ""
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            yield kind, json.loads(line[6:])


def wipe_tables() -> None:
    """Empty every table. The audit log refuses TRUNCATE by trigger; replica mode (superuser)
    skips triggers for this connection only."""
    with get_engine().begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def create_key(scopes: list[str], name: str = "test") -> str:
    from app.db.session import session_scope
    from app.services import keys

    with session_scope() as session:
        _, secret = keys.create(session, name, scopes)
    return secret


@pytest.fixture
def client(service_db: dict[str, str]) -> Iterator[TestClient]:
    wipe_tables()
    with TestClient(create_app(reconcile=False), raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = f"Bearer {create_key_all()}"
        yield test_client


def create_key_all() -> str:
    from app.services.keys import ALL_SCOPES

    return create_key(ALL_SCOPES, "admin")


@pytest.fixture
def data_dir(service_db: dict[str, str]) -> Path:
    return Path(service_db["LETHE_DATA_DIR"])


@pytest.fixture
def live_client(client: TestClient) -> Iterator[TestClient]:
    """Like `client`, with the reconciler loop running (for tests with real workers)."""
    with TestClient(create_app(reconcile=True), raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = client.headers["Authorization"]
        yield test_client
