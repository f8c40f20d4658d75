"""API shapes for keys, the audit log, webhooks and quarantine."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from app.services.keys import Scope
from app.states import State

# What a subscription can hear: a takedown entering each state, each decision on it, and
# each step of a DMCA counter-notice (app/services/counter_notices.py).
TAKEDOWN_EVENTS = sorted([*(f"takedown.{s.value}" for s in State), "takedown.decided",
                          "takedown.counter_noticed", "takedown.suit_filed",
                          "takedown.restore_window_opened", "takedown.restore_window_closed"])
# The registry's: a deployer learns of a new version, an alias moved, a version it may hold a
# copy of quarantined (it still draws an erased concept) or purged (webhooks.
# enqueue_registry_event, from services/registry.py and services/quarantine.py).
REGISTRY_EVENTS = ["alias.moved", "version.created", "version.purged", "version.quarantined"]
EVENTS = sorted(TAKEDOWN_EVENTS + REGISTRY_EVENTS)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(min_length=1)


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    secret: str = Field(description="shown once; only its hash is stored")


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    seq: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_after: int | None


class AuditVerification(BaseModel):
    ok: bool
    rows: int
    head: str
    first_bad_seq: int | None
    reason: str | None


def _known_events(events: list[str]) -> list[str]:
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:  # it would be accepted and never fire
        raise ValueError(f"unknown event types {unknown}; known: {EVENTS}")
    return events


class SubscriptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: AnyHttpUrl
    events: list[str] = Field(default_factory=list, max_length=32,
                              description="event types, e.g. takedown.completed or "
                              "version.quarantined; empty = every takedown event")

    @field_validator("events")
    @classmethod
    def _check_events(cls, events: list[str]) -> list[str]:
        return _known_events(events)


class SubscriptionChange(BaseModel):
    """The fields to change; those left out keep their value. An inactive subscription gets
    no new events; what was already queued for it waits, and goes out once it is active."""
    model_config = ConfigDict(extra="forbid")
    url: AnyHttpUrl | None = None
    events: list[str] | None = Field(default=None, max_length=32,
                                     description="event types; empty = every takedown "
                                     "event")
    active: StrictBool | None = None

    @field_validator("events")
    @classmethod
    def _check_events(cls, events: list[str] | None) -> list[str] | None:
        return events if events is None else _known_events(events)

    @model_validator(mode="after")
    def _something_given(self) -> SubscriptionChange:
        if not self.model_fields_set:
            raise ValueError("give at least one of url, events, active")
        if nulls := sorted(f for f in self.model_fields_set if getattr(self, f) is None):
            raise ValueError(f"{', '.join(nulls)} cannot be null; leave it out to keep it")
        return self


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keep_previous_seconds: StrictInt = Field(
        default=86400, ge=0, le=7 * 86400,
        description="how long the old secret still signs beside the new one (0: not at all)")


class SubscriptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    url: str
    events: list[str]
    active: bool
    created_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        description="until when the secret before the last rotation still signs too")


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(description="whsec_… signing secret; shown once")


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    subscription_id: str | None
    takedown_id: str | None
    url: str
    event: str
    payload: dict[str, Any]
    state: str
    attempts: list[dict[str, Any]]
    next_attempt_at: datetime | None
    created_at: datetime


class PurgeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="purged by request", max_length=500)


class NoticeCounts(BaseModel):
    notices: int
    accepted: int
    partial: int
    rejected: int
    undecided: int
    median_hours_to_erasure: float | None
    median_hours_to_end: float | None


class Period(BaseModel):
    since: datetime | None
    until: datetime | None


class TransparencyReport(BaseModel):
    """Notices received in a period (EU DSA Art. 15(1)(b)), as they stand now."""
    period: Period
    notices: int
    by_legal_basis: dict[str, NoticeCounts]
    by_kind: dict[str, int]
    by_state: dict[str, int]
    decisions: dict[str, int] = Field(description="current decisions by outcome")
    decided_by_automated_means: int
    decided_by_a_person: int
    median_hours_to_erasure: float | None = Field(description=(
        "median time from receipt to the erasure, over the completed takedowns: the time to "
        "take the action"))
    median_hours_to_end: float | None = Field(description=(
        "median time from receipt to the end: erased, refused, failed or withdrawn"))
    rescinded: int
    counter_notices: int
    open_overdue: int = Field(description="not ended, and past due now")
    ended_after_due: int
