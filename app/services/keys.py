"""API keys with scopes: created (secret shown once), stored as sha256, revoked; all audited."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import ApiKey
from app.db.types import utcnow
from app.errors import InvalidInput, NotFound
from app.services import audit


class Scope(StrEnum):
    TAKEDOWNS_WRITE = "takedowns:write"
    TAKEDOWNS_READ = "takedowns:read"
    MODELS_ADMIN = "models:admin"
    AUDIT_READ = "audit:read"


ALL_SCOPES = [s.value for s in Scope]
KEY_PREFIX = "lethe_"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(session: Session, name: str, scopes: list[str], *,
           secret: str | None = None) -> tuple[ApiKey, str]:
    """Return the stored row and the secret (the only time it is visible)."""
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown or not scopes:
        raise InvalidInput(f"unknown or missing scopes {unknown}; choose from {ALL_SCOPES}",
                           field="scopes")
    secret = secret or KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, prefix=secret[:12], hash=hash_key(secret),
                 scopes=sorted(set(scopes)), created_at=utcnow())
    session.add(row)
    session.flush()
    audit.record(session, "key.created", "api_key", row.id,
                 {"name": name, "scopes": row.scopes, "prefix": row.prefix})
    return row, secret


def authenticate(session: Session, secret: str) -> ApiKey | None:
    """The active key with this secret, or None (unknown or revoked)."""
    row = session.scalar(select(ApiKey).where(ApiKey.hash == hash_key(secret)))
    return row if row is not None and row.revoked_at is None else None


def find(session: Session, secret: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.hash == hash_key(secret)))


def revoke(session: Session, key_id: str) -> ApiKey:
    row = session.get(ApiKey, key_id) or session.scalar(
        select(ApiKey).where(ApiKey.prefix == key_id))
    if row is None:
        raise NotFound(f"no API key {key_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(session, "key.revoked", "api_key", row.id, {"name": row.name})
    return row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def ensure_admin(session: Session, configured: str) -> str | None:
    """Make sure an admin key exists. With `configured` (LETHE_ADMIN_KEY) that key is stored;
    otherwise, when no active admin key exists yet, a new one is created and returned so the
    embedded server can print it once. Returns the secret only when it was just created."""
    if configured:
        if find(session, configured) is None:
            create(session, "admin (LETHE_ADMIN_KEY)", ALL_SCOPES, secret=configured)
        return None
    for row in session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None))):
        if Scope.MODELS_ADMIN.value in row.scopes:
            return None
    _, secret = create(session, "first admin", ALL_SCOPES)
    return secret
