"""Data migrations: what they change in rows an older version wrote, and what they undo."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session

from app.db.models import Model, Takedown
from tests.service_env import PG, REPO, create_database, drop_database


def alembic(url: str, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "alembic", *args], cwd=REPO, check=True,
                          env={**os.environ, "LETHE_DATABASE_URL": url}, capture_output=True,
                          text=True).stdout


def migrate(engine: Engine, url: str, online: bool, *args: str) -> None:
    """`alembic <args>` against the database, or its SQL script (`--sql`) run there."""
    if online:
        alembic(url, *args)
        return
    with engine.begin() as conn:
        conn.exec_driver_sql(alembic(url, *args, "--sql"))


def counter_notice(opened: bool, suit: bool = False) -> dict[str, Any]:
    received = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
    return {"received_at": received.isoformat(), "restore_window": {
        "opens": (received + timedelta(days=14)).isoformat(),
        "closes": (received + timedelta(days=18)).isoformat()},
        "claimant_copy": {"via": "email", "sent_at": received.isoformat()},
        "suit": {"court": "N.D. Cal.", "case_number": "1"} if suit else None,
        "window_opened_at": (received + timedelta(days=14)).isoformat() if opened else None,
        "late": False if opened else None}


@pytest.fixture
def database() -> Iterator[tuple[str, Engine]]:
    """A throwaway Postgres database: its URL and an engine on it."""
    name = create_database("lethe_mig")
    url = f"{PG}/{name}"
    engine = create_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()
        drop_database(name)


@pytest.mark.parametrize("online", [True, False], ids=["online", "sql-script"])
def test_windows_opened_before_their_close_was_told_get_their_close_back(
        online: bool, database: tuple[str, Engine]) -> None:
    url, engine = database
    alembic(url, "upgrade", "0009")
    with Session(engine) as session:
        model = Model(name="m", source="path", path="/m")
        session.add(model)
        session.flush()
        pending_at = datetime(2026, 11, 16, 15, 0, tzinfo=UTC)
        rows = {"opened": (counter_notice(True), None),
                "pending": (counter_notice(False), pending_at),
                "suit": (counter_notice(True, suit=True), None)}
        for concept, (counter, at) in rows.items():
            session.add(Takedown(id=concept, model_id=model.id, state="completed",
                                 concept=concept, kind="object", legal_basis="dmca",
                                 claimant={}, legal={"counter_notice": counter},
                                 due_at=pending_at, restore_window_at=at))
        session.commit()

    def sweep_times() -> dict[str, datetime | None]:
        with Session(engine) as session:
            rows = session.execute(select(Takedown.id, Takedown.restore_window_at))
            return {ident: at for ident, at in rows}

    migrate(engine, url, online, "upgrade", "0009:head" if not online else "head")
    closes = datetime.fromisoformat(counter_notice(True)["restore_window"]["closes"])
    assert sweep_times() == {"opened": closes, "pending": pending_at, "suit": None}
    # older code would open "opened" a second time
    migrate(engine, url, online, "downgrade", "head:0009" if not online else "0009")
    assert sweep_times() == {"opened": None, "pending": pending_at, "suit": None}


@pytest.mark.parametrize("online", [True, False], ids=["online", "sql-script"])
def test_replays_kept_in_plain_text_holding_a_secret_are_dropped(
        online: bool, database: tuple[str, Engine]) -> None:
    url, engine = database
    alembic(url, "upgrade", "0010")
    bodies = {"new-key": '{"id": "k1", "secret": "lk_plain"}',
              "takedown": '{"id": "t1", "state": "queued"}'}
    with engine.begin() as conn:
        for key, body in bodies.items():
            conn.execute(text(
                "INSERT INTO idempotency_records (principal, key, fingerprint, state, "
                "status_code, headers, body, created_at) VALUES ('p', :key, 'f', 'done', "
                "201, '{}', :body, now())"), {"key": key, "body": body})
    migrate(engine, url, online, "upgrade", "0010:head" if not online else "head")
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT key, body, sealed FROM idempotency_records")).all()
    assert [tuple(row) for row in kept] == [("takedown", bodies["takedown"], False)]
    migrate(engine, url, online, "downgrade", "head:0010" if not online else "0010")
