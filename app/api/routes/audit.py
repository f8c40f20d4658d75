from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import AuditRead, SessionDep
from app.schemas.compliance import AuditEventOut, AuditPage, AuditVerification
from app.services import audit

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=AuditPage)
def list_audit(
    session: SessionDep, _: AuditRead,
    action: Annotated[str | None, Query(max_length=60)] = None,
    target_id: Annotated[str | None, Query(max_length=200)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    since: datetime | None = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """Oldest first; pass `after=<next_after>` for the next page."""
    rows, next_after = audit.list_page(session, action=action, target_id=target_id, actor=actor,
                                       since=since, after=after, limit=limit)
    return AuditPage(items=[AuditEventOut.model_validate(r) for r in rows], next_after=next_after)


@router.get("/verify", response_model=AuditVerification)
def verify_audit(session: SessionDep, _: AuditRead) -> AuditVerification:
    """Recompute the chain: ok, or the first row whose hash or link breaks."""
    result = audit.verify(session)
    return AuditVerification(ok=result.ok, rows=result.rows, head=result.head,
                             first_bad_seq=result.first_bad_seq, reason=result.reason)
