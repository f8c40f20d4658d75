"""The transparency report: what EU DSA Art. 15(1)(b) asks a provider to publish about the
notices it received in a period — how many, of which type, what was done, how many were
decided by automated means, and the median time to deal with them; and the takedown register
as CSV, one row a takedown."""

from __future__ import annotations

import csv
import io
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Takedown, TakedownEvent
from app.db.types import utcnow
from app.schemas.takedowns import Outcome
from app.services.takedowns import TakedownFilter, filtered, is_overdue, list_page
from app.states import TERMINAL, State

OUTCOMES = (*get_args(Outcome), "undecided")
ENDED = {state.value for state in TERMINAL}


def report(session: Session, window: TakedownFilter) -> dict[str, Any]:
    """Takedowns received in [window.since, window.until) (every one when unbounded), as they
    stand now."""
    since, until = window.since, window.until
    rows = session.execute(filtered(session, select(
        Takedown.id, Takedown.legal_basis, Takedown.kind, Takedown.state, Takedown.decision,
        Takedown.legal, Takedown.created_at, Takedown.due_at), window)).all()
    ended_at = _ended_at(session, [r.id for r in rows if r.state in ENDED])
    now = utcnow()
    by_basis: dict[str, list[Any]] = {}
    for row in rows:
        by_basis.setdefault(row.legal_basis, []).append(row)
    return {
        "period": {"since": since.isoformat() if since else None,
                   "until": until.isoformat() if until else None},
        "notices": len(rows),
        "by_legal_basis": {basis: {"notices": len(group), **_outcomes(group),
                                   "median_hours_to_erasure": _median_hours(
                                       _erased(group), ended_at),
                                   "median_hours_to_end": _median_hours(group, ended_at)}
                           for basis, group in sorted(by_basis.items())},
        "by_kind": dict(sorted(Counter(r.kind for r in rows).items())),
        "by_state": dict(Counter(r.state for r in rows)),
        "decisions": _outcomes(rows),
        "decided_by_automated_means": sum(1 for r in rows if r.decision and
                                          r.decision["automated"]),
        "decided_by_a_person": sum(1 for r in rows if r.decision and
                                   not r.decision["automated"]),
        "median_hours_to_erasure": _median_hours(_erased(rows), ended_at),
        "median_hours_to_end": _median_hours(rows, ended_at),
        "rescinded": sum(1 for r in rows if (r.legal or {}).get("rescinded")),
        "counter_notices": sum(1 for r in rows if (r.legal or {}).get("counter_notice")),
        "open_overdue": sum(1 for r in rows if is_overdue(r.state, r.due_at, now)),
        "ended_after_due": sum(1 for r in rows if r.id in ended_at and
                               ended_at[r.id] > r.due_at),
    }


def _ended_at(session: Session, ids: list[str]) -> dict[str, datetime]:
    """When each ended takedown reached its terminal state, from its event log."""
    ended: dict[str, datetime] = {}
    for start in range(0, len(ids), 500):  # bounded IN lists
        events = session.execute(
            select(TakedownEvent.takedown_id, TakedownEvent.data, TakedownEvent.created_at)
            .where(TakedownEvent.takedown_id.in_(ids[start:start + 500]),
                   TakedownEvent.type == "state").order_by(TakedownEvent.id))
        for takedown_id, data, at in events:
            if data.get("state") in ENDED and takedown_id not in ended:
                ended[takedown_id] = at
    return ended


def _erased(rows: Sequence[Any]) -> list[Any]:
    return [r for r in rows if r.state == State.COMPLETED.value]


def _outcomes(rows: Sequence[Any]) -> dict[str, int]:
    counts = Counter((r.decision or {}).get("outcome", "undecided") for r in rows)
    return {outcome: counts[outcome] for outcome in OUTCOMES}


def _median_hours(rows: Sequence[Any], ended_at: dict[str, datetime]) -> float | None:
    """Median time from receipt to the end of `rows` (those that ended)."""
    hours = [(ended_at[r.id] - r.created_at).total_seconds() / 3600
             for r in rows if r.id in ended_at]
    return round(statistics.median(hours), 4) if hours else None


REGISTER_COLUMNS = ("id", "received_at", "model_id", "concept", "kind", "legal_basis", "state",
                    "due_at", "overdue", "ended_at", "outcome", "automated", "decided_at",
                    "version_id", "external_ref", "integration", "priority", "rescinded",
                    "counter_notice")


def register_csv(session: Session, where: TakedownFilter) -> str:
    """The takedowns `where` picks, newest first, as CSV: no claimant's or counter-notifier's
    name or contact (the file travels by email and spreadsheet; `concept` is the name the
    notice gave, a person's for a person), and no cell a spreadsheet would run as a formula."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REGISTER_COLUMNS)
    now, cursor = utcnow(), None
    while True:
        page, cursor = list_page(session, where, cursor=cursor, limit=REGISTER_PAGE)
        ended_at = _ended_at(session, [td.id for td in page if td.state in ENDED])
        for td in page:
            writer.writerow([_cell(v) for v in _register_row(td, ended_at.get(td.id), now)])
        session.commit()  # a page at a time: SQLite's write lock is not held for the export
        if cursor is None:
            return out.getvalue()


def _register_row(td: Takedown, ended: datetime | None, now: datetime) -> list[Any]:
    decision, legal = td.decision or {}, td.legal or {}
    return [td.id, td.created_at.isoformat(), td.model_id, td.concept, td.kind, td.legal_basis,
            td.state, td.due_at.isoformat(), is_overdue(td.state, td.due_at, now),
            ended.isoformat() if ended else None, decision.get("outcome"),
            decision.get("automated"), decision.get("decided_at"), td.version_id,
            td.external_ref, td.integration, td.priority, bool(legal.get("rescinded")),
            bool(legal.get("counter_notice"))]


def _cell(value: Any) -> str:
    """A CSV cell. Text a spreadsheet would take for a formula gets an apostrophe before it
    (OWASP's CSV injection advice): at its start (=, +, -, @, tab, CR), and after a `;` or a
    tab, where a spreadsheet that splits on those (many European locales) starts a cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return FORMULA.sub(r"\1'\2", str(value))


FORMULA = re.compile(r"(^|[;\t])([=+\-@\t\r])")
REGISTER_PAGE = 500  # takedowns read a transaction
