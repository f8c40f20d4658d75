"""Typed dependencies. An auth dependency (API keys with scopes) plugs in here, e.g.
`CurrentKey = Annotated[ApiKey, Depends(require_scope("takedowns:write"))]`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from app.db.session import get_sessionmaker
from app.settings import Settings, get_settings


def get_db() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
