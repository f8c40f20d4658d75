"""The decision on a notice and its statement of reasons (EU DSA Art. 17(3)): what was decided,
on which facts, whether automated means decided it, the legal ground, and the redress open.

A takedown that ends `completed` or `rejected` is decided automatically; a reviewer may record
a decision of their own on any ended takedown (`review`). Each decision is audited whole (the
audit log keeps every earlier one) and sent as a `takedown.decided` webhook."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.db.models import Model, Takedown
from app.db.types import utcnow
from app.errors import Conflict
from app.services import audit
from app.services.catalog import normalise_concept
from app.settings import get_settings
from app.states import State, is_terminal


def decide_automatically(session: Session, takedown: Takedown, state: State) -> bool:
    """The decision a takedown's end implies: erased (accepted) or refused at intake. Returns
    whether it decided; the caller sends `takedown.decided` after the state's own event."""
    if state == State.COMPLETED:
        statement = _erased_statement(session, takedown)
        _decide(session, takedown, "accepted", statement, automated=True, by="system")
    elif state == State.REJECTED:
        detail = (takedown.error or {}).get("detail", "the request was refused")
        _decide(session, takedown, "rejected", f"Not actioned: {detail}.", automated=True,
                by="system")
    else:
        return False
    return True


def review(session: Session, takedown: Takedown, outcome: str, statement: str) -> Takedown:
    """A person's decision on an ended takedown; it replaces the current one. `accepted` and
    `partial` say something was erased, so they need a completed takedown."""
    from app.services.takedowns import lock_for_change  # late: takedowns imports events

    lock_for_change(session, takedown)
    if not is_terminal(takedown.state):
        raise Conflict(f"takedown {takedown.id} is {takedown.state}: decide once it has ended, "
                       "when what was done is known")
    if outcome != "rejected" and takedown.state != State.COMPLETED.value:
        raise Conflict(f"takedown {takedown.id} ended {takedown.state}, erasing nothing: it "
                       f"cannot be decided {outcome!r} (file it again, or reject it)")
    _decide(session, takedown, outcome, statement, automated=False,
            by=audit.actor_of(session))
    from app.services import webhooks  # late: webhooks imports the takedown schemas

    webhooks.enqueue_for_takedown(session, takedown, "takedown.decided")
    return takedown


def redress_for(legal_basis: str) -> str:
    """How a decision under `legal_basis` can be contested: LETHE_REDRESS_INFO's entry for
    the basis, else its `default`, else ours."""
    configured = get_settings().redress_info
    return configured.get(legal_basis) or configured.get("default") \
        or REDRESS.get(legal_basis, REDRESS["default"])


REDRESS = {
    "dmca": "The person whose material was affected may send a counter-notice under 17 U.S.C. "
            "512(g); the claimant may contest this decision through the provider's complaint "
            "channel or in court.",
    "gdpr_art17": "You may contest this decision through the provider's complaint channel, "
                  "lodge a complaint with a data protection supervisory authority (GDPR "
                  "Art. 77) or go to court (Art. 79).",
    "dsa_art16": "You may contest this decision through the provider's internal complaint-"
                 "handling system (EU DSA Art. 20), a certified out-of-court dispute settlement "
                 "body (Art. 21), or in court.",
    "default": "You may contest this decision through the provider's complaint channel or in "
               "court.",
}


def _decide(session: Session, takedown: Takedown, outcome: str, statement: str, *,
            automated: bool, by: str) -> None:
    decision: dict[str, Any] = {
        "outcome": outcome, "statement_of_reasons": statement, "automated": automated,
        "decided_by": by, "decided_at": utcnow().isoformat(),
        "legal_basis": takedown.legal_basis, "redress": redress_for(takedown.legal_basis)}
    takedown.decision = decision
    audit.record(session, "takedown.decided", "takedown", takedown.id, decision)


def _erased_statement(session: Session, takedown: Takedown) -> str:
    model = session.get(Model, takedown.model_id)
    name = model.name if model else takedown.model_id
    result = takedown.result or {}
    number = result.get("version_number")
    key = normalise_concept(takedown.concept)  # the engine names it as the catalog does
    covered = next((by for name, by in (result.get("covered_by") or {}).items()
                    if normalise_concept(name) == key), None)
    how = (f"it was erased already by the earlier erasure of {', '.join(map(repr, covered))}, "
           f"which version {number} keeps" if covered else
           f"version {number}, trained not to draw it, passed the evaluation gate")
    return (f"{takedown.concept!r} ({takedown.kind}) is removed from model {name!r} under "
            f"{takedown.legal_basis}: {how} and is in production. It applies wherever the "
            "model is served from this registry, to every later version, without time limit; "
            "earlier versions that still draw it are quarantined. Decided by automated means "
            "on the notice as filed; no person reviewed it.")
