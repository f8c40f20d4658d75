from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response, status

from app.api.deps import ModelsAdmin, SessionDep, SettingsDep, TakedownsWrite
from app.api.routes.takedowns import takedown_out
from app.schemas.compliance import (
    DeliveryOut,
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionOut,
)
from app.schemas.takedowns import TakedownOut
from app.services import takedowns, tickets, webhooks

router = APIRouter(tags=["integrations"])


@router.post("/integrations/{name}/webhook", status_code=status.HTTP_202_ACCEPTED,
             response_model=TakedownOut)
def ticket_webhook(name: str, session: SessionDep, settings: SettingsDep, response: Response,
                   _: TakedownsWrite,
                   payload: dict[str, Any] = Body(...)) -> TakedownOut:  # noqa: B008
    """A ticket system's issue webhook becomes a takedown (retries return the first one)."""
    body = tickets.adapter(name).to_takedown(payload)
    td = takedowns.submit(session, settings, body)
    response.headers["Location"] = f"/v1/takedowns/{td.id}"
    if takedowns.is_existing(td):
        response.status_code = status.HTTP_200_OK
    return takedown_out(td)


@router.post("/webhooks", status_code=status.HTTP_201_CREATED, response_model=SubscriptionCreated)
def subscribe(body: SubscriptionCreate, session: SessionDep, settings: SettingsDep,
              _: ModelsAdmin) -> SubscriptionCreated:
    """A global subscription; its `whsec_` secret is shown once."""
    row = webhooks.create_subscription(session, settings, str(body.url), body.events)
    session.commit()
    return SubscriptionCreated(**SubscriptionOut.model_validate(row).model_dump(),
                               secret=row.secret)


@router.get("/webhooks/deliveries", response_model=list[DeliveryOut])
def list_deliveries(
    session: SessionDep, _: ModelsAdmin, takedown_id: str | None = None,
    state: Literal["pending", "delivered", "failed"] | None = None,
    before: Annotated[str | None, Query(max_length=36, description=(
        "the last delivery id of the previous page: the next page starts after it"))] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[DeliveryOut]:
    """The delivery log, newest first, with every attempt."""
    return [DeliveryOut.model_validate(d) for d in webhooks.list_deliveries(
        session, takedown_id=takedown_id, state=state, before=before, limit=limit)]


@router.post("/webhooks/deliveries/{delivery_id}/redeliver", response_model=DeliveryOut)
def redeliver(delivery_id: str, session: SessionDep, _: ModelsAdmin) -> DeliveryOut:
    delivery = webhooks.redeliver(session, delivery_id)
    session.commit()
    return DeliveryOut.model_validate(delivery)
