from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import HTMLResponse
from pydantic import AwareDatetime
from sse_starlette.sse import EventSourceResponse

from app.api.deps import ModelsAdmin, SessionDep, SettingsDep, TakedownsRead, TakedownsWrite
from app.db.models import Takedown
from app.db.session import get_sessionmaker
from app.db.types import utcnow
from app.schemas.takedowns import (
    CopySentIn,
    CounterNoticeIn,
    Decision,
    DecisionIn,
    ExtensionIn,
    LegalBasis,
    Progress,
    RescindIn,
    SuitIn,
    TakedownCreate,
    TakedownOut,
    TakedownPage,
    TakedownResult,
)
from app.services import counter_notices, decisions, evidence, takedowns
from app.services.events import events_after
from app.states import TERMINAL, State

router = APIRouter(prefix="/takedowns", tags=["takedowns"])
POLL_SECONDS = 0.25


def takedown_out(td: Takedown) -> TakedownOut:
    state = State(td.state)
    return TakedownOut(
        id=td.id, model_id=td.model_id, job_id=td.job_id, state=state, concept=td.concept,
        kind=td.kind, legal_basis=td.legal_basis, claimant=td.claimant,  # type: ignore[arg-type]
        external_ref=td.external_ref, integration=td.integration, legal=td.legal or {},
        prompts=td.prompts, neighbors=td.neighbors,
        due_at=td.due_at, overdue=takedowns.is_overdue(td.state, td.due_at, utcnow()),
        priority=td.priority, callback_url=td.callback_url, cancel_requested=td.cancel_requested,
        progress=Progress.model_validate(td.progress) if td.progress else None,
        result=TakedownResult.model_validate(td.result) if td.result else None,
        error=td.error, created_at=td.created_at, updated_at=td.updated_at,
        decision=Decision.model_validate(td.decision) if td.decision else None,
    )


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=TakedownOut,
             responses={200: {"model": TakedownOut, "description": "ticket filed before"}})
def submit_takedown(body: TakedownCreate, session: SessionDep, settings: SettingsDep,
                    response: Response, _: TakedownsWrite) -> TakedownOut:
    """202 for a new takedown; 200 with the first one when the (integration, external_ref)
    ticket was filed before."""
    td = takedowns.submit(session, settings, body)
    response.headers["Location"] = f"/v1/takedowns/{td.id}"
    if takedowns.is_existing(td):
        response.status_code = status.HTTP_200_OK
    return takedown_out(td)


@router.get("/{takedown_id}/report", response_model=None,
            responses={200: {"content": {"application/json": {}, "text/html": {}}}})
def evidence_report(takedown_id: str, session: SessionDep, request: Request,
                    _: TakedownsRead, format: Literal["json", "html"] = "json"
                    ) -> dict[str, Any] | HTMLResponse:
    """Evidence of erasure: legal record, targets, metrics, version digests, sample images
    (where rendered), audit entries. `?format=html` for a page a person can read."""
    data = evidence.report(session, takedowns.get(session, takedown_id),
                           str(request.base_url).rstrip("/"))
    return HTMLResponse(evidence.report_html(data)) if format == "html" else data


@router.post("/{takedown_id}/extend", response_model=TakedownOut)
def extend_deadline(takedown_id: str, body: ExtensionIn, session: SessionDep,
                    _: TakedownsWrite) -> TakedownOut:
    """Extend a GDPR deadline once by one or two months, recording the reason."""
    return takedown_out(takedowns.extend(session, takedown_id, body.months, body.reason))


@router.post("/{takedown_id}/rescind", response_model=TakedownOut)
def rescind_takedown(takedown_id: str, body: RescindIn, session: SessionDep,
                     _: TakedownsWrite) -> TakedownOut:
    """The claimant withdrew the notice (409 if recorded already). Not started: cancelled;
    running: flagged as a cancel flags it; ended: recorded in `legal.rescinded` only. An
    erasure made stays until an operator moves `production`."""
    return takedown_out(takedowns.rescind(session, takedown_id, body.reason))


@router.post("/{takedown_id}/counter-notice", response_model=TakedownOut)
def counter_notice(takedown_id: str, body: CounterNoticeIn, session: SessionDep,
                   _: TakedownsWrite) -> TakedownOut:
    """A DMCA counter-notice (17 USC 512(g)(3)) against a completed dmca takedown (409 for
    another basis, one not completed, a rescinded notice, or a second one). Recorded in
    `legal.counter_notice` with its restore window (10 to 14 business days from
    `received_at`) and sent as `takedown.counter_noticed`: whole to the `callback_url`, the
    filer's system that sends the claimant its copy; subscriptions get its dates. Once the
    copy is recorded as sent (`…/copy-sent`), the window opens and no suit is filed,
    `takedown.restore_window_opened` follows. The erasure stands until an operator moves
    `production`."""
    return takedown_out(counter_notices.receive(session, takedown_id, body))


@router.post("/{takedown_id}/counter-notice/copy-sent", response_model=TakedownOut)
def counter_notice_copy_sent(takedown_id: str, body: CopySentIn, session: SessionDep,
                             _: TakedownsWrite) -> TakedownOut:
    """The claimant was sent its copy of the counter-notice (512(g)(2)(B)): the restore
    window can open. 409 with no counter-notice, or a copy already recorded; 422 for a
    `sent_at` in the future or before the counter-notice was received."""
    return takedown_out(counter_notices.record_copy_sent(session, takedown_id, body))


@router.post("/{takedown_id}/counter-notice/suit", response_model=TakedownOut)
def suit_filed(takedown_id: str, body: SuitIn, session: SessionDep,
               _: TakedownsWrite) -> TakedownOut:
    """The claimant filed an action seeking a court order (512(g)(2)(C)): the restore window
    never opens. 409 with no counter-notice, or a suit recorded already."""
    return takedown_out(counter_notices.record_suit(session, takedown_id, body))


@router.post("/{takedown_id}/decision", response_model=TakedownOut)
def decide(takedown_id: str, body: DecisionIn, session: SessionDep,
           _: ModelsAdmin) -> TakedownOut:
    """A reviewer's decision and statement of reasons on an ended takedown (409 before it
    ends; `accepted` and `partial` need it completed). It replaces the current one; the audit
    log keeps both; `takedown.decided` fires. models:admin: the provider decides, not a key
    that files notices."""
    td = decisions.review(session, takedowns.get(session, takedown_id), body.outcome,
                          body.statement_of_reasons)
    session.commit()
    return takedown_out(td)


def takedown_filter(
    state: State | None = None,
    model: str | None = None,
    overdue: bool | None = None,
    legal_basis: LegalBasis | None = None,
    concept: Annotated[str | None, Query(max_length=200)] = None,
    external_ref: Annotated[str | None, Query(max_length=200)] = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
) -> takedowns.TakedownFilter:
    """The query parameters a takedown listing (or the CSV register) is filtered by."""
    return takedowns.TakedownFilter(state, model, overdue, legal_basis, concept, external_ref,
                                    since, until)


TakedownFilterDep = Annotated[takedowns.TakedownFilter, Depends(takedown_filter)]


@router.get("", response_model=TakedownPage)
def list_takedowns(
    session: SessionDep,
    _: TakedownsRead,
    where: TakedownFilterDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TakedownPage:
    """Newest first, by any of: state, model, overdue, legal basis, concept (the whole name,
    any case), ticket (`external_ref`), received in [since, until)."""
    rows, next_cursor = takedowns.list_page(session, where, cursor=cursor, limit=limit)
    return TakedownPage(items=[takedown_out(td) for td in rows], next_cursor=next_cursor)


@router.get("/{takedown_id}", response_model=TakedownOut)
def get_takedown(takedown_id: str, session: SessionDep, _: TakedownsRead) -> TakedownOut:
    return takedown_out(takedowns.get(session, takedown_id))


@router.post("/{takedown_id}/cancel", status_code=status.HTTP_202_ACCEPTED,
             response_model=TakedownOut)
def cancel_takedown(takedown_id: str, session: SessionDep, _: TakedownsWrite) -> TakedownOut:
    return takedown_out(takedowns.cancel(session, takedown_id))


@router.get("/{takedown_id}/events", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
def stream_events(
    takedown_id: str, request: Request, _: TakedownsRead,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """Replays stored events after Last-Event-ID, then follows live until a terminal state."""
    # A short session of its own: a request-scoped one would stay open for the whole stream.
    with get_sessionmaker()() as session:
        takedowns.get(session, takedown_id)  # 404 before the stream starts
    after = int(last_event_id) if last_event_id and re.fullmatch(r"[0-9]{1,18}", last_event_id) \
        else 0
    return EventSourceResponse(_events(takedown_id, after, request), ping=15,
                               headers={"X-Accel-Buffering": "no"})


async def _events(takedown_id: str, after: int, request: Request) -> AsyncIterator[dict[str, Any]]:
    while not await request.is_disconnected():
        rows, state = await asyncio.to_thread(_read_events, takedown_id, after)
        for event_id, type_, data in rows:
            after = event_id
            yield {"id": str(event_id), "event": type_, "data": json.dumps(data)}
        if state in TERMINAL and not rows:
            return
        await asyncio.sleep(POLL_SECONDS)


def _read_events(takedown_id: str, after: int) -> tuple[list[tuple[int, str, Any]], State]:
    """The events after `after` and the state, the state read first: each query sees the
    commits before it, so a step ending between the two would otherwise read as ended with
    its last events unread, and the stream closed without them."""
    with get_sessionmaker()() as session:
        state = State(takedowns.get(session, takedown_id).state)
        rows = [(e.id, e.type, e.data) for e in events_after(session, takedown_id, after)]
    return rows, state
