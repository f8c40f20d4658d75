"""Persistence: the registry (models, versions, aliases) and the takedown/job tables."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.db.types import JSONType, UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


class Model(Base):
    """A base diffusion model; its lineage of versions starts at version 0 (the base weights)."""

    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(String(20))  # builtin | path
    path: Mapped[str] = mapped_column(Text)
    closed_vocabulary: Mapped[bool] = mapped_column(Boolean, default=False)
    catalog: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # Fencing token for the lineage: bumped on every claim; a commit must present the current value.
    fence: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """Immutable once written.

    `job_id` is unique, so a re-delivered job can never add a second version."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "number", name="uq_model_versions_number"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), unique=True)
    erased: Mapped[list[str]] = mapped_column(JSONType, default=list)  # cumulative
    artifact_uri: Mapped[str | None] = mapped_column(Text)
    digest: Mapped[str | None] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20))  # ready | gate_failed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when `production` moved past this version while it still holds an erased concept.
    quarantined_at: Mapped[datetime | None] = mapped_column()
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    purged_at: Mapped[datetime | None] = mapped_column()  # the row stays as a tombstone
    # A legal hold (evidence a dispute may need): no purge, by hand or by the sweep, until
    # released.
    held_at: Mapped[datetime | None] = mapped_column()
    hold_reason: Mapped[str | None] = mapped_column(Text)
    held_by: Mapped[str | None] = mapped_column(String(200))

    @property
    def legal_hold(self) -> dict[str, Any] | None:
        if self.held_at is None:
            return None
        return {"reason": self.hold_reason, "placed_at": self.held_at, "placed_by": self.held_by}


class Alias(Base):
    __tablename__ = "aliases"
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AliasMove(Base):
    """Append-only history of every alias move (who pointed `production` where, and why)."""

    __tablename__ = "alias_moves"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    alias: Mapped[str] = mapped_column(String(64))
    from_version_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"))
    to_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    reason: Mapped[str] = mapped_column(Text, default="")
    moved_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """One erasure step on one model lineage; it carries one or more merged takedowns."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    state: Mapped[str] = mapped_column(String(20), index=True)
    # No foreign key: versions already point at their job, and a cycle would complicate migrations.
    parent_version_id: Mapped[str | None] = mapped_column(String(36))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    fence: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    enqueued_at: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    # When the artifacts its attempts stored and no version names were deleted
    # (services/orphans.py); NULL until then.
    artifacts_swept_at: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Takedown(Base):
    __tablename__ = "takedowns"
    # A named integration's ticket key is unique, so a ticket system's retries never create two
    # takedowns. Plain API calls leave `integration` NULL (Postgres: NULLs never collide).
    __table_args__ = (Index("ix_takedowns_created", "created_at", "id"),
                      UniqueConstraint("integration", "external_ref",
                                       name="uq_takedowns_integration_ref"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    state: Mapped[str] = mapped_column(String(20), index=True)
    concept: Mapped[str] = mapped_column(String(200))
    # As the catalog compares names (services/catalog.normalise_concept): listing by concept.
    concept_key: Mapped[str | None] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    legal_basis: Mapped[str] = mapped_column(String(20))
    claimant: Mapped[dict[str, Any]] = mapped_column(default=dict)
    external_ref: Mapped[str | None] = mapped_column(String(200))
    integration: Mapped[str | None] = mapped_column(String(40))
    # DMCA 512(c)(3) / DSA Art. 16 notice elements, signature, and any deadline extension.
    legal: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prompts: Mapped[list[str] | None] = mapped_column(JSONType)
    neighbors: Mapped[list[str] | None] = mapped_column(JSONType)
    due_at: Mapped[datetime] = mapped_column()
    priority: Mapped[int] = mapped_column(Integer, default=0)
    callback_url: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # services/decisions.py
    version_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"))
    # When a counter-notice's restore window next opens or closes, until the reconciler has
    # told its close or a suit shut it (services/counter_notices.py); the sweep's index.
    restore_window_at: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TakedownEvent(Base):
    """Durable event log behind the SSE stream; `id` is the SSE event id (monotonic)."""

    __tablename__ = "takedown_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    takedown_id: Mapped[str] = mapped_column(ForeignKey("takedowns.id"), index=True)
    type: Mapped[str] = mapped_column(String(20))  # state | progress
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Preview(Base):
    """A sample-rendering job for one version, so a person can see that a concept is gone."""

    __tablename__ = "previews"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    prompt: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    images: Mapped[list[str]] = mapped_column(JSONType, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when a worker takes it; the reconciler re-sends (or fails) a preview left `running`
    # longer than LETHE_PREVIEW_STALE_SECONDS (its worker died).
    started_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class Export(Base):
    """A diffusers-folder export of one version, built by a worker on the `preview` queue.

    state: queued -> running -> completed | failed; `purged` once the version is purged (the
    tar is deleted with the version's tensors)."""

    __tablename__ = "exports"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    state: Mapped[str] = mapped_column(String(20))
    path: Mapped[str | None] = mapped_column(Text)  # the tar, under data_dir/exports
    digest: Mapped[str | None] = mapped_column(String(100))  # sha256 of the tar
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class ApiKey(Base):
    """An API key: only sha256(secret) is stored; the secret is shown once at creation.

    Keys are 256-bit random strings, so a plain hash is enough (no password-style stretching);
    an operator-chosen LETHE_ADMIN_KEY must be at least 32 characters for the same reason."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(20))  # shown in listings to tell keys apart
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class AuditEvent(Base):
    """Append-only (a database trigger refuses UPDATE and DELETE) and hash-chained:
    `hash = sha256(prev_hash || canonical_json(row))`, `seq` contiguous from 1."""

    __tablename__ = "audit_events"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60), index=True)
    target_type: Mapped[str] = mapped_column(String(40))
    target_id: Mapped[str] = mapped_column(String(200), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class IdempotencyRecord(Base):
    """The first response to a POST carrying an Idempotency-Key, per caller (hash of its key)."""

    __tablename__ = "idempotency_records"
    principal: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256(method, path, body)
    state: Mapped[str] = mapped_column(String(20))  # in_flight | done
    status_code: Mapped[int | None] = mapped_column(Integer)
    headers: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    body: Mapped[str | None] = mapped_column(Text)
    # The body carries a secret (`Cache-Control: no-store`): encrypted under the caller's key
    # (api/idempotency.py), so the database never holds it readable.
    sealed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookSubscription(Base):
    __tablename__ = "webhook_subscriptions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(100))  # whsec_<base64>; needed to sign
    # After a rotation the old secret signs too, until it expires (receivers switch over).
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column()
    # empty = every takedown event; registry events are named
    events: Mapped[list[str]] = mapped_column(JSONType, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column()  # kept for the delivery log


class WebhookDelivery(Base):
    """One message to one URL (the outbox row, written in the transaction of the change) and
    every attempt at sending it."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    subscription_id: Mapped[str | None] = mapped_column(ForeignKey("webhook_subscriptions.id"))
    takedown_id: Mapped[str | None] = mapped_column(String(36), index=True)
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(60))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(20), index=True)  # pending | delivered | failed
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
