from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response, status

from app.api.deps import SHOWN_ONCE, ModelsAdmin, SessionDep, SettingsDep, TakedownsWrite
from app.api.routes.takedowns import takedown_out
from app.schemas.compliance import (
    DeliveryOut,
    SecretRotation,
    SubscriptionChange,
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


@router.post("/webhooks", status_code=status.HTTP_201_CREATED, response_model=SubscriptionCreated,
             dependencies=[SHOWN_ONCE])
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


# After /webhooks/deliveries: "deliveries" is not a subscription id.
@router.get("/webhooks", response_model=list[SubscriptionOut])
def list_subscriptions(session: SessionDep, _: ModelsAdmin) -> list[SubscriptionOut]:
    """Every subscription, newest first (secrets are never shown again)."""
    return [SubscriptionOut.model_validate(s) for s in webhooks.list_subscriptions(session)]


@router.get("/webhooks/{subscription_id}", response_model=SubscriptionOut)
def get_subscription(subscription_id: str, session: SessionDep,
                     _: ModelsAdmin) -> SubscriptionOut:
    return SubscriptionOut.model_validate(webhooks.get_subscription(session, subscription_id))


@router.patch("/webhooks/{subscription_id}", response_model=SubscriptionOut)
def change_subscription(subscription_id: str, body: SubscriptionChange, session: SessionDep,
                        settings: SettingsDep, _: ModelsAdmin) -> SubscriptionOut:
    """Change its URL, events or `active`. Inactive: no new events; those already queued
    wait and go out once it is active again, to its URL then."""
    sub = webhooks.change_subscription(session, settings, subscription_id,
                                       body.model_dump(exclude_unset=True))
    session.commit()
    return SubscriptionOut.model_validate(sub)


@router.delete("/webhooks/{subscription_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_subscription(subscription_id: str, session: SessionDep, _: ModelsAdmin) -> Response:
    """No more events; deliveries still queued for it fail. The delivery log keeps them."""
    webhooks.delete_subscription(session, subscription_id)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/webhooks/{subscription_id}/rotate-secret", response_model=SubscriptionCreated,
             dependencies=[SHOWN_ONCE])
def rotate_secret(subscription_id: str, session: SessionDep, _: ModelsAdmin,
                  body: SecretRotation | None = None) -> SubscriptionCreated:
    """A new `whsec_` secret, shown once. The old one signs beside it (a second signature in
    `webhook-signature`) for `keep_previous_seconds`, 24 h unless told, while receivers
    switch over."""
    rotation = body or SecretRotation()
    sub = webhooks.rotate_secret(session, subscription_id, rotation.keep_previous_seconds)
    session.commit()
    return SubscriptionCreated(**SubscriptionOut.model_validate(sub).model_dump(),
                               secret=sub.secret)
