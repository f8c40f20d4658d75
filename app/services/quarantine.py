"""Quarantine and purge: an erased concept must leave every copy users can get.

Rule: when `production` moves to version P, every other version V of the lineage that still
contains a concept P has erased (some c in P.erased with c not in V.erased, names compared as
the catalog compares them) is quarantined: it cannot be downloaded, previewed, exported or made
an alias target (moving `production` back needs models:admin and an explicit, audited override).
Purging deletes a version's own artifact (its tensors; the base weights belong to the registered
folder and are never deleted), its preview images and its built exports (tars of the merged
weights); the row stays as a tombstone (`410 Gone`). Quarantined versions are purged
automatically after LETHE_PURGE_GRACE_SECONDS by the reconciler's sweep.
"""

from __future__ import annotations

import shutil
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import ModelVersion, Preview
from app.db.types import utcnow
from app.errors import Conflict, Gone, Quarantined
from app.services import audit, webhooks
from app.services.artifacts import get_store
from app.services.catalog import erases
from app.settings import Settings


def quarantine_superseded(session: Session, production: ModelVersion) -> list[str]:
    """Quarantine every version of the lineage still holding a concept `production` erased."""
    if not production.erased:
        return []
    done = []
    for version in session.scalars(select(ModelVersion).where(
            ModelVersion.model_id == production.model_id, ModelVersion.id != production.id,
            ModelVersion.quarantined_at.is_(None), ModelVersion.purged_at.is_(None))):
        still_there = sorted(c for c in production.erased if not erases(version.erased, c))
        if still_there:
            version.quarantined_at = utcnow()
            version.quarantine_reason = f"still contains erased concepts: {still_there}"
            audit.record(session, "version.quarantined", "model_version", version.id,
                         {"model": version.model_id, "number": version.number,
                          "contains": still_there, "production": production.id})
            webhooks.enqueue_registry_event(session, "version.quarantined", {
                "version_id": version.id, "model_id": version.model_id,
                "number": version.number, "contains": still_there,
                "production": production.id, "reason": version.quarantine_reason})
            done.append(version.id)
    return done


def withdrawn(version: ModelVersion) -> bool:
    """Quarantined or purged: nothing may be drawn or built from it any more."""
    return version.purged_at is not None or version.quarantined_at is not None


def ensure_usable(version: ModelVersion, what: str) -> None:
    """Refuse `what` (download, preview, export, alias) on a purged or quarantined version."""
    if version.purged_at is not None:
        raise Gone(f"version {version.number} was purged at {version.purged_at.isoformat()}; "
                   "its artifact no longer exists")
    if version.quarantined_at is not None:
        raise Quarantined(f"version {version.number} is quarantined ({version.quarantine_reason})"
                          f"; {what} is refused")


def purge(session: Session, settings: Settings, version: ModelVersion, *, reason: str) -> None:
    """Delete the version's artifact and previews; keep the row as a tombstone; audit it.

    The caller commits. Deletion happens before the commit, so a crash between the two leaves
    a version whose bytes are gone but which is not yet marked: the next purge (idempotent)
    marks it."""
    if version.purged_at is not None:
        return
    # Locked: an export finishing concurrently takes the same lock (workers/tasks.py).
    _lock(session, version)
    if version.purged_at is not None:
        return
    if version.held_at is not None:
        raise Conflict(f"version {version.number} is under legal hold since "
                       f"{version.held_at.isoformat()} ({version.hold_reason}); release the "
                       "hold before purging it")
    if version.number == 0:
        raise Conflict("version 0 is the registered base folder; it is not in the artifact "
                       "store and cannot be purged here")
    from app.services.registry import PRODUCTION, alias_target

    current = alias_target(session, version.model_id, PRODUCTION)
    if current is not None and current.id == version.id:
        raise Conflict("this version is the current production; move production first")
    deleted_uri = version.artifact_uri
    if deleted_uri:
        get_store(settings).delete(deleted_uri)
    previews = list(session.scalars(select(Preview).where(Preview.version_id == version.id)))
    for preview in previews:
        shutil.rmtree(settings.previews_dir / preview.id, ignore_errors=True)
        preview.images = []
    from app.services.exports import purge_exports

    exports_removed = purge_exports(session, version)
    version.purged_at = utcnow()
    audit.record(session, "version.purged", "model_version", version.id,
                 {"model": version.model_id, "number": version.number, "reason": reason,
                  "artifact_uri": deleted_uri, "digest": version.digest,
                  "previews_removed": [p.id for p in previews],
                  "exports_removed": exports_removed})
    webhooks.enqueue_registry_event(session, "version.purged", {
        "version_id": version.id, "model_id": version.model_id, "number": version.number,
        "digest": version.digest, "reason": reason})


def purge_expired(session: Session, settings: Settings) -> list[str]:
    """The automatic purge: quarantined longer than the grace period."""
    if not settings.auto_purge:
        return []
    cutoff = utcnow() - timedelta(seconds=settings.purge_grace_seconds)
    expired = select(ModelVersion).where(
        ModelVersion.quarantined_at < cutoff, ModelVersion.purged_at.is_(None),
        ModelVersion.held_at.is_(None), ModelVersion.number > 0)
    if session.scalar(expired.with_only_columns(ModelVersion.id).limit(1)) is None:
        return []  # most sweeps: the audit chain's lock is not taken for nothing
    audit.lock_chain(session)
    due = list(session.scalars(expired.with_for_update(skip_locked=True)))
    purged = []
    for version in due:
        try:
            purge(session, settings, version, reason="grace period after quarantine expired")
            purged.append(version.id)
        except Conflict:
            continue  # e.g. rolled back to as production by an audited override
    return purged


def place_hold(session: Session, version: ModelVersion, reason: str) -> ModelVersion:
    """Keep `version` from every purge until `release_hold`; audited."""
    _lock(session, version)
    if version.purged_at is not None:
        raise Gone(f"version {version.number} was purged at {version.purged_at.isoformat()}; "
                   "there is nothing left to hold")
    if version.held_at is not None:
        raise Conflict(f"version {version.number} is under legal hold already since "
                       f"{version.held_at.isoformat()} ({version.hold_reason})")
    version.held_at, version.hold_reason = utcnow(), reason
    version.held_by = audit.actor_of(session)
    audit.record(session, "version.held", "model_version", version.id,
                 {"model": version.model_id, "number": version.number, "reason": reason})
    return version


def release_hold(session: Session, version: ModelVersion) -> ModelVersion:
    """End the hold: a quarantined version is purged again once its grace has passed."""
    _lock(session, version)
    if version.held_at is None:
        raise Conflict(f"version {version.number} is not under legal hold")
    audit.record(session, "version.hold_released", "model_version", version.id,
                 {"model": version.model_id, "number": version.number,
                  "reason": version.hold_reason, "held_since": version.held_at.isoformat()})
    version.held_at = version.hold_reason = version.held_by = None
    return version


def _lock(session: Session, version: ModelVersion) -> None:
    """The version's row, reloaded under its lock, after the audit chain's (lock_chain says
    why)."""
    audit.lock_chain(session)
    session.refresh(version, with_for_update=True)
