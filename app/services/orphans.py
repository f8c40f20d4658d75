"""Artifacts no version names. An attempt that stored its artifact and then lost its lease
(fenced) or died before registering it leaves the bytes under its job's key
(`<model>/<job>/<digest>`). Such a copy still draws every concept its parent drew but the one
it erased, and no purge would ever find it: the registry does not know it. Once the job has
ended no attempt can register anything, so after LETHE_ORPHAN_GRACE_SECONDS (for a stalled
attempt still uploading) the reconciler deletes every artifact under the job's key that no
version names, audits each deletion, and marks the job swept."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Job, ModelVersion
from app.db.types import utcnow
from app.services import audit
from app.services.artifacts import get_store, job_prefix
from app.settings import Settings
from app.states import TERMINAL

JOBS_PER_SWEEP = 100


def remove_orphan_artifacts(session: Session, settings: Settings) -> list[str]:
    """Sweep the jobs that ended more than the grace ago and were not swept yet, one
    transaction each (an audit record takes the chain's lock). Returns the URIs deleted."""
    ended_before = utcnow() - timedelta(seconds=settings.orphan_grace_seconds)
    due = list(session.scalars(
        select(Job.id).where(Job.state.in_([s.value for s in TERMINAL]),
                             Job.finished_at <= ended_before, Job.artifacts_swept_at.is_(None))
        .order_by(Job.finished_at).limit(JOBS_PER_SWEEP)))
    session.rollback()
    store, removed = get_store(settings), []
    for job_id in due:
        job = session.get(Job, job_id, with_for_update={"skip_locked": True})
        if job is None or job.artifacts_swept_at is not None:
            session.rollback()  # another sweep took it
            continue
        stored = store.list_under(job_prefix(job.model_id, job.id))
        named = set(session.scalars(select(ModelVersion.artifact_uri)
                                    .where(ModelVersion.artifact_uri.in_(stored))))
        for uri in stored:
            if uri not in named:  # audited first: a deletion that fails rolls its record back
                audit.record(session, "artifact.orphan_deleted", "job", job.id,
                             {"model": job.model_id, "uri": uri})
                store.delete(uri)
                removed.append(uri)
        job.artifacts_swept_at = utcnow()
        session.commit()
    return removed
