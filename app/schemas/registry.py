"""API shapes for models, versions and aliases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ConceptEntry(BaseModel):
    name: str
    kind: str = "other"
    related: list[str] = []


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "sd15-house", "path": "sd15-house", "closed_vocabulary": False}]})

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    path: str = Field(min_length=1, max_length=1000,
                      description="diffusers folder, relative to or inside the allowed root")
    concepts: list[ConceptEntry] = []
    closed_vocabulary: bool = False


class ModelOut(BaseModel):
    id: str
    name: str
    source: str
    path: str
    closed_vocabulary: bool
    production_version_id: str | None
    created_at: datetime
    concepts: list[ConceptEntry] | None = None
    catalog_error: str | None = None


class LegalHold(BaseModel):
    reason: str
    placed_at: datetime
    placed_by: str


class LegalHoldIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000, description="the dispute or request "
                        "the version is kept for")


class VersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    model_id: str
    number: int
    parent_id: str | None
    job_id: str | None
    erased: list[str]
    artifact_uri: str | None
    digest: str | None
    size_bytes: int
    metrics: dict[str, Any]
    status: str
    created_at: datetime
    quarantined_at: datetime | None = None
    quarantine_reason: str | None = None
    purged_at: datetime | None = None
    legal_hold: LegalHold | None = Field(default=None, description=(
        "while set, the version is never purged (it stays quarantined if it was)"))


class AliasMoveIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"version_id": "3f1c…", "reason": "rollback: v4 degraded landscapes"}]})

    version_id: str = Field(min_length=1, max_length=36)
    reason: str = Field(default="", max_length=1000)
    override_quarantine: bool = Field(default=False, description=(
        "roll back to a quarantined version anyway (models:admin; audited)"))


class AliasOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    version_id: str
    updated_at: datetime


class AliasMoveOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    alias: str
    from_version_id: str | None
    to_version_id: str
    reason: str
    moved_at: datetime


class AliasesOut(BaseModel):
    aliases: list[AliasOut]
    history: list[AliasMoveOut]


class ExportOut(BaseModel):
    """A diffusers-folder export of a version (built by a worker; poll until `completed`)."""

    id: str
    version_id: str
    state: str  # queued | running | completed | failed | purged
    digest: str | None = None  # sha256 of the tar
    size_bytes: int = 0
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    download_url: str | None = None  # GET it once `completed`
    forgotten: list[str] | None = None  # from the signed manifest
