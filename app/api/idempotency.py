"""`Idempotency-Key` on POST (draft-ietf-httpapi-idempotency-key-header):

- same key + same body  -> the first response again (status, body, Location) marked
  `Idempotent-Replayed: true`
- same key + other body -> 422
- same key, first request still running -> 409 (retry later)

Keys are scoped to the caller (sha256 of its Authorization header), so two clients never collide.
The first request inserts an `in_flight` row (primary key (principal, key)); a concurrent twin's
insert fails on the key and it reads the row instead. Responses that say "try again" (401, 403,
409, 429, 5xx) are not kept, so the same key can be retried. A key still `in_flight` after
LETHE_IDEMPOTENCY_IN_FLIGHT_SECONDS lost its process and is taken by the next request; keys
expire after LETHE_IDEMPOTENCY_TTL_SECONDS (24 h), when the reconciler prunes them.

A response marked `Cache-Control: no-store` carries a secret shown once (a new API key, a
webhook secret). It is kept sealed: AES-GCM under a key derived (HKDF) from the caller's own
Authorization header, which the database never holds, so the caller's retry gets the secret
back and the replay adds no copy a reader of the database or a backup could use (an API key
is stored nowhere else but as its hash). With no Authorization header there is nothing to
seal with, and such a response is not kept.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from datetime import timedelta

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import and_, delete, or_, update
from sqlalchemy.exc import IntegrityError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import problem
from app.db.models import IdempotencyRecord
from app.db.session import session_scope
from app.db.types import utcnow
from app.settings import get_settings

HEADER = b"idempotency-key"
NOT_KEPT = {401, 403, 409, 429}
REPLAYED_HEADERS = {"location", "content-type", "cache-control"}


class Idempotency:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or []) if scope["type"] == "http" else {}
        if scope["type"] != "http" or scope["method"] != "POST" or HEADER not in headers:
            await self.app(scope, receive, send)
            return
        key = headers[HEADER].decode("latin-1")
        if not 1 <= len(key) <= 255:
            await problem(400, "Invalid Idempotency-Key",
                          "Idempotency-Key must be 1 to 255 characters")(scope, receive, send)
            return
        authorization = headers.get(b"authorization", b"")
        principal = hashlib.sha256(authorization).hexdigest()
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        fingerprint = hashlib.sha256(
            scope["method"].encode() + b" " + scope["path"].encode() + b"\n" + body).hexdigest()
        claimed, existing = await asyncio.to_thread(_claim, principal, key, fingerprint)
        if not claimed:
            assert existing is not None
            await _answer_existing(existing, fingerprint, authorization, scope, receive, send)
            return

        sent_body = False

        async def replay_receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        status, out_headers, chunks = 500, [], []

        async def capture(message: Message) -> None:
            nonlocal status, out_headers
            if message["type"] == "http.response.start":
                status, out_headers = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        finally:
            kept = {k.decode().lower(): v.decode() for k, v in out_headers
                    if k.decode().lower() in REPLAYED_HEADERS}
            await asyncio.to_thread(_finish, principal, key, status, kept,
                                    _stored_body(b"".join(chunks), kept, authorization, key))


def _claim(principal: str, key: str, fingerprint: str) -> tuple[bool, IdempotencyRecord | None]:
    try:
        with session_scope() as session:
            session.add(IdempotencyRecord(principal=principal, key=key, fingerprint=fingerprint,
                                          state="in_flight"))
        return True, None
    except IntegrityError:
        if _take_over(principal, key, fingerprint):
            return True, None
        with session_scope() as session:
            row = session.get(IdempotencyRecord, (principal, key))
            if row is None:  # the first request failed and released the key meanwhile
                return _claim(principal, key, fingerprint)
            session.expunge(row)
            return False, row


def _take_over(principal: str, key: str, fingerprint: str) -> bool:
    """Claim a key whose request lost its process (`in_flight` too long) or that expired.
    One conditional UPDATE, so of two retries racing for it only one wins."""
    settings, now = get_settings(), utcnow()
    lost = now - timedelta(seconds=settings.idempotency_in_flight_seconds)
    expired = now - timedelta(seconds=settings.idempotency_ttl_seconds)
    with session_scope() as session:
        taken = session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.principal == principal, IdempotencyRecord.key == key,
                   or_(and_(IdempotencyRecord.state == "in_flight",
                            IdempotencyRecord.created_at < lost),
                       IdempotencyRecord.created_at < expired))
            .values(fingerprint=fingerprint, state="in_flight", status_code=None,
                    headers=None, body=None, sealed=False, created_at=now))
        return bool(getattr(taken, "rowcount", 0))


def _stored_body(body: bytes, headers: dict[str, str], authorization: bytes,
                 key: str) -> tuple[str, bool] | None:
    """The response body as kept, and whether it is sealed; None where it must not be kept."""
    if "no-store" not in headers.get("cache-control", "").lower():
        return body.decode("utf-8", errors="replace"), False
    if not authorization:
        return None
    nonce = os.urandom(12)
    sealed = AESGCM(_sealing_key(authorization)).encrypt(nonce, body, key.encode())
    return base64.b64encode(nonce + sealed).decode(), True


def _opened_body(row: IdempotencyRecord, authorization: bytes) -> bytes:
    if not row.sealed:
        return (row.body or "").encode()
    raw = base64.b64decode(row.body or "")
    return AESGCM(_sealing_key(authorization)).decrypt(raw[:12], raw[12:], row.key.encode())


def _sealing_key(authorization: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None,
                info=b"lethe idempotent replay").derive(authorization)


def _finish(principal: str, key: str, status: int, headers: dict[str, str],
            body: tuple[str, bool] | None) -> None:
    with session_scope() as session:
        if status in NOT_KEPT or status >= 500 or body is None:
            session.execute(delete(IdempotencyRecord).where(
                IdempotencyRecord.principal == principal, IdempotencyRecord.key == key))
            return
        row = session.get(IdempotencyRecord, (principal, key))
        if row is not None:
            row.state, row.status_code, row.headers = "done", status, headers
            row.body, row.sealed = body


async def _answer_existing(row: IdempotencyRecord, fingerprint: str, authorization: bytes,
                           scope: Scope, receive: Receive, send: Send) -> None:
    if row.fingerprint != fingerprint:
        response = problem(422, "Idempotency-Key reused",
                           "this Idempotency-Key was used with a different request body")
    elif row.state != "done":
        response = problem(409, "Request in flight",
                           "a request with this Idempotency-Key is still being processed; "
                           "retry shortly")
        response.headers["Retry-After"] = "1"
    else:
        body = _opened_body(row, authorization)
        await send({"type": "http.response.start", "status": row.status_code or 200,
                    "headers": [*((k.encode(), v.encode())
                                  for k, v in (row.headers or {}).items()),
                                (b"idempotent-replayed", b"true")]})
        await send({"type": "http.response.body", "body": body})
        return
    await response(scope, receive, send)

