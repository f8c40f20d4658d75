from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api.deps import ModelsAdmin, SessionDep, SettingsDep, TakedownsRead
from app.db.models import Model
from app.errors import CatalogUnavailable
from app.schemas.registry import (
    AliasesOut,
    AliasMoveIn,
    AliasMoveOut,
    AliasOut,
    ConceptEntry,
    ModelCreate,
    ModelOut,
    VersionOut,
)
from app.services import registry
from app.services.registry import PRODUCTION

router = APIRouter(prefix="/models", tags=["models"])


def model_out(session: SessionDep, model: Model, *, with_concepts: bool) -> ModelOut:
    production = registry.alias_target(session, model.id, PRODUCTION)
    out = ModelOut(id=model.id, name=model.name, source=model.source, path=model.path,
                   closed_vocabulary=model.closed_vocabulary, created_at=model.created_at,
                   production_version_id=production.id if production else None)
    if with_concepts:
        try:
            out.concepts = [ConceptEntry.model_validate(c) for c in registry.model_catalog(model)]
        except CatalogUnavailable as exc:
            out.catalog_error = exc.detail
    return out


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ModelOut)
def register_model(body: ModelCreate, session: SessionDep, settings: SettingsDep,
                   response: Response, _: ModelsAdmin) -> ModelOut:
    model = registry.register_model(
        session, settings, name=body.name, path=body.path,
        concepts=[c.model_dump() for c in body.concepts], closed_vocabulary=body.closed_vocabulary)
    session.commit()
    response.headers["Location"] = f"/v1/models/{model.id}"
    return model_out(session, model, with_concepts=True)


@router.get("", response_model=list[ModelOut])
def list_models(session: SessionDep, _: TakedownsRead) -> list[ModelOut]:
    return [model_out(session, m, with_concepts=False) for m in registry.list_models(session)]


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model_id: str, session: SessionDep, _: TakedownsRead) -> ModelOut:
    return model_out(session, registry.get_model(session, model_id), with_concepts=True)


@router.get("/{model_id}/versions", response_model=list[VersionOut])
def list_versions(model_id: str, session: SessionDep, _: TakedownsRead) -> list[VersionOut]:
    model = registry.get_model(session, model_id)
    return [VersionOut.model_validate(v) for v in registry.list_versions(session, model.id)]


@router.get("/{model_id}/aliases", response_model=AliasesOut)
def list_aliases(model_id: str, session: SessionDep, _: TakedownsRead) -> AliasesOut:
    aliases, moves = registry.list_aliases(session, registry.get_model(session, model_id).id)
    return AliasesOut(aliases=[AliasOut.model_validate(a) for a in aliases],
                      history=[AliasMoveOut.model_validate(m) for m in moves])


@router.put("/{model_id}/aliases/{alias}", response_model=AliasOut)
def move_alias(model_id: str, alias: str, body: AliasMoveIn, session: SessionDep,
               _: ModelsAdmin) -> AliasOut:
    model = registry.lock_model(session, registry.get_model(session, model_id).id)
    row = registry.move_alias(session, model.id, alias, body.version_id,
                              reason=body.reason or "moved by request",
                              override_quarantine=body.override_quarantine)
    session.commit()
    return AliasOut.model_validate(row)
