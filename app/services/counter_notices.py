"""DMCA counter-notices (17 USC 512(g)): the person whose material an erasure removed says it
was removed by mistake. The provider sends the claimant a copy, and may restore the material
10 to 14 business days after receiving the counter-notice, unless the claimant first says it
filed suit.

Lethe records the counter-notice in `legal.counter_notice` and sends it whole to the
takedown's `callback_url` (`takedown.counter_noticed`): the filer's system, which sends the
claimant its copy and says so (`record_copy_sent`). Once ten business days have passed, the
copy has been sent and no suit is filed, the reconciler sends
`takedown.restore_window_opened` (a suit, `takedown.suit_filed`, keeps it shut), and after
fourteen `takedown.restore_window_closed`, saying whether production was restored (draws the
concept again). Business days are US federal ones (services/business_days.py). Lethe does
not restore by itself: undoing an erasure undoes every later version built on it, so it stays
an operator's audited move of `production`, as for a rescinded notice."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Takedown
from app.db.types import utcnow
from app.errors import Conflict, InvalidInput
from app.schemas.takedowns import CopySentIn, CounterNoticeIn, LegalBasis, SuitIn
from app.services import audit
from app.services.business_days import business_days_after
from app.services.catalog import erases
from app.services.registry import PRODUCTION, alias_target
from app.services.takedowns import get, lock_for_change
from app.settings import get_settings
from app.states import State

log = structlog.get_logger(__name__)
RESTORE_NOT_BEFORE, RESTORE_NOT_AFTER = 10, 14  # business days, 512(g)(2)(C)


def receive(session: Session, takedown_id: str, body: CounterNoticeIn) -> Takedown:
    """Record a counter-notice against a completed DMCA takedown and send it on."""
    takedown = lock_for_change(session, get(session, takedown_id))
    if takedown.legal_basis != LegalBasis.DMCA.value:
        raise Conflict(f"takedown {takedown.id} was filed under {takedown.legal_basis}: a "
                       "counter-notice answers a dmca notice (17 USC 512(g))")
    if takedown.state != State.COMPLETED.value:
        raise Conflict(f"takedown {takedown.id} is {takedown.state}: a counter-notice answers "
                       "an erasure made, and none was")
    if rescinded := takedown.legal.get("rescinded"):
        raise Conflict(f"the notice was rescinded at {rescinded['at']}: there is no claim "
                       "left to counter")
    if done := takedown.legal.get("counter_notice"):
        raise Conflict(f"a counter-notice was received already at {done['received_at']}")
    received = _not_future(body.received_at, "received_at") or utcnow()
    if received < takedown.created_at:
        raise InvalidInput("received_at is before the notice it answers was filed",
                           field="received_at")
    zone = get_settings().business_timezone
    opens = business_days_after(received, RESTORE_NOT_BEFORE, zone)
    record: dict[str, Any] = {
        "received_at": received.isoformat(), "by": audit.actor_of(session),
        "counter_notifier": {"name": body.name, "email": body.email, "address": body.address,
                             "phone": body.phone},
        "material_identification": body.material_identification,
        "mistake_statement": body.mistake_statement,
        "consent_to_jurisdiction": body.consent_to_jurisdiction,
        "signature": body.signature.model_dump(mode="json"),
        "restore_window": {"opens": opens.isoformat(), "closes": business_days_after(
            received, RESTORE_NOT_AFTER, zone).isoformat(), "zone": zone},
        "claimant_copy": None, "suit": None, "window_opened_at": None, "late": None,
        "window_closed_at": None, "restored": None}
    takedown.legal = {**takedown.legal, "counter_notice": record}
    # Not the counter-notifier's personal data: the audit chain can never be erased.
    _tell(session, takedown, "takedown.counter_noticed",
          {"received_at": record["received_at"], "restore_window": record["restore_window"]})
    session.commit()  # the window waits for the claimant's copy (`record_copy_sent`)
    return takedown


def record_copy_sent(session: Session, takedown_id: str, body: CopySentIn) -> Takedown:
    """The claimant was sent its copy (512(g)(2)(B)): the restore window may open."""
    takedown = lock_for_change(session, get(session, takedown_id))
    counter = _counter_notice(takedown)
    if copy := counter.get("claimant_copy"):
        raise Conflict(f"the claimant's copy was sent already at {copy['sent_at']}")
    _not_future(body.sent_at, "sent_at")
    sent = body.sent_at
    if sent < datetime.fromisoformat(counter["received_at"]):
        raise InvalidInput("sent_at is before the counter-notice was received",
                           field="sent_at")
    copy = {"via": body.via, "sent_at": sent.isoformat(), "recorded_by": audit.actor_of(session)}
    _set(takedown, claimant_copy=copy)
    audit.record(session, "takedown.counter_notice_copy_sent", "takedown", takedown.id,
                 {"sent_at": copy["sent_at"]})  # `via` may name a person: not in the chain
    if counter["suit"] is None:
        takedown.restore_window_at = datetime.fromisoformat(counter["restore_window"]["opens"])
    session.commit()
    return takedown


def record_suit(session: Session, takedown_id: str, body: SuitIn) -> Takedown:
    """The claimant filed an action seeking a court order: the window never opens."""
    takedown = lock_for_change(session, get(session, takedown_id))
    counter = _counter_notice(takedown)
    if counter["suit"]:
        raise Conflict(f"a suit was recorded already: {counter['suit']['court']}, "
                       f"{counter['suit']['case_number']}")
    _not_future(body.filed_at, "filed_at")
    suit = {**body.model_dump(mode="json"), "recorded_at": utcnow().isoformat(),
            "by": audit.actor_of(session)}
    _set(takedown, suit=suit)
    _tell(session, takedown, "takedown.suit_filed", suit)
    takedown.restore_window_at = None
    session.commit()
    return takedown


def sweep_restore_windows(session: Session) -> tuple[list[str], list[str]]:
    """Tell each restore window due: `takedown.restore_window_opened` once its claimant's
    copy was sent and no suit filed, then `takedown.restore_window_closed` when it closes,
    saying whether production draws the concept again (`restored`). One opened after it
    closed (the copy went out late) says so, `late`, and closes at once. One transaction a
    takedown (they take the audit chain's lock). Returns the takedowns opened and closed."""
    due = list(session.scalars(select(Takedown.id).where(Takedown.restore_window_at <= utcnow())
                               .order_by(Takedown.restore_window_at)))
    session.rollback()
    opened: list[str] = []
    closed: list[str] = []
    for takedown_id in due:
        try:
            told = _tell_window(session, takedown_id)
        except Exception:  # one bad record must not hold back every later window
            session.rollback()
            log.exception("restore_window.sweep_failed", takedown=takedown_id)
            continue
        opened += [takedown_id] if "opened" in told else []
        closed += [takedown_id] if "closed" in told else []
    return opened, closed


def _tell_window(session: Session, takedown_id: str) -> list[str]:
    """Open and/or close one takedown's window, if due, in one transaction: what it told."""
    takedown = lock_for_change(session, get(session, takedown_id))
    now = utcnow()
    if takedown.restore_window_at is None or takedown.restore_window_at > now:
        session.rollback()  # a suit shut it, or another sweep told it meanwhile
        return []
    told = []
    counter = takedown.legal["counter_notice"]
    window = counter["restore_window"]
    closes = datetime.fromisoformat(window["closes"])
    if counter["window_opened_at"] is None:
        # Late when the claimant's copy went out after the window closed, not when the
        # sweep itself runs behind.
        sent = (counter.get("claimant_copy") or {}).get("sent_at")  # older records: none
        late = (datetime.fromisoformat(sent) if sent else now) >= closes
        _set(takedown, window_opened_at=now.isoformat(), late=late)
        _tell(session, takedown, "takedown.restore_window_opened",
              {"restore_window": window, "late": late})
        told.append("opened")
    if now >= closes:
        restored = _production_draws(session, takedown)
        _set(takedown, window_closed_at=now.isoformat(), restored=restored)
        _tell(session, takedown, "takedown.restore_window_closed",
              {"restore_window": window, "restored": restored})
        told.append("closed")
    takedown.restore_window_at = None if now >= closes else closes
    session.commit()
    return told


def _production_draws(session: Session, takedown: Takedown) -> bool:
    """Whether the model's production version draws the takedown's concept again: an
    operator restored the material (moved production to a version without the erasure)."""
    production = alias_target(session, takedown.model_id, PRODUCTION)
    return production is not None and not erases(production.erased, takedown.concept)


def _counter_notice(takedown: Takedown) -> dict[str, Any]:
    counter = takedown.legal.get("counter_notice")
    if counter is None:
        raise Conflict(f"takedown {takedown.id} has no counter-notice")
    return dict(counter)


def _set(takedown: Takedown, **fields: Any) -> None:
    """Change fields of `legal.counter_notice` (a new dict, so the JSON column is saved)."""
    takedown.legal = {**takedown.legal,
                      "counter_notice": {**takedown.legal["counter_notice"], **fields}}


def _not_future(at: datetime | None, field: str) -> datetime | None:
    if at is not None and at > utcnow() + timedelta(minutes=5):  # clocks drift a little
        raise InvalidInput(f"{field} is in the future", field=field)
    return at


def _tell(session: Session, takedown: Takedown, event: str, audited: dict[str, Any]) -> None:
    """Audit `event` with `audited` and send it as a webhook."""
    from app.services import webhooks  # late: webhooks imports the takedown schemas

    audit.record(session, event, "takedown", takedown.id, audited)
    webhooks.enqueue_for_takedown(session, takedown, event)
