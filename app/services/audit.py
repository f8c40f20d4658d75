"""The tamper-evident audit log: append-only rows chained by hash.

    hash_n = sha256(hash_{n-1} || canonical_json(row_n)),  hash_0 = "0" * 64

`canonical_json` is JSON with sorted keys, no whitespace, UTF-8, timestamps in ISO 8601 UTC.
Rows are appended in the transaction of the change they describe (so a change is committed iff
its audit row is), under a lock that serialises writers: a Postgres transaction-level advisory
lock; SQLite sessions already begin IMMEDIATE, which takes the database write lock.

The chain shows edits, deletions and re-orderings made behind the application's back; an
administrator with the trigger disabled can still recompute the whole chain, so the head hash
(`GET /v1/audit/verify` reports it) should be anchored somewhere else from time to time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.db.models import AuditEvent
from app.db.types import utcnow

GENESIS = "0" * 64
LOCK_ID = 0x1E7E_A0D1  # arbitrary, fixed: the advisory lock that serialises appends
SYSTEM = "system"


def canonical_json(row: AuditEvent) -> str:
    body = {"seq": row.seq, "at": row.at.astimezone(UTC).isoformat(), "actor": row.actor,
            "action": row.action, "target_type": row.target_type, "target_id": row.target_id,
            "data": row.data}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


def chain_hash(prev_hash: str, row: AuditEvent) -> str:
    return hashlib.sha256((prev_hash + canonical_json(row)).encode()).hexdigest()


def actor_of(session: Session) -> str:
    """The caller set by the auth dependency (`key:<id>`), else the system (workers, sweeps)."""
    return str(session.info.get("actor", SYSTEM))


def lock_chain(session: Session) -> None:
    """Hold the chain's lock to the end of the transaction (again is fine). Take it before
    locking a webhook subscription or a model version that the transaction will audit: the
    takedown transitions that queue deliveries and quarantine versions already hold it when
    they reach those rows, so taking the row first could deadlock with them."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOCK_ID})


def record(session: Session, action: str, target_type: str, target_id: str,
           data: dict[str, Any] | None = None, *, actor: str | None = None) -> AuditEvent:
    """Append one row to the chain inside the caller's transaction."""
    lock_chain(session)
    head = session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)).first()
    seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
    row = AuditEvent(seq=seq, at=utcnow(), actor=actor or actor_of(session), action=action,
                     target_type=target_type, target_id=target_id,
                     data=json.loads(json.dumps(data or {}, default=str)), prev_hash=prev)
    row.hash = chain_hash(prev, row)
    session.add(row)
    session.flush()
    return row


@dataclass
class Verification:
    ok: bool
    rows: int
    head: str
    first_bad_seq: int | None = None
    reason: str | None = None


def iter_rows(session: Session, batch: int = 1000) -> Iterator[AuditEvent]:
    after = 0
    while True:
        rows = list(session.scalars(select(AuditEvent).where(AuditEvent.seq > after)
                                    .order_by(AuditEvent.seq).limit(batch)))
        if not rows:
            return
        yield from rows
        after = rows[-1].seq


def verify(session: Session) -> Verification:
    """Walk the chain from the start; report the first row whose hash or link breaks."""
    prev, expected_seq, count = GENESIS, 1, 0
    for row in iter_rows(session):
        if row.seq != expected_seq:
            return Verification(False, count, prev, expected_seq,
                                f"row {expected_seq} is missing (next is {row.seq})")
        if row.prev_hash != prev:
            return Verification(False, count, prev, row.seq, "prev_hash does not match")
        if chain_hash(prev, row) != row.hash:
            return Verification(False, count, prev, row.seq, "hash does not match the row")
        prev, expected_seq, count = row.hash, expected_seq + 1, count + 1
    return Verification(True, count, prev)


def list_page(session: Session, *, action: str | None, target_id: str | None,
              actor: str | None, since: datetime | None, after: int, limit: int
              ) -> tuple[list[AuditEvent], int | None]:
    stmt = select(AuditEvent).where(AuditEvent.seq > after)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if target_id:
        stmt = stmt.where(AuditEvent.target_id == target_id)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    rows = list(session.scalars(stmt.order_by(AuditEvent.seq).limit(limit + 1)))
    page = rows[:limit]
    return page, (page[-1].seq if len(rows) > limit and page else None)


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(AuditEvent)) or 0


def as_dict(row: AuditEvent) -> dict[str, Any]:
    return {"seq": row.seq, "at": row.at.isoformat(), "actor": row.actor, "action": row.action,
            "target_type": row.target_type, "target_id": row.target_id, "data": row.data,
            "prev_hash": row.prev_hash, "hash": row.hash}
