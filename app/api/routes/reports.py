"""Reports a compliance team publishes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime

from app.api.deps import SessionDep, TakedownsRead
from app.errors import InvalidInput
from app.schemas.compliance import TransparencyReport
from app.schemas.takedowns import LegalBasis
from app.services import transparency
from app.services.takedowns import TakedownFilter
from app.states import State

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


@router.get("/takedowns.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {}}}})
def takedown_register(
    session: SessionDep, _: TakedownsRead,
    state: State | None = None,
    model: str | None = None,
    overdue: bool | None = None,
    legal_basis: LegalBasis | None = None,
    concept: Annotated[str | None, Query(max_length=200)] = None,
    external_ref: Annotated[str | None, Query(max_length=200)] = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
) -> Response:
    """The takedown register as CSV, newest first, filtered as `GET /v1/takedowns` is: one
    row a takedown with its dates, state, decision and version; no personal data."""
    where = TakedownFilter(state, model, overdue, legal_basis, concept, external_ref, since,
                           until)
    return Response(transparency.register_csv(session, where), media_type="text/csv",
                    headers={"Content-Disposition":
                             'attachment; filename="lethe-takedowns.csv"'})
