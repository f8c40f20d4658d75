"""DMCA counter-notices (17 USC 512(g)): the person whose material an erasure removed says it
was removed by mistake. The provider sends the claimant a copy, and may restore the material
10 to 14 business days after receiving it, unless the claimant first says it filed suit.

Lethe records the counter-notice in `legal.counter_notice`, sends it as
`takedown.counter_noticed`, and has the reconciler send `takedown.restore_window_opened` once
ten business days pass with no suit (`takedown.suit_filed` shuts the window). It does not
restore by itself: undoing an erasure undoes every later version built on it, so it stays an
operator's audited move of `production`, as for a rescinded notice."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Takedown
from app.db.types import utcnow
from app.errors import Conflict
from app.schemas.takedowns import CounterNoticeIn, LegalBasis, SuitIn
from app.services import audit
from app.services.takedowns import get, lock_for_change
from app.states import State

RESTORE_NOT_BEFORE, RESTORE_NOT_AFTER = 10, 14  # business days, 512(g)(2)(C)


def business_days_after(start: datetime, days: int) -> datetime:
    """`start` moved on `days` weekdays (Saturdays and Sundays skipped; public holidays are
    not known here, so the window can open a holiday early: the restore stays a person's)."""
    moved, left = start, days
    while left:
        moved += timedelta(days=1)
        if moved.weekday() < 5:
            left -= 1
    return moved


def receive(session: Session, takedown_id: str, body: CounterNoticeIn) -> Takedown:
    """Record a counter-notice against a completed DMCA takedown and send it on."""
    takedown = lock_for_change(session, get(session, takedown_id))
    if takedown.legal_basis != LegalBasis.DMCA.value:
        raise Conflict(f"takedown {takedown.id} was filed under {takedown.legal_basis}: a "
                       "counter-notice answers a dmca notice (17 USC 512(g))")
    if takedown.state != State.COMPLETED.value:
        raise Conflict(f"takedown {takedown.id} is {takedown.state}: a counter-notice answers "
                       "an erasure made, and none was")
    if done := takedown.legal.get("counter_notice"):
        raise Conflict(f"a counter-notice was received already at {done['received_at']}")
    received = utcnow()
    opens = business_days_after(received, RESTORE_NOT_BEFORE)
    record: dict[str, Any] = {
        "received_at": received.isoformat(), "by": audit.actor_of(session),
        "counter_notifier": {"name": body.name, "email": body.email, "address": body.address,
                             "phone": body.phone},
        "material_identification": body.material_identification,
        "mistake_statement": body.mistake_statement,
        "consent_to_jurisdiction": body.consent_to_jurisdiction,
        "signature": body.signature.model_dump(mode="json"),
        "restore_window": {"opens": opens.isoformat(), "closes": business_days_after(
            received, RESTORE_NOT_AFTER).isoformat()},
        "suit": None, "window_opened_at": None}
    _tell(session, takedown, record, "takedown.counter_noticed", record)
    takedown.restore_window_at = opens
    session.commit()
    return takedown


def record_suit(session: Session, takedown_id: str, body: SuitIn) -> Takedown:
    """The claimant filed an action seeking a court order: the window never opens."""
    takedown = lock_for_change(session, get(session, takedown_id))
    counter = takedown.legal.get("counter_notice")
    if counter is None:
        raise Conflict(f"takedown {takedown.id} has no counter-notice for a suit to answer")
    if counter["suit"]:
        raise Conflict(f"a suit was recorded already: {counter['suit']['court']}, "
                       f"{counter['suit']['case_number']}")
    suit = {**body.model_dump(mode="json"), "recorded_at": utcnow().isoformat(),
            "by": audit.actor_of(session)}
    _tell(session, takedown, {**counter, "suit": suit}, "takedown.suit_filed", suit)
    takedown.restore_window_at = None
    session.commit()
    return takedown


def open_due_windows(session: Session) -> list[str]:
    """Send `takedown.restore_window_opened` for each window due, one transaction each (they
    take the audit chain's lock). Returns the takedowns told."""
    due = list(session.scalars(select(Takedown.id).where(Takedown.restore_window_at <= utcnow())
                               .order_by(Takedown.restore_window_at)))
    session.rollback()
    opened = []
    for takedown_id in due:
        takedown = lock_for_change(session, get(session, takedown_id))
        if takedown.restore_window_at is None or takedown.restore_window_at > utcnow():
            session.rollback()  # a suit shut it, or another sweep told it meanwhile
            continue
        counter = {**takedown.legal["counter_notice"], "window_opened_at": utcnow().isoformat()}
        _tell(session, takedown, counter, "takedown.restore_window_opened",
              {"restore_window": counter["restore_window"]})
        takedown.restore_window_at = None
        session.commit()
        opened.append(takedown_id)
    return opened


def _tell(session: Session, takedown: Takedown, counter: dict[str, Any], event: str,
          audited: dict[str, Any]) -> None:
    from app.services import webhooks  # late: webhooks imports the takedown schemas

    takedown.legal = {**takedown.legal, "counter_notice": counter}
    audit.record(session, event, "takedown", takedown.id, audited)
    webhooks.enqueue_for_takedown(session, takedown, event)
