from __future__ import annotations

from fastapi import APIRouter, status

from app.api.deps import SHOWN_ONCE, ModelsAdmin, SessionDep
from app.schemas.compliance import KeyCreate, KeyCreated, KeyOut
from app.services import keys

router = APIRouter(prefix="/keys", tags=["keys"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated,
             dependencies=[SHOWN_ONCE])
def create_key(body: KeyCreate, session: SessionDep, _: ModelsAdmin) -> KeyCreated:
    row, secret = keys.create(session, body.name, [s.value for s in body.scopes])
    session.commit()
    return KeyCreated(**KeyOut.model_validate(row).model_dump(), secret=secret)


@router.get("", response_model=list[KeyOut])
def list_keys(session: SessionDep, _: ModelsAdmin) -> list[KeyOut]:
    return [KeyOut.model_validate(k) for k in keys.list_keys(session)]


@router.post("/{key_id}/revoke", response_model=KeyOut)
def revoke_key(key_id: str, session: SessionDep, _: ModelsAdmin) -> KeyOut:
    row = keys.revoke(session, key_id)
    session.commit()
    return KeyOut.model_validate(row)
