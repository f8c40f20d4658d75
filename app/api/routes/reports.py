"""Reports a compliance team publishes."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import AwareDatetime

from app.api.deps import SessionDep, TakedownsRead
from app.api.routes.takedowns import TakedownFilterDep
from app.schemas.compliance import TransparencyReport
from app.services import transparency
from app.services.takedowns import TakedownFilter

router = APIRouter(prefix="/reports", tags=["compliance"])


@router.get("/transparency", response_model=TransparencyReport)
def transparency_report(session: SessionDep, _: TakedownsRead,
                        since: AwareDatetime | None = None,
                        until: AwareDatetime | None = None) -> TransparencyReport:
    """Notices received in [since, until) (all when unbounded), as they stand now: counts by
    legal basis, kind and state; decisions by outcome, automated or by a person; median hours
    from receipt to the end (EU DSA Art. 15(1)(b)); rescinded, counter-noticed, overdue."""
    window = TakedownFilter(since=since, until=until)
    return TransparencyReport.model_validate(transparency.report(session, window))


@router.get("/takedowns.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {}}}})
def takedown_register(session: SessionDep, _: TakedownsRead,
                      where: TakedownFilterDep) -> Response:
    """The takedown register as CSV, newest first, filtered as `GET /v1/takedowns` is: one
    row a takedown with its dates, state, decision and version; no claimant's name or
    contact."""
    return Response(transparency.register_csv(session, where), media_type="text/csv",
                    headers={"Content-Disposition":
                             'attachment; filename="lethe-takedowns.csv"'})
