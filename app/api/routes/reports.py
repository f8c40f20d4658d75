"""Reports a compliance team publishes."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import AwareDatetime

from app.api.deps import SessionDep, TakedownsRead
from app.errors import InvalidInput
from app.schemas.compliance import TransparencyReport
from app.services import transparency

router = APIRouter(prefix="/reports", tags=["compliance"])


@router.get("/transparency", response_model=TransparencyReport)
def transparency_report(session: SessionDep, _: TakedownsRead,
                        since: AwareDatetime | None = None,
                        until: AwareDatetime | None = None) -> TransparencyReport:
    """Notices received in [since, until) (all when unbounded), as they stand now: counts by
    legal basis, kind and state; decisions by outcome, automated or by a person; median hours
    from receipt to the end (EU DSA Art. 15(1)(b)); rescinded, counter-noticed, overdue."""
    if since and until and since >= until:
        raise InvalidInput("since must be before until", field="since")
    return TransparencyReport.model_validate(transparency.report(session, since, until))
