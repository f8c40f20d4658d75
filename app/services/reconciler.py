"""Re-drives work the queue forgot: expired leases (a worker died) and lost messages.

Runs as a loop in the API process (`run_reconciler_loop`) and is safe to run in several
processes at once: rows are taken with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import structlog
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.db.models import Export, IdempotencyRecord, Job, Preview
from app.db.session import session_scope
from app.db.types import utcnow
from app.services import dispatch, webhooks
from app.services.counter_notices import sweep_restore_windows
from app.services.jobs import ACTIVE_VALUES, release_expired
from app.services.orphans import remove_orphan_artifacts
from app.services.quarantine import purge_expired
from app.services.takedowns import admit_stalled
from app.settings import Settings
from app.states import ACTIVE, State

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass
class Sweep:
    requeued: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    previews: list[str] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)
    stale_failed: list[str] = field(default_factory=list)  # previews/exports given up on
    purged: list[str] = field(default_factory=list)
    restore_windows_opened: list[str] = field(default_factory=list)  # counter-notices
    restore_windows_closed: list[str] = field(default_factory=list)
    orphans_deleted: list[str] = field(default_factory=list)  # artifact URIs
    admitted: list[str] = field(default_factory=list)  # takedowns whose intake died midway
    previous_secrets_forgotten: int = 0
    idempotency_keys_pruned: int = 0


def sweep(session: Session, settings: Settings) -> Sweep:
    """One pass (the expired purge is `purge_expired`, apart); the caller commits, then sends
    `requeued + resent` to the broker."""
    now, out = utcnow(), Sweep()
    out.requeued, out.crashed = release_expired(session, settings)
    stale = now - timedelta(seconds=settings.lost_message_seconds)
    # A step waiting behind its model's running step is not lost: its worker sends it again
    # (or a solo worker is busy with that step), and a copy each sweep would pile up.
    running = select(Job.model_id).where(Job.state.in_(ACTIVE_VALUES), Job.lease_expires_at > now)
    waiting = session.scalars(
        select(Job).where(Job.state == State.QUEUED.value, Job.enqueued_at < stale,
                          Job.model_id.not_in(running))
        .with_for_update(skip_locked=True))
    for job in waiting:
        job.enqueued_at = now
        out.resent.append(job.id)
    previews = session.scalars(select(Preview).where(
        Preview.state == State.QUEUED.value, Preview.created_at < stale))
    out.previews = [p.id for p in previews]
    exports = session.scalars(select(Export).where(
        Export.state == State.QUEUED.value, Export.created_at < stale))
    out.exports = [e.id for e in exports]
    _stale_running(session, settings, out)
    out.idempotency_keys_pruned = _prune_idempotency_keys(session, settings)
    return out


def _stale_running(session: Session, settings: Settings, out: Sweep) -> None:
    """Previews and exports left `running` past LETHE_PREVIEW_STALE_SECONDS lost their worker
    (a redelivered message finds the row `running` and skips it): queue them again, or fail
    them after LETHE_MAX_ATTEMPTS tries."""
    cutoff = utcnow() - timedelta(seconds=settings.preview_stale_seconds)
    rows: list[Preview | Export] = [
        *session.scalars(select(Preview).where(Preview.state == State.RUNNING.value,
                                               Preview.started_at < cutoff)
                         .with_for_update(skip_locked=True)),
        *session.scalars(select(Export).where(Export.state == State.RUNNING.value,
                                              Export.started_at < cutoff)
                         .with_for_update(skip_locked=True))]
    for row in rows:
        sent = out.previews if isinstance(row, Preview) else out.exports
        if (row.attempts or 0) >= settings.max_attempts:
            row.state = State.FAILED.value
            row.error = (f"worker lost {row.attempts} times (running longer than "
                         f"{settings.preview_stale_seconds:g} s); giving up")
            out.stale_failed.append(row.id)
        else:
            row.state, row.started_at = State.QUEUED.value, None
            sent.append(row.id)


def _prune_idempotency_keys(session: Session, settings: Settings) -> int:
    """Keys older than LETHE_IDEMPOTENCY_TTL_SECONDS are forgotten: the same key is new again."""
    cutoff = utcnow() - timedelta(seconds=settings.idempotency_ttl_seconds)
    result = session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


def reconcile_once(settings: Settings) -> Sweep:
    with session_scope() as session:
        result = sweep(session, settings)
    for job_id in result.requeued + result.resent:
        dispatch.send_unlearn(job_id)
    for preview_id in result.previews:
        dispatch.send_preview(preview_id)
    for export_id in result.exports:
        dispatch.send_export(export_id)
    # Each chore in its own transaction, and one that fails does not hold back the others. A
    # purge takes the audit chain's lock, then versions and their previews and exports;
    # holding the sweep's row locks meanwhile could deadlock with one.
    result.admitted = _chore("admit_stalled", lambda s: admit_stalled(s, settings), [])
    result.purged = _chore("purge", lambda s: purge_expired(s, settings), [])
    no_windows: tuple[list[str], list[str]] = ([], [])
    result.restore_windows_opened, result.restore_windows_closed = _chore(
        "restore_windows", sweep_restore_windows, no_windows)
    result.orphans_deleted = _chore(
        "orphan_artifacts", lambda s: remove_orphan_artifacts(s, settings), [])
    # rows only: a rotation holds the chain, then the row
    result.previous_secrets_forgotten = _chore(
        "previous_secrets", webhooks.forget_expired_secrets, 0)
    if result.requeued or result.crashed or result.resent or result.purged \
            or result.stale_failed or result.restore_windows_opened \
            or result.restore_windows_closed or result.orphans_deleted or result.admitted:
        log.info("reconciler.sweep", requeued=result.requeued, crashed=result.crashed,
                 resent=result.resent, purged=result.purged, stale_failed=result.stale_failed,
                 restore_windows_opened=result.restore_windows_opened,
                 restore_windows_closed=result.restore_windows_closed,
                 orphans_deleted=result.orphans_deleted, admitted=result.admitted)
    return result


def _chore(name: str, work: Callable[[Session], T], failed: T) -> T:
    """Run `work` in a transaction of its own; if it raises, log it and return `failed`."""
    try:
        with session_scope() as session:
            return work(session)
    except Exception as exc:  # the next sweep tries again
        log.warning("reconciler.chore_failed", chore=name, error=str(exc))
        return failed


async def run_reconciler_loop(settings: Settings) -> None:
    while True:
        try:
            await asyncio.to_thread(reconcile_once, settings)
        except Exception as exc:  # the database may be down; try again next tick
            log.warning("reconciler.error", error=str(exc))
        await asyncio.sleep(settings.reconcile_seconds)


__all__ = ["ACTIVE", "reconcile_once", "run_reconciler_loop", "sweep"]
