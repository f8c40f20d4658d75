"""The decision on a notice and its statement of reasons (EU DSA Art. 17(3)): what was decided,
on which facts, whether automated means decided it, the legal ground, and the redress open.

A takedown that ends `completed` or `rejected` is decided automatically; a reviewer may record
a decision of their own on any ended takedown (`review`). Each decision is audited and sent as
a `takedown.decided` webhook; the audit log keeps every earlier one."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.db.models import Model, Takedown
from app.db.types import utcnow
from app.errors import Conflict
from app.services import audit
from app.settings import get_settings
from app.states import State, is_terminal

OUTCOMES = ("accepted", "rejected", "partial")


def decide_automatically(session: Session, takedown: Takedown, state: State) -> None:
    """The decision a takedown's end implies: erased (accepted) or refused at intake."""
    if state == State.COMPLETED:
        _decide(session, takedown, "accepted", _erased_statement(session, takedown),
                automated=True, by="system")
    elif state == State.REJECTED:
        detail = (takedown.error or {}).get("detail", "the request was refused")
        _decide(session, takedown, "rejected", f"Not actioned: {detail}.", automated=True,
                by="system")


def review(session: Session, takedown: Takedown, outcome: str, statement: str) -> Takedown:
    """A person's decision on an ended takedown; it replaces the current one."""
    if not is_terminal(takedown.state):
        raise Conflict(f"takedown {takedown.id} is {takedown.state}: decide once it has ended, "
                       "when what was done is known")
    _decide(session, takedown, outcome, statement, automated=False,
            by=audit.actor_of(session))
    return takedown


def _decide(session: Session, takedown: Takedown, outcome: str, statement: str, *,
            automated: bool, by: str) -> None:
    decision: dict[str, Any] = {
        "outcome": outcome, "statement_of_reasons": statement, "automated": automated,
        "decided_by": by, "decided_at": utcnow().isoformat(),
        "legal_basis": takedown.legal_basis, "redress": get_settings().redress_info}
    takedown.decision = decision
    audit.record(session, "takedown.decided", "takedown", takedown.id,
                 {"outcome": outcome, "automated": automated, "decided_by": by})
    from app.services import webhooks  # late: webhooks imports the takedown schemas

    webhooks.enqueue_for_takedown(session, takedown, "takedown.decided")


def _erased_statement(session: Session, takedown: Takedown) -> str:
    model = session.get(Model, takedown.model_id)
    name = model.name if model else takedown.model_id
    result = takedown.result or {}
    number = result.get("version_number")
    covered = (result.get("covered_by") or {}).get(takedown.concept)
    how = (f"it was erased already by the earlier erasure of {', '.join(map(repr, covered))}, "
           f"which version {number} keeps" if covered else
           f"version {number}, trained not to draw it, passed the evaluation gate")
    return (f"{takedown.concept!r} ({takedown.kind}) is removed from model {name!r} under "
            f"{takedown.legal_basis}: {how} and is in production. Decided by automated means "
            "on the notice as filed; no person reviewed it.")
