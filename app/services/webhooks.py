"""Signed outgoing webhooks (Standard Webhooks), with an SSRF guard, retries and a delivery log.

Signing: `webhook-signature: v1,<base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}"))>`,
with headers `webhook-id` (the delivery id, stable across retries: receivers dedupe on it) and
`webhook-timestamp` (unix seconds). Subscriptions sign with their own `whsec_` secret; a
takedown's `callback_url` is signed with LETHE_SIGNING_SECRET.

A delivery row is written in the transaction of the change (a transactional outbox); the
webhook loop in the API process sends due rows. Attempt n waits a random time in
[0, base * 2**n] (exponential backoff with full jitter) before the next; after
LETHE_WEBHOOK_MAX_ATTEMPTS the delivery is `failed` and can be redelivered by hand.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import random
import secrets
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from app.db.models import Takedown, WebhookDelivery, WebhookSubscription
from app.db.session import session_scope
from app.db.types import utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.services import audit
from app.settings import Settings

log = structlog.get_logger(__name__)
# A delivery being sent is leased this long past the send's timeout; then it is due again.
SEND_LEASE_MARGIN_SECONDS = 30.0
Resolver = Callable[[str], list[str]]
# Cloud metadata endpoints that are not already link-local (AWS IPv6, Alibaba).
METADATA = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}


class UnsafeURL(InvalidInput):
    title = "Refused URL"


def resolve(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


def _blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified or ip in METADATA
            or ip in ipaddress.ip_network("100.64.0.0/10"))  # carrier-grade NAT


def _allowed(host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
             allowlist: list[str]) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for entry in allowlist:
        if entry.lower() == host.lower():
            return True
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def check_url(url: str, allowlist: list[str], *, resolver: Resolver = resolve,
              require_resolution: bool = True) -> None:
    """Refuse URLs whose host is, or resolves to, a loopback, private, link-local, metadata or
    otherwise internal address, unless the allowlist names the host or a network holding it.

    With `require_resolution=False` (intake) a name that does not resolve yet is accepted; the
    check runs again, resolving, before every send."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURL("webhook URLs must be http(s) with a host", field="url")
    host = parts.hostname
    try:
        addresses = [host] if _is_ip(host) else resolver(host)
    except (OSError, UnicodeError) as exc:
        if require_resolution:
            raise UnsafeURL(f"cannot resolve {host!r}: {exc}", field="url") from exc
        return
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if _blocked(ip) and not _allowed(host, ip, allowlist):
            raise UnsafeURL(f"{host!r} resolves to {ip}, an internal address; add it to "
                            "LETHE_WEBHOOK_ALLOWLIST if this is intended", field="url")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def signatures(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,` signature per secret, space-separated (a
    receiver that knows any of them can verify, so a rotation breaks no one)."""
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets_)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") \
        else secret.encode()
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def create_subscription(session: Session, settings: Settings, url: str,
                        events: list[str]) -> WebhookSubscription:
    check_url(url, settings.webhook_allowlist, require_resolution=False)
    row = WebhookSubscription(url=url, secret=new_secret(), events=events, active=True)
    session.add(row)
    session.flush()
    audit.record(session, "webhook.subscribed", "webhook_subscription", row.id,
                 {"url": url, "events": events})
    return row


def list_subscriptions(session: Session) -> list[WebhookSubscription]:
    """Every subscription not deleted, newest first."""
    return list(session.scalars(select(WebhookSubscription)
                                .where(WebhookSubscription.deleted_at.is_(None))
                                .order_by(WebhookSubscription.created_at.desc(),
                                          WebhookSubscription.id.desc())))


def get_subscription(session: Session, subscription_id: str, *,
                     for_change: bool = False) -> WebhookSubscription:
    """The subscription, 404 if deleted. `for_change` locks its row (after the audit chain's
    lock, the order the takedown transitions that queue its deliveries take), so changes,
    deletes and rotations of it happen one after another."""
    if for_change:
        audit.lock_chain(session)
    sub = session.get(WebhookSubscription, subscription_id, with_for_update=for_change)
    if sub is None or sub.deleted_at is not None:
        raise NotFound(f"no webhook subscription {subscription_id!r}")
    return sub


def change_subscription(session: Session, settings: Settings, subscription_id: str,
                        changes: dict[str, Any]) -> WebhookSubscription:
    """Set `changes` (url, events, active). Deliveries already queued go to the new URL."""
    if "url" in changes:
        changes["url"] = str(changes["url"])
        check_url(changes["url"], settings.webhook_allowlist, require_resolution=False)
    sub = get_subscription(session, subscription_id, for_change=True)
    before = {name: getattr(sub, name) for name in changes}
    for name, value in changes.items():
        setattr(sub, name, value)
    audit.record(session, "webhook.changed", "webhook_subscription", sub.id,
                 {"before": before, "after": changes})
    return sub


def delete_subscription(session: Session, subscription_id: str) -> None:
    """No more events; what was still queued for it fails, saying why (the log keeps it)."""
    sub = get_subscription(session, subscription_id, for_change=True)
    now = utcnow()
    sub.deleted_at, sub.active = now, False
    pending = session.scalars(select(WebhookDelivery).where(
        WebhookDelivery.subscription_id == sub.id, WebhookDelivery.state == "pending"))
    for delivery in pending:
        delivery.state, delivery.next_attempt_at = "failed", None
        delivery.attempts = [*delivery.attempts, {"at": now.isoformat(), "status": None,
                                                  "error": "subscription deleted"}]
    audit.record(session, "webhook.deleted", "webhook_subscription", sub.id, {"url": sub.url})


def rotate_secret(session: Session, subscription_id: str,
                  keep_previous_seconds: int) -> WebhookSubscription:
    """A new secret; the current one still signs beside it for `keep_previous_seconds` (a
    secret from an earlier rotation stops signing now)."""
    sub = get_subscription(session, subscription_id, for_change=True)
    if keep_previous_seconds > 0:
        sub.previous_secret = sub.secret
        sub.previous_secret_expires_at = utcnow() + timedelta(seconds=keep_previous_seconds)
    else:
        sub.previous_secret = sub.previous_secret_expires_at = None
    sub.secret = new_secret()
    audit.record(session, "webhook.secret_rotated", "webhook_subscription", sub.id,
                 {"keep_previous_seconds": keep_previous_seconds})
    return sub


def forget_expired_secrets(session: Session) -> int:
    """Drop the previous secrets whose grace has ended: one that signs nothing more is not
    kept where a database leak could forge with it. Returns how many."""
    result = session.execute(
        update(WebhookSubscription)
        .where(WebhookSubscription.previous_secret_expires_at <= utcnow())
        .values(previous_secret=None, previous_secret_expires_at=None))
    return int(getattr(result, "rowcount", 0) or 0)


def takedown_payload(td: Takedown, *, for_claimant: bool = False) -> dict[str, Any]:
    """What a takedown event says. A counter-notice's personal data (the counter-notifier's
    name, contact, statements) goes to the takedown's `callback_url` alone, the filer's system
    that sends the claimant its copy (17 USC 512(g)(2)(B)); subscriptions get its dates and
    status."""
    counter = (td.legal or {}).get("counter_notice")
    if counter and not for_claimant:
        counter = {k: counter.get(k) for k in COUNTER_NOTICE_SUMMARY}
    return {"id": td.id, "state": td.state, "model_id": td.model_id, "concept": td.concept,
            "external_ref": td.external_ref, "integration": td.integration,
            "version_id": td.version_id, "due_at": td.due_at.isoformat(),
            "error": td.error, "decision": td.decision, "counter_notice": counter}


COUNTER_NOTICE_SUMMARY = ("received_at", "restore_window", "suit", "window_opened_at", "late",
                          "window_closed_at", "restored")


def enqueue_for_takedown(session: Session, td: Takedown, event: str) -> None:
    """Outbox rows for the takedown's callback_url and every matching subscription."""
    now = utcnow()

    def message(for_claimant: bool) -> dict[str, Any]:
        return {"type": event, "timestamp": now.isoformat(),
                "data": takedown_payload(td, for_claimant=for_claimant)}

    if td.callback_url:
        session.add(WebhookDelivery(takedown_id=td.id, url=td.callback_url, event=event,
                                    payload=message(True), state="pending", attempts=[],
                                    next_attempt_at=now))
    _to_subscribers(session, event, message(False), takedown_id=td.id, every_event=True)


def enqueue_registry_event(session: Session, event: str, data: dict[str, Any]) -> None:
    """Outbox rows of a registry event (`REGISTRY_EVENTS`) for the subscriptions that name it
    (one with no `events` hears every takedown event, as before registry events existed). The
    caller holds the audit chain's lock (it audited the change)."""
    _to_subscribers(session, event, {"type": event, "timestamp": utcnow().isoformat(),
                                     "data": data}, takedown_id=None, every_event=False)


def _to_subscribers(session: Session, event: str, payload: dict[str, Any], *,
                    takedown_id: str | None, every_event: bool) -> None:
    """An outbox row for each live subscription that names `event` (or names none, when
    `every_event`)."""
    now = utcnow()
    # FOR SHARE: a subscription deleted meanwhile waits for this commit, then fails these rows.
    for sub in session.scalars(select(WebhookSubscription).where(_live())
                               .with_for_update(read=True)):
        if event in sub.events or (every_event and not sub.events):
            session.add(WebhookDelivery(subscription_id=sub.id, takedown_id=takedown_id,
                                        url=sub.url, event=event, payload=payload,
                                        state="pending", attempts=[], next_attempt_at=now))


def backoff(attempt: int, base: float, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, base * 2**attempt], capped at one hour."""
    return (rng or random).uniform(0, min(3600.0, base * 2 ** attempt))


def _target(session: Session, settings: Settings,
            delivery: WebhookDelivery) -> tuple[str, list[str]]:
    """Where a delivery goes and the secrets that sign it: a subscription's current URL and
    secret (and its previous one, until it expires), or LETHE_SIGNING_SECRET for a
    takedown's callback_url."""
    sub = session.get(WebhookSubscription, delivery.subscription_id) \
        if delivery.subscription_id else None
    if sub is None:
        return delivery.url, [settings.hmac_key.decode()]
    keys = [sub.secret]
    if sub.previous_secret and sub.previous_secret_expires_at \
            and sub.previous_secret_expires_at > utcnow():
        keys.append(sub.previous_secret)
    return sub.url, keys


def _post(settings: Settings, delivery_id: str, url: str, payload: dict[str, Any],
          secrets_: list[str]) -> dict[str, Any]:
    """Send one signed attempt (no database involved): what it got, to record."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {"content-type": "application/json", "webhook-id": delivery_id,
               "webhook-timestamp": str(timestamp),
               "webhook-signature": signatures(secrets_, delivery_id, timestamp, body)}
    attempt: dict[str, Any] = {"at": utcnow().isoformat(), "status": None, "error": None}
    try:
        check_url(url, settings.webhook_allowlist)
        with httpx.Client(timeout=settings.webhook_timeout_seconds,
                          follow_redirects=False) as client, \
                client.stream("POST", url, content=body, headers=headers) as response:
            attempt["status"] = response.status_code  # the body is never read: any size
    except Exception as exc:  # recorded as a failed attempt, or the row is retried forever
        attempt["error"] = f"{type(exc).__name__}: {getattr(exc, 'detail', exc)}"
    return attempt


def _record(settings: Settings, delivery: WebhookDelivery, attempt: dict[str, Any]) -> None:
    """Append the attempt; the delivery is done, given up, or due again after a backoff.
    One ended while it was sent (its subscription deleted) keeps the attempt, and is
    delivered if the receiver took it."""
    delivery.attempts = [*delivery.attempts, attempt]
    if attempt["status"] is not None and 200 <= attempt["status"] < 300:
        delivery.state, delivery.next_attempt_at = "delivered", None
    elif delivery.state != "pending":
        return
    elif (tries := _tries_since_redeliver(delivery.attempts)) >= settings.webhook_max_attempts:
        delivery.state, delivery.next_attempt_at = "failed", None
    else:
        wait = backoff(tries, settings.webhook_backoff_seconds)
        delivery.next_attempt_at = utcnow() + timedelta(seconds=wait)


def deliver_due(settings: Settings, *, limit: int = 50) -> int:
    """Send pending deliveries whose time has come, each at most once per call; returns how
    many were attempted. Each is taken in a short transaction that leases it (its next attempt
    moved past the send's timeout, so a sender that dies mid-send leaves it to be retried),
    sent with no transaction open, then recorded: a slow receiver holds no lock."""
    tried: list[str] = []
    while len(tried) < limit:
        with session_scope() as session:
            delivery = session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.state == "pending",
                                              WebhookDelivery.next_attempt_at <= utcnow(),
                                              WebhookDelivery.id.not_in(tried),
                                              _subscription_active())
                .order_by(WebhookDelivery.next_attempt_at).limit(1)
                .with_for_update(skip_locked=True)).first()
            if delivery is None:
                break
            delivery.next_attempt_at = utcnow() + timedelta(
                seconds=settings.webhook_timeout_seconds + SEND_LEASE_MARGIN_SECONDS)
            delivery.url, keys = _target(session, settings, delivery)
            leased = (delivery.id, delivery.url, delivery.payload, keys)
        tried.append(leased[0])
        attempt = _post(settings, *leased)
        with session_scope() as session:
            row = session.get(WebhookDelivery, leased[0], with_for_update=True)
            if row is not None:
                _record(settings, row, attempt)
    return len(tried)


def _subscription_active() -> ColumnElement[bool]:
    """A callback_url delivery, or one whose subscription is active (an inactive one's wait)."""
    return or_(WebhookDelivery.subscription_id.is_(None),
               WebhookDelivery.subscription_id.in_(select(WebhookSubscription.id)
                                                   .where(_live())))


def _live() -> ColumnElement[bool]:
    """A subscription that gets events: active, and not deleted."""
    return and_(WebhookSubscription.active.is_(True), WebhookSubscription.deleted_at.is_(None))


def redeliver(session: Session, delivery_id: str) -> WebhookDelivery:
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise NotFound(f"no webhook delivery {delivery_id!r}")
    # Locked: a delete of the subscription either sees this row pending and fails it, or
    # happened first and this is refused.
    sub = session.get(WebhookSubscription, delivery.subscription_id, with_for_update=True) \
        if delivery.subscription_id else None
    if sub is not None and sub.deleted_at is not None:
        raise Conflict(f"webhook subscription {sub.id!r} was deleted; its deliveries cannot "
                       "be sent again")
    delivery.state, delivery.next_attempt_at = "pending", utcnow()
    # The marker starts a fresh budget of automatic retries (see `_tries_since_redeliver`).
    delivery.attempts = [*delivery.attempts, {"at": utcnow().isoformat(), "redeliver": True}]
    return delivery


def _tries_since_redeliver(attempts: list[dict[str, Any]]) -> int:
    tries = 0
    for entry in reversed(attempts):
        if entry.get("redeliver"):
            break
        tries += 1
    return tries


async def run_webhook_loop(settings: Settings) -> None:
    while True:
        try:
            sent = await asyncio.to_thread(deliver_due, settings)
        except Exception as exc:  # the database may be down; try again next tick
            log.warning("webhooks.error", error=str(exc))
            sent = 0
        if not sent:
            await asyncio.sleep(settings.webhook_poll_seconds)


def list_deliveries(session: Session, *, takedown_id: str | None, state: str | None = None,
                    before: str | None = None, limit: int = 200) -> list[WebhookDelivery]:
    """Newest first; `before` (a delivery id, the last of the previous page) pages on."""
    stmt = select(WebhookDelivery)
    if takedown_id:
        stmt = stmt.where(WebhookDelivery.takedown_id == takedown_id)
    if state:
        stmt = stmt.where(WebhookDelivery.state == state)
    if before:
        last = session.get(WebhookDelivery, before)
        if last is None:
            raise NotFound(f"no webhook delivery {before!r}")
        stmt = stmt.where(or_(WebhookDelivery.created_at < last.created_at,
                              and_(WebhookDelivery.created_at == last.created_at,
                                   WebhookDelivery.id < last.id)))
    order = (WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
    return list(session.scalars(stmt.order_by(*order).limit(limit)))
