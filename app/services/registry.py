"""Registry: models, immutable versions, and aliases with their append-only move history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Alias, AliasMove, Model, ModelVersion
from app.db.types import utcnow
from app.errors import CatalogUnavailable, InvalidInput, NotFound
from app.services import audit
from app.services.catalog import read_catalog
from app.settings import Settings

PRODUCTION = "production"
BUILTIN_CONCEPTWORLD = "conceptworld"
log = structlog.get_logger(__name__)


def ensure_builtin_models(session: Session, settings: Settings) -> Model:
    """Register the shipped concept-world model once; its catalog is read later, on demand."""
    model = session.scalar(select(Model).where(Model.name == BUILTIN_CONCEPTWORLD))
    if model is None:
        try:
            model = _create_model(session, BUILTIN_CONCEPTWORLD, "builtin",
                                  settings.conceptworld_dir, [], closed=True)
        except InvalidInput:  # another process starting beside this one registered it
            return session.scalars(select(Model).where(Model.name == BUILTIN_CONCEPTWORLD)).one()
        log.info("model.registered", model=model.id, name=model.name, path=model.path)
    return model


def register_model(
    session: Session,
    settings: Settings,
    *,
    name: str,
    path: str,
    concepts: list[dict[str, Any]],
    closed_vocabulary: bool,
) -> Model:
    if session.scalar(select(Model).where(Model.name == name)) is not None:
        raise InvalidInput(f"a model named {name!r} already exists", field="name")
    if name == BUILTIN_CONCEPTWORLD:
        raise InvalidInput("'conceptworld' is the built-in model's name", field="name")
    folder = _allowed_folder(settings, path)
    return _create_model(session, name, "path", folder, concepts, closed=closed_vocabulary)


def _allowed_folder(settings: Settings, path: str) -> Path:
    root = settings.allowed_model_root.resolve()
    try:
        folder = Path(path).expanduser()
        folder = (folder if folder.is_absolute() else root / folder).resolve()
        if not folder.is_relative_to(root):
            raise InvalidInput(f"model path must be inside the allowed root {root}",
                               field="path")
        if not folder.is_dir():
            raise InvalidInput(f"model path {folder} is not a directory", field="path")
    except (OSError, ValueError, RuntimeError) as exc:  # name too long, NUL, symlink loop
        raise InvalidInput(f"model path is not usable: {exc}", field="path") from exc
    return folder


def _create_model(
    session: Session, name: str, source: str, folder: Path, catalog: list[dict[str, Any]], *,
    closed: bool,
) -> Model:
    model = Model(name=name, source=source, path=str(folder), catalog=catalog,
                  closed_vocabulary=closed, fence=0)
    session.add(model)
    try:
        session.flush()
    except IntegrityError:  # a concurrent registration of the name committed first
        session.rollback()
        raise InvalidInput(f"a model named {name!r} already exists", field="name") from None
    base = ModelVersion(model_id=model.id, number=0, parent_id=None, job_id=None, erased=[],
                        artifact_uri=None, digest=None, size_bytes=0, metrics={}, status="ready")
    session.add(base)
    session.flush()
    announce_version(session, base)
    move_alias(session, model.id, PRODUCTION, base.id, reason="base weights registered")
    return model


def model_catalog(model: Model) -> list[dict[str, Any]]:
    """Inline catalog given at registration, else the folder's catalog.json."""
    if model.catalog:
        return model.catalog
    try:
        return read_catalog(Path(model.path))
    except CatalogUnavailable:
        if model.closed_vocabulary:
            raise
        return []


def get_model(session: Session, ref: str) -> Model:
    """By id or by name (so `conceptworld` works wherever an id does)."""
    model = session.get(Model, ref) or session.scalar(select(Model).where(Model.name == ref))
    if model is None:
        raise NotFound(f"no model {ref!r}")
    return model


def list_models(session: Session) -> list[Model]:
    return list(session.scalars(select(Model).order_by(Model.created_at)))


def list_versions(session: Session, model_id: str) -> list[ModelVersion]:
    stmt = select(ModelVersion).where(ModelVersion.model_id == model_id)
    return list(session.scalars(stmt.order_by(ModelVersion.number)))


def get_version(session: Session, version_id: str) -> ModelVersion:
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise NotFound(f"no version {version_id!r}")
    return version


def alias_target(session: Session, model_id: str, alias: str) -> ModelVersion | None:
    row = session.get(Alias, (model_id, alias))
    return session.get(ModelVersion, row.version_id) if row else None


def lock_model(session: Session, model_id: str) -> Model:
    """The model row, locked to the end of the transaction. A step commits under it
    (jobs.commit_version) and moves `production` there; an operator's move takes it first
    too, so neither holds the alias while waiting for the other."""
    return session.scalars(select(Model).where(Model.id == model_id).with_for_update()).one()


def move_alias(
    session: Session, model_id: str, alias: str, version_id: str, *, reason: str,
    override_quarantine: bool = False,
) -> Alias:
    """Point `alias` at a version of the same model and append the move to the history.
    The caller holds the model's lock (`lock_model`).

    Moving `production` quarantines the versions that still hold what it erased."""
    from app.services import quarantine

    # The chain's lock before the version is read: a purge (which holds it) is then over,
    # and a version it purged is seen purged, not made an alias target from a stale read.
    audit.lock_chain(session)
    version = session.get(ModelVersion, version_id, populate_existing=True)
    if version is None or version.model_id != model_id:
        raise NotFound(f"model has no version {version_id!r}")
    if version.purged_at is not None or not override_quarantine:
        quarantine.ensure_usable(version, "making it an alias target")
    elif version.quarantined_at is not None:
        audit.record(session, "alias.quarantine_override", "model_version", version.id,
                     {"alias": alias, "reason": reason})
    if alias == PRODUCTION and version.status != "ready":
        raise InvalidInput(
            f"version {version.number} did not pass the evaluation gate", field="version_id"
        )
    row = session.get(Alias, (model_id, alias))
    previous = row.version_id if row else None
    if row is None:
        row = Alias(model_id=model_id, name=alias, version_id=version_id)
        session.add(row)
    row.version_id, row.updated_at = version_id, utcnow()
    session.add(AliasMove(model_id=model_id, alias=alias, from_version_id=previous,
                          to_version_id=version_id, reason=reason))
    session.flush()
    audit.record(session, "alias.moved", "model", model_id,
                 {"alias": alias, "from": previous, "to": version_id, "reason": reason})
    from app.services import webhooks  # late: webhooks imports the takedown schemas

    webhooks.enqueue_registry_event(session, "alias.moved", {
        "model_id": model_id, "alias": alias, "from": previous, "to": version_id,
        "reason": reason})
    if alias == PRODUCTION:
        quarantine.quarantine_superseded(session, version)
    return row


def announce_version(session: Session, version: ModelVersion) -> None:
    """Audit a new version and tell the registry's subscribers (`version.created`)."""
    data = {"version_id": version.id, "model_id": version.model_id, "number": version.number,
            "status": version.status, "parent_id": version.parent_id, "job_id": version.job_id,
            "digest": version.digest, "erased": version.erased,
            "created_at": version.created_at.isoformat()}
    audit.record(session, "version.created", "model_version", version.id, data)
    from app.services import webhooks  # late: webhooks imports the takedown schemas

    webhooks.enqueue_registry_event(session, "version.created", data)


def list_aliases(session: Session, model_id: str) -> tuple[list[Alias], list[AliasMove]]:
    aliases = session.scalars(select(Alias).where(Alias.model_id == model_id).order_by(Alias.name))
    moves = session.scalars(
        select(AliasMove).where(AliasMove.model_id == model_id).order_by(AliasMove.id)
    )
    return list(aliases), list(moves)
