"""Typed dependencies: the database session, settings, and the API key with its scopes.

`CurrentKey = Annotated[ApiKey, Depends(require_scope(Scope.TAKEDOWNS_WRITE))]` in a handler's
signature is the whole of its authorisation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.db.models import ApiKey
from app.db.session import get_sessionmaker
from app.errors import Forbidden, Unauthorized
from app.services import keys
from app.services.keys import Scope
from app.settings import Settings, get_settings


def get_db() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
_bearer = HTTPBearer(auto_error=False, description="an API key: `lethe keys create`")


def require_scope(scope: Scope) -> Callable[..., ApiKey]:
    def dependency(
        session: SessionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiKey:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthorized("send an API key as `Authorization: Bearer <key>`")
        key = keys.authenticate(session, credentials.credentials)
        if key is None:
            raise Unauthorized("the API key is unknown or revoked")
        if scope.value not in key.scopes:
            raise Forbidden(f"this API key lacks the {scope.value!r} scope")
        session.info["actor"] = f"key:{key.id}"
        # End the read now: on SQLite every transaction holds the write lock, and a streaming
        # handler (the event stream) keeps this session until its response ends.
        session.commit()
        return key

    dependency.__name__ = f"require_{scope.name.lower()}"
    return dependency


TakedownsWrite = Annotated[ApiKey, Depends(require_scope(Scope.TAKEDOWNS_WRITE))]
TakedownsRead = Annotated[ApiKey, Depends(require_scope(Scope.TAKEDOWNS_READ))]
ModelsAdmin = Annotated[ApiKey, Depends(require_scope(Scope.MODELS_ADMIN))]
AuditRead = Annotated[ApiKey, Depends(require_scope(Scope.AUDIT_READ))]


def _shown_once(response: Response) -> None:
    # A response carrying a secret: no cache keeps it, and an Idempotency-Key replay of it is
    # stored sealed (api/idempotency.py).
    response.headers["Cache-Control"] = "no-store"


SHOWN_ONCE = Depends(_shown_once)
