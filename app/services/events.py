"""State changes and progress of takedowns, each written as a durable event (the SSE source)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Job, Takedown, TakedownEvent
from app.db.types import utcnow
from app.services import audit, decisions
from app.states import State, transition


def record(session: Session, takedown_id: str, type_: str, data: dict[str, Any]) -> None:
    session.add(TakedownEvent(takedown_id=takedown_id, type=type_, data=data))


def move_takedown(session: Session, takedown: Takedown, target: State, **data: Any) -> None:
    """The only way a takedown changes state: checked by the state machine, then logged."""
    previous = takedown.state
    takedown.state = transition(takedown.state, target)
    takedown.updated_at = utcnow()
    if target == State.QUEUED:  # back in line: the last run's progress no longer describes it
        takedown.progress = None
    record(session, takedown.id, "state", {"state": target.value, **data})
    audit.record(session, f"takedown.{target.value}", "takedown", takedown.id,
                 {"from": previous, "to": target.value, **data})
    decided = decisions.decide_automatically(session, takedown, target)  # in the payload too
    from app.services import webhooks  # late: webhooks imports the takedown schemas

    webhooks.enqueue_for_takedown(session, takedown, f"takedown.{target.value}")
    if decided:
        webhooks.enqueue_for_takedown(session, takedown, "takedown.decided")


def move_job(job: Job, target: State) -> None:
    job.state = transition(job.state, target)
    if target in (State.COMPLETED, State.FAILED, State.CRASHED, State.CANCELLED, State.REJECTED):
        job.finished_at = utcnow()


def events_after(session: Session, takedown_id: str, after_id: int) -> list[TakedownEvent]:
    stmt = (
        select(TakedownEvent)
        .where(TakedownEvent.takedown_id == takedown_id, TakedownEvent.id > after_id)
        .order_by(TakedownEvent.id)
    )
    return list(session.scalars(stmt))
