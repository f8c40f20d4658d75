"""Takedown intake, queueing (with merging into the next step), listing and cancellation."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Job, Model, Takedown
from app.db.types import utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.schemas.takedowns import LegalBasis, TakedownCreate
from app.services import audit, dispatch, events
from app.services.catalog import concept_names, normalise_concept
from app.services.registry import get_model, model_catalog
from app.settings import Settings
from app.states import CANCELLABLE, TERMINAL, State

# Days to answer, per legal basis: GDPR Art. 12(3) one month; DMCA "expeditiously" (we use 7);
# DSA Art. 16(6) "timely". LETHE_DUE_DAYS overrides any of them.
DUE_DAYS: dict[LegalBasis, int] = {
    LegalBasis.GDPR_ART17: 30, LegalBasis.PRIVACY: 30, LegalBasis.DMCA: 7,
    LegalBasis.DSA_ART16: 7,
    LegalBasis.COPYRIGHT: 14, LegalBasis.SAFETY: 2, LegalBasis.CONTRACT: 30, LegalBasis.OTHER: 30,
}
log = structlog.get_logger(__name__)
OPEN_STATES = [s.value for s in State if s not in TERMINAL]
EXTENDABLE = {LegalBasis.GDPR_ART17, LegalBasis.PRIVACY}
# Notice elements a basis requires (LegalRecord field names; "prompts" = material_location or
# the takedown's prompts). DMCA 512(c)(3)(A)(i)-(vi); DSA Art. 16(2)(a)-(d).
REQUIRED_ELEMENTS: dict[LegalBasis, list[str]] = {
    LegalBasis.DMCA: ["signature", "work_identification", "prompts", "good_faith_statement",
                      "accuracy_statement", "authority_under_perjury"],
    LegalBasis.DSA_ART16: ["explanation", "prompts", "accuracy_statement"],
}


def due_days(settings: Settings, basis: LegalBasis) -> int:
    return int(settings.due_days.get(basis.value, DUE_DAYS[basis]))


def missing_elements(body: TakedownCreate) -> list[str]:
    legal = body.legal
    missing = []
    for element in REQUIRED_ELEMENTS.get(body.legal_basis, []):
        present = (bool(legal.material_location or body.prompts) if element == "prompts"
                   else bool(getattr(legal, element)))
        if not present:
            missing.append(element)
    return missing


def by_ticket(session: Session, integration: str, external_ref: str) -> Takedown | None:
    return session.scalar(select(Takedown).where(Takedown.integration == integration,
                                                 Takedown.external_ref == external_ref))


def submit(session: Session, settings: Settings, body: TakedownCreate) -> Takedown:
    """Persist the request (received), then validate against the model and queue it.

    A ticket already filed by the same integration returns the first takedown unchanged
    (`takedown.info["existing"]` is then set for the caller)."""
    if body.integration and not body.external_ref:
        raise InvalidInput("an integration needs the ticket key in external_ref",
                           field="external_ref")
    if body.callback_url:
        from app.services.webhooks import check_url

        try:
            check_url(str(body.callback_url), settings.webhook_allowlist,
                      require_resolution=False)
        except InvalidInput as exc:
            raise InvalidInput(exc.detail, field="callback_url") from exc
    missing = missing_elements(body)
    if missing:
        raise InvalidInput(f"a {body.legal_basis.value} notice needs: {', '.join(missing)}",
                           field="legal")
    if body.integration and body.external_ref:
        existing = by_ticket(session, body.integration, body.external_ref)
        if existing is not None:
            return _mark_existing(existing)
    model = get_model(session, body.model)
    if model.closed_vocabulary:
        model_catalog(model)  # readable, or intake stops here (503) with nothing filed
    now = utcnow()
    takedown = Takedown(
        model_id=model.id, state=State.RECEIVED.value, concept=body.concept.strip(),
        concept_key=normalise_concept(body.concept),
        kind=body.kind.value, legal_basis=body.legal_basis.value,
        claimant=body.claimant.model_dump(), external_ref=body.external_ref,
        integration=body.integration, legal=body.legal.model_dump(mode="json"),
        prompts=body.prompts, neighbors=body.neighbors, priority=body.priority,
        due_at=body.due_at or now + timedelta(days=due_days(settings, body.legal_basis)),
        callback_url=str(body.callback_url) if body.callback_url else None,
        created_at=now, updated_at=now,
    )
    session.add(takedown)
    try:
        session.flush()
    except IntegrityError:  # a concurrent retry of the same ticket got there first
        session.rollback()
        assert body.integration and body.external_ref
        first = by_ticket(session, body.integration, body.external_ref)
        assert first is not None
        return _mark_existing(first)
    events.record(session, takedown.id, "state", {"state": State.RECEIVED.value})
    audit.record(session, "takedown.received", "takedown", takedown.id,
                 {"concept": takedown.concept, "model": model.id, "legal_basis":
                  takedown.legal_basis, "external_ref": takedown.external_ref,
                  "integration": takedown.integration, "due_at": takedown.due_at.isoformat()})
    from app.services import webhooks  # late: webhooks imports the takedown schemas

    webhooks.enqueue_for_takedown(session, takedown, "takedown.received")  # the receipt
    session.commit()  # intake is durable before anything else can go wrong
    try:
        admit(session, settings, takedown)
        return takedown
    except Exception:  # filed, so not lost: answered `received`, admitted by the reconciler
        session.rollback()
        log.exception("takedown.admit_deferred", takedown=takedown.id)
        session.refresh(takedown)
        return takedown


def admit(session: Session, settings: Settings, takedown: Takedown) -> bool:
    """A `received` takedown checked against its model and queued (or rejected), committed;
    False where it was not `received` any more. Intake calls it at once; the reconciler
    (`admit_stalled`) for one whose intake died before it could."""
    # Under the model's lock, as a cancel or rescind takes it: one that came in between is
    # seen here, and never overwritten by a stale copy.
    model = session.scalars(select(Model).where(Model.id == takedown.model_id)
                            .with_for_update()).one()
    session.refresh(takedown)
    if takedown.state != State.RECEIVED.value:  # rescinded, or admitted, in between
        session.commit()
        return False
    known = concept_names(model_catalog(model)) if model.closed_vocabulary else None
    if known is not None and normalise_concept(takedown.concept) not in known:
        error = {"code": "unknown_concept", "detail": f"model {model.name!r} has a closed "
                 f"vocabulary and does not know {takedown.concept!r}"}
        takedown.error = error
        events.move_takedown(session, takedown, State.REJECTED, error=error)
        session.commit()
        return True
    job, is_new = enqueue(session, settings, model, takedown)
    session.commit()
    if is_new:
        dispatch.send_unlearn(job.id)
    return True


def admit_stalled(session: Session, settings: Settings) -> list[str]:
    """Admit the takedowns left `received` longer than LETHE_LOST_MESSAGE_SECONDS: their
    intake committed the notice, then died (or hit a lock timeout) before queueing it. One
    that fails is logged and left for the next sweep. Returns the ids admitted."""
    cutoff = utcnow() - timedelta(seconds=settings.lost_message_seconds)
    stalled = list(session.scalars(select(Takedown.id).where(
        Takedown.state == State.RECEIVED.value, Takedown.created_at < cutoff)
        .order_by(Takedown.created_at).limit(100)))
    session.rollback()
    admitted = []
    for takedown_id in stalled:
        takedown = session.get(Takedown, takedown_id)
        if takedown is None:
            continue
        created = takedown.created_at
        try:
            if admit(session, settings, takedown):
                admitted.append(takedown_id)
        except Exception as exc:  # its catalog unreadable, say: the others go on
            session.rollback()
            # a notice not queued for an hour is an operator's problem, not a blip
            stuck = utcnow() - created > timedelta(hours=1)
            (log.error if stuck else log.warning)(
                "takedown.admit_failed", takedown=takedown_id, error=str(exc), stuck=stuck)
    return admitted


def _mark_existing(takedown: Takedown) -> Takedown:
    takedown.__dict__["_existing"] = True  # not a column: tells the router to answer 200
    return takedown


def is_existing(takedown: Takedown) -> bool:
    return bool(takedown.__dict__.get("_existing"))


def extend(session: Session, takedown_id: str, months: int, reason: str) -> Takedown:
    """GDPR Art. 12(3): once, by at most two months, with a recorded reason."""
    takedown = lock_for_change(session, get(session, takedown_id))
    if LegalBasis(takedown.legal_basis) not in EXTENDABLE:
        raise Conflict(f"{takedown.legal_basis} deadlines cannot be extended")
    if takedown.legal.get("extension"):
        raise Conflict("the deadline was already extended once")
    if State(takedown.state) in TERMINAL:
        raise Conflict(f"takedown is {takedown.state}")
    if takedown.due_at < utcnow():  # the extension must be notified before the deadline
        raise Conflict(f"the deadline passed on {takedown.due_at.isoformat()}; an extension "
                       "must be decided and notified before it")
    before = takedown.due_at
    takedown.due_at = before + timedelta(days=30 * months)
    extension = {"months": months, "reason": reason, "from": before.isoformat(),
                 "until": takedown.due_at.isoformat(), "recorded_at": utcnow().isoformat()}
    takedown.legal = {**takedown.legal, "extension": extension}
    audit.record(session, "takedown.extended", "takedown", takedown.id, extension)
    session.commit()
    return takedown


def enqueue(
    session: Session, settings: Settings, model: Model, takedown: Takedown
) -> tuple[Job, bool]:
    """Attach the takedown to the model's waiting job if it has room, else open a new job."""
    session.execute(select(Model.id).where(Model.id == model.id).with_for_update())
    size = (
        select(func.count(Takedown.id))
        .where(Takedown.job_id == Job.id, Takedown.state == State.QUEUED.value)
        .scalar_subquery()
    )
    job = session.scalar(
        select(Job)
        .where(Job.model_id == model.id, Job.state == State.QUEUED.value, size < settings.max_merge)
        .order_by(Job.created_at)
        .limit(1)
        .with_for_update()
    )
    is_new = job is None
    if job is None:
        job = Job(model_id=model.id, state=State.QUEUED.value, attempt=0, fence=0,
                  enqueued_at=utcnow(), cancel_requested=False)
        session.add(job)
        session.flush()
    takedown.job_id = job.id
    if takedown.state == State.RECEIVED.value:
        events.move_takedown(session, takedown, State.QUEUED, job=job.id)
    else:  # already queued, moving to a fresh step after its step was cancelled
        events.record(session, takedown.id, "state", {"state": takedown.state, "job": job.id})
    return job, is_new


def get(session: Session, takedown_id: str) -> Takedown:
    takedown = session.get(Takedown, takedown_id)
    if takedown is None:
        raise NotFound(f"no takedown {takedown_id!r}")
    return takedown


def cancel(session: Session, takedown_id: str) -> Takedown:
    """Queued: cancelled now. Running: flagged; the worker stops at its next check."""
    takedown = lock_for_change(session, get(session, takedown_id))
    state = State(takedown.state)
    if state not in CANCELLABLE:
        raise Conflict(f"takedown is {state.value}; only queued or running ones can be cancelled")
    _stop(session, takedown, "cancelled by request")
    session.commit()
    return takedown


def rescind(session: Session, takedown_id: str, reason: str) -> Takedown:
    """The claimant withdrew the notice, recorded in `legal.rescinded` and audited. Not
    started: cancelled now; running: stopped at the worker's next check; ended: recorded
    only. An erasure made stays until an operator moves `production`: undoing it would undo
    every later erasure too, so it is an explicit, audited decision."""
    takedown = lock_for_change(session, get(session, takedown_id))
    if done := takedown.legal.get("rescinded"):
        raise Conflict(f"the notice was rescinded already at {done['at']} ({done['reason']})")
    state = State(takedown.state)
    record = {"at": utcnow().isoformat(), "reason": reason, "by": audit.actor_of(session),
              "state_then": state.value}
    takedown.legal = {**takedown.legal, "rescinded": record}
    audit.record(session, "takedown.rescinded", "takedown", takedown.id, record)
    if state in CANCELLABLE:
        _stop(session, takedown, f"rescinded by the claimant: {reason}")
    session.commit()
    return takedown


def _stop(session: Session, takedown: Takedown, reason: str) -> None:
    """Not started: cancelled now. Running: flagged; the worker stops at its next check."""
    state = State(takedown.state)
    if state in (State.RECEIVED, State.QUEUED):
        events.move_takedown(session, takedown, State.CANCELLED, reason=reason)
        _close_empty_job(session, takedown.job_id)
    else:
        takedown.cancel_requested = True
        events.record(session, takedown.id, "state", {"state": state.value,
                                                      "cancel_requested": True})


def lock_for_change(session: Session, takedown: Takedown) -> Takedown:
    """`takedown` reloaded under the locks a change to it takes, in the one order every path
    takes (model, its job, the takedown, the audit chain): a claim, a commit or an enqueue of
    the same model waits, or is waited for, and never overwrites the change with a stale
    copy."""
    session.execute(select(Model.id).where(Model.id == takedown.model_id).with_for_update())
    session.refresh(takedown)  # its job may have changed before the model's lock was ours
    if takedown.job_id:
        session.execute(select(Job.id).where(Job.id == takedown.job_id).with_for_update())
    session.refresh(takedown, with_for_update=True)
    audit.lock_chain(session)
    return takedown


def _close_empty_job(session: Session, job_id: str | None) -> None:
    job = session.get(Job, job_id) if job_id else None
    if job is None or job.state != State.QUEUED.value:
        return
    remaining = session.scalar(select(func.count(Takedown.id)).where(
        Takedown.job_id == job.id, Takedown.state == State.QUEUED.value))
    if not remaining:
        events.move_job(job, State.CANCELLED)


def encode_cursor(takedown: Takedown) -> str:
    raw = json.dumps([takedown.created_at.isoformat(), takedown.id])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, ident = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), str(ident)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("cursor is not one this API issued", field="cursor") from exc


@dataclass(frozen=True)
class TakedownFilter:
    """What a listing asks by; None = any. `concept` matches the whole name in any case;
    `since` and `until` bound the receipt time, [since, until)."""

    state: State | None = None
    model: str | None = None
    overdue: bool | None = None
    legal_basis: LegalBasis | None = None
    concept: str | None = None
    external_ref: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.since and self.until and self.since >= self.until:
            raise InvalidInput("since must be before until", field="since")


def filtered(session: Session, stmt: Select[Any], where: TakedownFilter) -> Select[Any]:
    """`stmt`, a select over takedowns, narrowed to those `where` picks."""
    if where.state is not None:
        stmt = stmt.where(Takedown.state == where.state.value)
    if where.legal_basis is not None:
        stmt = stmt.where(Takedown.legal_basis == where.legal_basis.value)
    if where.concept is not None:
        key = normalise_concept(where.concept)
        stmt = stmt.where(or_(Takedown.concept_key == key, and_(  # one filed by older code
            Takedown.concept_key.is_(None), func.lower(func.trim(Takedown.concept)) == key)))
    if where.external_ref is not None:
        stmt = stmt.where(Takedown.external_ref == where.external_ref)
    if where.since is not None:
        stmt = stmt.where(Takedown.created_at >= where.since)
    if where.until is not None:
        stmt = stmt.where(Takedown.created_at < where.until)
    if where.model is not None:
        stmt = stmt.where(Takedown.model_id == get_model(session, where.model).id)
    if where.overdue is not None:
        late = and_(Takedown.due_at < utcnow(), Takedown.state.in_(OPEN_STATES))
        stmt = stmt.where(late if where.overdue else ~late)
    return stmt


def is_overdue(state: str, due_at: datetime, now: datetime) -> bool:
    """Not ended, and past its due date (what `overdue` filters by)."""
    return state in OPEN_STATES and due_at < now


def list_page(
    session: Session, where: TakedownFilter, *, cursor: str | None, limit: int,
) -> tuple[list[Takedown], str | None]:
    """Newest first; the cursor is the (created_at, id) of the last row returned."""
    stmt = filtered(session, select(Takedown), where)
    if cursor:
        created, ident = decode_cursor(cursor)
        stmt = stmt.where(or_(Takedown.created_at < created,
                              and_(Takedown.created_at == created, Takedown.id < ident)))
    rows = list(session.scalars(
        stmt.order_by(Takedown.created_at.desc(), Takedown.id.desc()).limit(limit + 1)))
    page, more = rows[:limit], len(rows) > limit
    return page, encode_cursor(page[-1]) if more and page else None
