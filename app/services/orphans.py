"""Artifacts no version names. An attempt that stored its artifact and then lost its lease
(fenced) or died before registering it leaves the bytes under its job's key
(`<model>/<job>/<digest>`). Such a copy still draws every concept its parent drew but the one
it erased, and no purge would ever find it: the registry does not know it. Once the job has
ended no attempt can register anything, so after LETHE_ORPHAN_GRACE_SECONDS (for a stalled
attempt still uploading) the reconciler deletes every artifact under the job's key that no
version names, audits each deletion, and marks the job swept.

A version is matched by the last part of its key (the digest's first 16 hex digits), from its
URI and from its digest, never by the whole URI: the store's root may be reached by another
path than the one a worker wrote (a moved data folder behind a symlink, another mount)."""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Job, ModelVersion
from app.db.types import utcnow
from app.services import audit
from app.services.artifacts import ArtifactStore, get_store, job_prefix
from app.settings import Settings
from app.states import TERMINAL

JOBS_PER_SWEEP = 100
log = structlog.get_logger(__name__)


def remove_orphan_artifacts(session: Session, settings: Settings) -> list[str]:
    """Sweep the jobs that ended more than the grace ago and were not swept yet. A job whose
    deletion fails is logged and left for the next sweep; the others go on. Returns the URIs
    deleted."""
    ended_before = utcnow() - timedelta(seconds=settings.orphan_grace_seconds)
    due = list(session.scalars(
        select(Job.id).where(Job.state.in_([s.value for s in TERMINAL]),
                             Job.finished_at <= ended_before, Job.artifacts_swept_at.is_(None))
        .order_by(Job.finished_at).limit(JOBS_PER_SWEEP)))
    session.rollback()
    store, removed = get_store(settings), []
    for job_id in due:
        try:
            removed += _sweep_job(session, store, job_id)
        except Exception as exc:  # a store that refuses: the job stays unswept, retried later
            session.rollback()
            log.warning("orphans.sweep_failed", job=job_id, error=str(exc))
    return removed


def _sweep_job(session: Session, store: ArtifactStore, job_id: str) -> list[str]:
    """Delete the job's unnamed artifacts, one transaction each (audited with the deletion,
    which is checked), then mark the job swept."""
    removed: list[str] = []
    job = session.get(Job, job_id)
    if job is None or job.artifacts_swept_at is not None:
        session.rollback()
        return []
    prefix = job_prefix(job.model_id, job.id)
    named = _named(session, job.id)
    for key in store.list_under(prefix):
        if key.rsplit("/", 1)[-1] in named:
            continue
        job = session.get(Job, job_id, with_for_update={"skip_locked": True})
        if job is None or job.artifacts_swept_at is not None:
            session.rollback()  # another sweep has it
            return removed
        uri = store.uri_of(key)
        audit.record(session, "artifact.orphan_deleted", "job", job.id,
                     {"model": job.model_id, "uri": uri})
        store.delete(uri)
        if key in store.list_under(prefix):
            raise RuntimeError(f"{uri} is still there after its deletion")
        session.commit()
        removed.append(uri)
    job = session.get(Job, job_id, with_for_update={"skip_locked": True})
    if job is not None and job.artifacts_swept_at is None:
        job.artifacts_swept_at = utcnow()
    session.commit()
    return removed


def _named(session: Session, job_id: str) -> set[str]:
    """The key names of the job's versions, from their URIs and from their digests."""
    names = set()
    for uri, digest in session.execute(select(ModelVersion.artifact_uri, ModelVersion.digest)
                                       .where(ModelVersion.job_id == job_id)):
        if uri:
            names.add(uri.rstrip("/").rsplit("/", 1)[-1])
        if digest:
            names.add(digest.removeprefix("sha256:")[:16])
    return names
