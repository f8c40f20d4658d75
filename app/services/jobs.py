"""The database half of an erasure step: claim with a lease and fencing token, heartbeat,
progress, and the single-transaction commit. Workers call these; none of them loads weights.

Fencing: claiming a job bumps `models.fence` and copies it to the job. Every later write by the
worker presents (job id, fence, owner); a re-delivered or reconciled copy of the job bumps the
fence again, so the older holder's writes and its commit are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from app.db.models import Job, Model, ModelVersion, Takedown
from app.db.types import utcnow
from app.errors import CatalogUnavailable, NotFound
from app.services import events
from app.services.catalog import normalise_concept, spelling
from app.services.gate import GateResult
from app.services.registry import (
    PRODUCTION,
    alias_target,
    announce_version,
    model_catalog,
    move_alias,
)
from app.settings import Settings
from app.states import ACTIVE, State

log = structlog.get_logger(__name__)
ACTIVE_VALUES = [s.value for s in ACTIVE]


@dataclass
class ConceptRequest:
    takedown_id: str
    concept: str
    prompts: list[str] | None
    neighbors: list[str] | None


@dataclass
class ClaimedJob:
    job_id: str
    model_id: str
    fence: int
    owner: str
    model_dir: str
    parent_version_id: str
    parent_artifact_uri: str | None
    previously_erased: list[str]
    requests: list[ConceptRequest] = field(default_factory=list)


class Busy(Exception):
    """Another job holds a live lease on this model's lineage; try again shortly."""


def ran_instead(claimed: ClaimedJob | None, job_id: str) -> bool:
    """Whether `claim(job_id)` took another, more urgent step of the model in its place."""
    return claimed is not None and claimed.job_id != job_id


def claim(session: Session, settings: Settings, job_id: str, owner: str) -> ClaimedJob | None:
    """Take the lease on a job, or return None when there is nothing (left) to do."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    model = session.scalar(select(Model).where(Model.id == job.model_id).with_for_update())
    session.refresh(job, with_for_update=True)
    assert model is not None
    now, state = utcnow(), State(job.state)
    if state not in (State.QUEUED, *ACTIVE):
        return None  # finished or cancelled: a duplicate delivery
    if state in ACTIVE and job.lease_expires_at and job.lease_expires_at > now:
        return None  # a live worker holds it
    busy = session.scalar(select(Job.id).where(
        Job.model_id == job.model_id, Job.id != job.id, Job.state.in_(ACTIVE_VALUES),
        Job.lease_expires_at > now))
    if busy:
        raise Busy(f"model lineage busy with job {busy}")
    # Steps whose worker died go back in line (this one too) before the order is taken.
    release_expired(session, settings, model_id=job.model_id)
    if job.state != State.QUEUED.value:
        return None  # its worker died once too often: crashed
    if ahead := _runs_before(session, job):
        # The message only woke the model: its most urgent step runs, and the caller sends
        # this job's message again (a lost message of the other would stall them all).
        first = session.get(Job, ahead, with_for_update=True)
        assert first is not None
        if not _spent(session, settings, first):
            job = first
    if _spent(session, settings, job):
        return None
    takedowns = _takedowns(session, job.id, [State.QUEUED])
    if not takedowns:
        events.move_job(job, State.CANCELLED)
        return None
    parent = alias_target(session, model.id, PRODUCTION)
    assert parent is not None
    model.fence += 1
    job.fence = model.fence
    job.attempt += 1
    job.lease_owner, job.heartbeat_at = owner, now
    job.lease_expires_at = now + timedelta(seconds=settings.lease_seconds)
    job.started_at, job.parent_version_id = now, parent.id
    events.move_job(job, State.RUNNING)
    for td in takedowns:
        events.move_takedown(session, td, State.RUNNING, job=job.id, attempt=job.attempt,
                             parent_version=parent.id)
    spell = _spelling(model)
    return ClaimedJob(
        job_id=job.id, model_id=model.id, fence=job.fence, owner=owner, model_dir=model.path,
        parent_version_id=parent.id, parent_artifact_uri=parent.artifact_uri,
        previously_erased=list(dict.fromkeys(spell(c) for c in parent.erased)),
        requests=[ConceptRequest(td.id, spell(td.concept), td.prompts,
                                 [spell(n) for n in td.neighbors]
                                 if td.neighbors is not None else None) for td in takedowns],
    )


def _spelling(model: Model) -> Callable[[str], str]:
    """Names as the model's catalog spells them, as the engine looks them up (intake accepted
    them compared lower-cased, spaces collapsed; a version made before kept them as filed)."""
    try:
        return spelling(model_catalog(model))
    except CatalogUnavailable:  # the engine reads the folder itself, and says what is wrong
        return spelling([])


def _takedowns(session: Session, job_id: str, states: list[State]) -> list[Takedown]:
    stmt = select(Takedown).where(Takedown.job_id == job_id,
                                  Takedown.state.in_([s.value for s in states]))
    return list(session.scalars(stmt.order_by(Takedown.created_at)))


def _held(session: Session, claimed: ClaimedJob) -> Job | None:
    """The job row, locked, if this worker still holds its lease; None if it was fenced off.

    The model's fence counts too: a claim of any job of the model since (another job taken
    past this one's expired lease) means this holder no longer owns the lineage's head."""
    fence = session.scalar(
        select(Model.fence).where(Model.id == claimed.model_id).with_for_update())
    job = session.get(Job, claimed.job_id, with_for_update=True)
    if job is None or not job.fence == fence == claimed.fence \
            or job.lease_owner != claimed.owner:
        return None
    return job if State(job.state) in ACTIVE else None


def _spent(session: Session, settings: Settings, job: Job) -> bool:
    """Crash a queued job whose attempts are spent (LETHE_MAX_ATTEMPTS lowered meanwhile)."""
    if job.attempt < settings.max_attempts:
        return False
    crash(session, job, _takedowns(session, job.id, [State.QUEUED]))
    return True


def _runs_before(session: Session, job: Job) -> str | None:
    """The queued job of `job`'s model that should run first, if not `job`: the one whose
    most urgent takedown has the highest `priority`, then the oldest. A lineage runs one step
    at a time, so this is where a takedown's priority acts."""
    urgency = (select(Takedown.job_id, func.max(Takedown.priority).label("priority"))
               .where(Takedown.model_id == job.model_id,
                      Takedown.state == State.QUEUED.value)
               .group_by(Takedown.job_id).subquery())
    first = session.execute(
        select(Job.id).join(urgency, urgency.c.job_id == Job.id)
        .where(Job.model_id == job.model_id, Job.state == State.QUEUED.value)
        .order_by(urgency.c.priority.desc(), Job.created_at, Job.id).limit(1)).scalar()
    return first if first is not None and first != job.id else None


def mark_waiting(session: Session, settings: Settings, job_id: str) -> None:
    """A queued job's message is being sent again (it waits its turn): the reconciler's
    lost-message check must not send it once more. Written at most every half of
    LETHE_LOST_MESSAGE_SECONDS."""
    now = utcnow()
    session.execute(update(Job).where(
        Job.id == job_id, Job.state == State.QUEUED.value,
        Job.enqueued_at < now - timedelta(seconds=settings.lost_message_seconds / 2))
        .values(enqueued_at=now))


def heartbeat(session: Session, settings: Settings, claimed: ClaimedJob) -> tuple[bool, bool]:
    """Extend the lease. Returns (still_held, cancel_requested)."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == claimed.job_id, Job.fence == claimed.fence,
               Job.lease_owner == claimed.owner, Job.state.in_(ACTIVE_VALUES),
               select(Model.fence).where(Model.id == claimed.model_id).scalar_subquery()
               == claimed.fence)
        .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=settings.lease_seconds))
    )
    held = bool(getattr(result, "rowcount", 0))
    return held, held and cancel_requested(session, claimed.job_id)


def cancel_requested(session: Session, job_id: str) -> bool:
    flagged = session.scalar(select(func.count(Takedown.id)).where(
        Takedown.job_id == job_id, Takedown.cancel_requested.is_(True),
        Takedown.state.in_(ACTIVE_VALUES)))
    return bool(flagged)


def record_progress(session: Session, claimed: ClaimedJob, progress: dict[str, Any]) -> bool:
    """Store progress on each takedown of the step and log it; moves to `evaluating` on cue."""
    job = _held(session, claimed)
    if job is None:
        return False
    evaluating = progress.get("stage") == "evaluating" and job.state == State.RUNNING.value
    if evaluating:
        events.move_job(job, State.EVALUATING)
    for td in _takedowns(session, job.id, list(ACTIVE)):
        td.progress = progress
        if evaluating:
            events.move_takedown(session, td, State.EVALUATING)
        events.record(session, td.id, "progress", progress)
    return True


@dataclass
class StepResult:
    artifact_uri: str
    digest: str
    size_bytes: int
    erased: list[str]
    metrics: dict[str, Any]
    targets: dict[str, str]
    neighbours: dict[str, list[str]]
    covered_by: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ParentMoved:
    """`production` left the step's parent while the step ran (an operator's rollback): the
    step was queued again, to run from the version production names now."""
    job_id: str
    production_version_id: str


def commit_version(
    session: Session, claimed: ClaimedJob, step: StepResult, gate: GateResult
) -> ModelVersion | ParentMoved | None:
    """One transaction: the version row, `production` if the gate passed, the takedowns done.

    Returns None (and writes nothing) when this worker no longer holds the job, and
    `ParentMoved` (no version written; the job queued again) when production moved off the
    step's parent: committing would build on a version production no longer names."""
    job = _held(session, claimed)
    if job is None:
        return None
    existing = session.scalar(select(ModelVersion).where(ModelVersion.job_id == job.id))
    if existing is not None:
        return existing
    production = alias_target(session, claimed.model_id, PRODUCTION)
    if production is not None and production.id != claimed.parent_version_id:
        job.attempt -= 1  # this attempt did not fail: it is given back
        requeue(session, job, _takedowns(session, job.id, list(ACTIVE)),
                reason=f"production moved to version {production.number} while the step ran; "
                       "running again from it")
        return ParentMoved(job.id, production.id)
    number = session.scalar(select(func.max(ModelVersion.number)).where(
        ModelVersion.model_id == claimed.model_id)) or 0
    metrics = {**step.metrics, "gate": {"passed": gate.passed, "reasons": gate.reasons,
                                        "thresholds": gate.thresholds}}
    version = ModelVersion(
        model_id=claimed.model_id, number=number + 1, parent_id=claimed.parent_version_id,
        job_id=job.id, erased=step.erased, artifact_uri=step.artifact_uri, digest=step.digest,
        size_bytes=step.size_bytes, metrics=metrics,
        status="ready" if gate.passed else "gate_failed",
    )
    session.add(version)
    session.flush()
    announce_version(session, version)
    if gate.passed:
        move_alias(session, claimed.model_id, PRODUCTION, version.id,
                   reason=f"job {job.id} passed the evaluation gate")
    if job.state == State.RUNNING.value:
        events.move_job(job, State.EVALUATING)
    final = State.COMPLETED if gate.passed else State.FAILED
    events.move_job(job, final)
    result = {"version": version.id, "version_number": version.number,
              "production": gate.passed, "metrics": metrics, "targets": step.targets,
              "neighbours": step.neighbours, "covered_by": step.covered_by}
    for td in _takedowns(session, job.id, list(ACTIVE)):
        if td.state == State.RUNNING.value:
            events.move_takedown(session, td, State.EVALUATING)
        td.result, td.version_id = result, version.id
        if not gate.passed:
            td.error = {"code": "gate_failed", "detail": "; ".join(gate.reasons),
                        "metrics": metrics}
        events.move_takedown(session, td, final, version=version.id,
                             version_number=version.number, production=gate.passed)
    job.lease_expires_at = None
    return version


def fail(session: Session, claimed: ClaimedJob, error: str) -> bool:
    """The code raised: the step and its takedowns are failed, with the error."""
    job = _held(session, claimed)
    if job is None:
        return False
    events.move_job(job, State.FAILED)
    job.error, job.lease_expires_at = error, None
    for td in _takedowns(session, job.id, list(ACTIVE)):
        td.error = {"code": "engine_error", "detail": error}
        events.move_takedown(session, td, State.FAILED, error=error)
    return True


def refused(session: Session, settings: Settings, claimed: ClaimedJob, concept: str,
            error: str) -> list[str]:
    """The engine refused `concept`: nothing it could draw in its place is allowed (every
    concept of its kind is erased already). Its takedowns fail with code `no_safe_target`; the
    others merged into the step go back in line without it (all fail where none asked for
    `concept`: an earlier erasure it would have to undo).

    Returns the ids of jobs that must be dispatched for the takedowns put back in line."""
    job = _held(session, claimed)
    if job is None:
        return []
    events.move_job(job, State.FAILED)
    job.error, job.lease_expires_at = error, None
    takedowns = _takedowns(session, job.id, list(ACTIVE))
    key = normalise_concept(concept)
    blamed = [td for td in takedowns if normalise_concept(td.concept) == key] or takedowns
    for td in blamed:
        td.error = {"code": "no_safe_target", "detail": error}
        events.move_takedown(session, td, State.FAILED, error=error)
    return _back_in_line(session, settings, claimed, [td for td in takedowns if td not in blamed],
                         f"step refused {concept!r}; queued again without it")


def cancelled(session: Session, settings: Settings, claimed: ClaimedJob) -> list[str]:
    """The engine stopped on request. Cancelled takedowns end; merged ones go back in line.

    Returns the ids of jobs that must be dispatched for the takedowns put back in line."""
    job = _held(session, claimed)
    if job is None:
        return []
    events.move_job(job, State.CANCELLED)
    job.lease_expires_at = None
    takedowns = _takedowns(session, job.id, list(ACTIVE))
    for td in takedowns:
        if td.cancel_requested:
            events.move_takedown(session, td, State.CANCELLED, reason="cancelled by request")
    return _back_in_line(session, settings, claimed,
                         [td for td in takedowns if not td.cancel_requested],
                         "step cancelled by another request")


def _back_in_line(session: Session, settings: Settings, claimed: ClaimedJob,
                  takedowns: list[Takedown], reason: str) -> list[str]:
    """`takedowns` of a step that ended early queued again, in the model's waiting job or a
    new one: the ids of the new jobs, which must be dispatched."""
    from app.services.takedowns import enqueue

    model = session.get(Model, claimed.model_id)
    assert model is not None
    new_jobs: list[str] = []
    for td in takedowns:
        if not _back_or_cancelled(session, td, reason):
            continue
        new_job, is_new = enqueue(session, settings, model, td)
        if is_new:
            new_jobs.append(new_job.id)
    return new_jobs


def release_expired(session: Session, settings: Settings, *,
                    model_id: str | None = None) -> tuple[list[str], list[str]]:
    """Steps whose lease expired (their worker presumed dead), of one model or all: back in
    line, or crashed once their attempts are spent. Rows another transaction holds are
    skipped. Returns (requeued, crashed) job ids; the caller sends the requeued ones."""
    stmt = select(Job).where(Job.state.in_(ACTIVE_VALUES), Job.lease_expires_at < utcnow())
    if model_id is not None:
        stmt = stmt.where(Job.model_id == model_id)
    requeued, crashed = [], []
    for job in session.scalars(stmt.with_for_update(skip_locked=True)):
        takedowns = _takedowns(session, job.id, list(ACTIVE))
        if job.attempt >= settings.max_attempts:
            crash(session, job, takedowns)
            crashed.append(job.id)
        else:
            requeue(session, job, takedowns, reason="lease expired: worker presumed dead")
            requeued.append(job.id)
    return requeued, crashed


def requeue(session: Session, job: Job, takedowns: list[Takedown], *, reason: str) -> None:
    """The job back in line with its takedowns; those whose cancel was asked for end now."""
    events.move_job(job, State.QUEUED)
    job.lease_owner, job.lease_expires_at, job.enqueued_at = None, None, utcnow()
    for td in takedowns:
        if State(td.state) in ACTIVE:
            _back_or_cancelled(session, td, reason)


def _back_or_cancelled(session: Session, td: Takedown, reason: str) -> bool:
    """A takedown whose step ended early back in line (True), or cancelled if its cancel was
    asked for while the step ran."""
    if td.cancel_requested:
        events.move_takedown(session, td, State.CANCELLED, reason="cancelled by request")
        return False
    events.move_takedown(session, td, State.QUEUED, reason=reason)
    return True


def crash(session: Session, job: Job, takedowns: list[Takedown]) -> None:
    events.move_job(job, State.CRASHED)
    job.error = f"worker died {job.attempt} times; retries spent"
    for td in takedowns:
        td.error = {"code": "crashed", "detail": job.error}
        events.move_takedown(session, td, State.CRASHED, error=job.error)


def get_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def list_jobs(session: Session, *, model_id: str | None, state: State | None,
              before: str | None = None, limit: int) -> list[Job]:
    """Newest first; `before` (a job id, the last of the previous page) pages on."""
    stmt = select(Job)
    if model_id:
        stmt = stmt.where(Job.model_id == model_id)
    if state:
        stmt = stmt.where(Job.state == state.value)
    if before:
        last = get_job(session, before)
        stmt = stmt.where(or_(Job.created_at < last.created_at,
                              and_(Job.created_at == last.created_at, Job.id < last.id)))
    return list(session.scalars(stmt.order_by(Job.created_at.desc(), Job.id.desc())
                                .limit(limit)))


def job_views(session: Session, jobs: list[Job]) -> list[dict[str, Any]]:
    """The steps as the API shows them: their takedowns, the version each made, its live
    progress (two queries for all of them)."""
    ids = [job.id for job in jobs]
    takedowns: dict[str, list[Takedown]] = {job_id: [] for job_id in ids}
    for td in session.scalars(select(Takedown).where(Takedown.job_id.in_(ids))
                              .order_by(Takedown.created_at, Takedown.id)):
        takedowns[str(td.job_id)].append(td)
    versions = {str(job_id): version_id for job_id, version_id in session.execute(
        select(ModelVersion.job_id, ModelVersion.id).where(ModelVersion.job_id.in_(ids)))}
    return [_view(job, takedowns[job.id], versions.get(job.id)) for job in jobs]


def _view(job: Job, takedowns: list[Takedown], version_id: str | None) -> dict[str, Any]:
    progress = next((td.progress for td in takedowns if td.progress), None)
    return {"id": job.id, "model_id": job.model_id, "state": job.state,
            "takedown_ids": [td.id for td in takedowns], "attempt": job.attempt,
            "parent_version_id": job.parent_version_id, "version_id": version_id,
            "worker": job.lease_owner, "lease_expires_at": job.lease_expires_at,
            "heartbeat_at": job.heartbeat_at, "enqueued_at": job.enqueued_at,
            "started_at": job.started_at, "finished_at": job.finished_at,
            "progress": progress if State(job.state) in ACTIVE else None,
            "error": job.error, "created_at": job.created_at}
