"""API shapes for takedowns, their progress and results, and previews."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from app.states import State

EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"  # something@somewhere.tld, no spaces
# Stripped, then never empty: a blank prompt is the unconditional one, which guidance needs.
ConceptName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                               max_length=200)]
Prompt = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class ConceptKind(StrEnum):
    PERSON = "person"
    STYLE = "style"
    OBJECT = "object"
    CHARACTER = "character"
    NSFW = "nsfw"
    OTHER = "other"


class LegalBasis(StrEnum):
    COPYRIGHT = "copyright"
    DMCA = "dmca"
    PRIVACY = "privacy"
    GDPR_ART17 = "gdpr_art17"
    DSA_ART16 = "dsa_art16"
    SAFETY = "safety"
    CONTRACT = "contract"
    OTHER = "other"


class Claimant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    email: str = Field(max_length=320, pattern=EMAIL)
    organisation: str | None = Field(default=None, max_length=200)


class Signature(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="typed electronic signature")
    # A legal time needs its zone: a naive one is refused, never guessed.
    signed_at: AwareDatetime


class LegalRecord(BaseModel):
    """The notice as the claimant gave it: DMCA 17 USC 512(c)(3)(A) (i)-(vi) and EU DSA
    Art. 16(2) (a)-(d). Which elements are required depends on `legal_basis`
    (`REQUIRED_ELEMENTS`); contact details are the claimant's."""

    model_config = ConfigDict(extra="forbid")
    work_identification: str | None = Field(default=None, max_length=4000, description=(
        "the copyrighted work(s) or the person concerned (DMCA ii)"))
    material_location: str | None = Field(default=None, max_length=4000, description=(
        "where it appears: prompts or outputs that produce it (DMCA iii, DSA b)"))
    explanation: str | None = Field(default=None, max_length=8000, description=(
        "why the content is illegal (DSA a)"))
    address: str | None = Field(default=None, max_length=500)
    phone: str | None = Field(default=None, max_length=50)
    good_faith_statement: bool = False  # DMCA v
    accuracy_statement: bool = False  # DMCA vi, DSA d (bona fide, accurate and complete)
    authority_under_perjury: bool = False  # DMCA vi
    signature: Signature | None = None  # DMCA i
    jurisdictions: list[str] = Field(default_factory=list, max_length=50)


class TakedownCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "model": "conceptworld", "concept": "red tulip", "kind": "object",
        "legal_basis": "copyright",
        "claimant": {"name": "A. Rights", "email": "legal@example.com", "organisation": "Tulip Co"},
        "external_ref": "JIRA-1234", "priority": 0,
    }]})

    model: str = Field(min_length=1, max_length=200, description="model id or name")
    concept: ConceptName
    kind: ConceptKind
    legal_basis: LegalBasis
    claimant: Claimant
    external_ref: str | None = Field(default=None, max_length=200)
    integration: str | None = Field(default=None, max_length=40, pattern=r"^[a-z0-9_-]+$",
                                    description="ticket system; (integration, external_ref) "
                                    "is unique, so its retries find the first takedown")
    legal: LegalRecord = Field(default_factory=LegalRecord)
    prompts: list[Prompt] | None = Field(default=None, max_length=64)
    neighbors: list[ConceptName] | None = Field(default=None, max_length=64)
    due_at: AwareDatetime | None = None
    priority: int = Field(default=0, ge=0, le=9)
    # AnyHttpUrl refuses file:, ftp:, javascript: and friends.
    callback_url: AnyHttpUrl | None = None


class Progress(BaseModel):
    stage: str
    percent: float
    step: int
    total_steps: int
    eta_seconds: float | None = None
    losses: dict[str, float] = {}


class TakedownResult(BaseModel):
    version: str | None
    version_number: int | None = None
    production: bool = False
    metrics: dict[str, Any] = {}
    targets: dict[str, str] = {}
    neighbours: dict[str, list[str]] = {}
    covered_by: dict[str, list[str]] = Field(
        default_factory=dict,
        description="per concept erased already by earlier erasures (every name of it says one "
                    "of their words), those erasures: nothing was trained or mapped for it")


Outcome = Literal["accepted", "rejected", "partial"]


class Decision(BaseModel):
    """The decision and its statement of reasons (EU DSA Art. 17(3))."""
    outcome: Outcome
    statement_of_reasons: str
    automated: bool = Field(description="decided by automated means, with no person reviewing")
    decided_by: str = Field(description="`system`, or `key:<id>` of the reviewer")
    decided_at: datetime
    legal_basis: LegalBasis
    redress: str = Field(description="how the decision can be contested")


class DecisionIn(BaseModel):
    """A reviewer's decision on an ended takedown; it replaces the current one."""
    model_config = ConfigDict(extra="forbid")
    outcome: Outcome
    statement_of_reasons: str = Field(min_length=1, max_length=8000)


class TakedownOut(BaseModel):
    id: str
    model_id: str
    job_id: str | None
    state: State
    concept: str
    kind: ConceptKind
    legal_basis: LegalBasis
    claimant: dict[str, Any]
    external_ref: str | None
    integration: str | None
    legal: dict[str, Any]
    prompts: list[str] | None
    neighbors: list[str] | None
    due_at: datetime
    overdue: bool
    priority: int
    callback_url: str | None
    cancel_requested: bool
    progress: Progress | None
    result: TakedownResult | None
    error: dict[str, Any] | None
    decision: Decision | None
    created_at: datetime
    updated_at: datetime


class JobOut(BaseModel):
    """One erasure step on a model: the takedowns merged into it and how it went."""
    id: str
    model_id: str
    state: State
    takedown_ids: list[str] = Field(description="the takedowns it carries, oldest first")
    attempt: int = Field(description="tries so far (a worker that died gives a retry)")
    parent_version_id: str | None = Field(description="the version it trains from")
    version_id: str | None = Field(description="the version it made, once committed")
    worker: str | None = Field(description="host:pid:tag of the worker holding its lease")
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress | None
    error: str | None
    created_at: datetime


class TakedownPage(BaseModel):
    items: list[TakedownOut]
    next_cursor: str | None


class SampleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"prompt": "a photo of a red tulip", "seed": 0, "n": 4}]})

    prompt: str = Field(min_length=1, max_length=500)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    n: int = Field(default=4, ge=1, le=16)


class PreviewOut(BaseModel):
    id: str
    version_id: str
    prompt: str
    seed: int
    n: int
    state: str
    image_urls: list[str]
    error: str | None


class RescindIn(BaseModel):
    """The claimant withdrew the notice."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


class CounterNoticeIn(BaseModel):
    """A DMCA 17 USC 512(g)(3) counter-notice from the person whose material was removed: (A)
    signature, (B) the material and where it appeared, (C) under penalty of perjury, a good
    faith belief that it was removed by mistake or misidentification, (D) name, address,
    phone and consent to the jurisdiction of a federal district court."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320,
                              pattern=EMAIL)
    address: str = Field(min_length=1, max_length=500)
    phone: str = Field(min_length=1, max_length=50)
    material_identification: str = Field(min_length=1, max_length=4000, description=(
        "what was removed and where it appeared before (prompts, outputs)"))
    mistake_statement: StrictBool = Field(description=(
        "under penalty of perjury: removed by mistake or misidentification"))
    consent_to_jurisdiction: StrictBool = Field(description=(
        "consents to the federal district court's jurisdiction and accepts service of "
        "process from the claimant"))
    signature: Signature
    received_at: AwareDatetime | None = Field(default=None, description=(
        "when it reached the provider's designated agent, if before it is recorded here (by "
        "post or email): the restore window counts from it"))

    @field_validator("mistake_statement", "consent_to_jurisdiction")
    @classmethod
    def _made(cls, value: bool, info: ValidationInfo) -> bool:
        if not value:
            raise ValueError(f"{info.field_name} must be true: a counter-notice without it "
                             "does not meet 17 USC 512(g)(3)")
        return value


class SuitIn(BaseModel):
    """The claimant's notice that it filed an action seeking a court order against the
    counter-notifier (512(g)(2)(C)): the material stays down."""

    model_config = ConfigDict(extra="forbid")
    court: str = Field(min_length=1, max_length=200)
    case_number: str = Field(min_length=1, max_length=200)
    filed_at: AwareDatetime


class CopySentIn(BaseModel):
    """The claimant was sent its copy of the counter-notice (512(g)(2)(B))."""

    model_config = ConfigDict(extra="forbid")
    via: str = Field(min_length=1, max_length=200, description="how: `email`, `post`, …")
    sent_at: AwareDatetime


class ExtensionIn(BaseModel):
    """GDPR Art. 12(3): a further two months at most, with the reason told to the claimant."""

    model_config = ConfigDict(extra="forbid")
    months: int = Field(ge=1, le=2)
    reason: str = Field(min_length=1, max_length=2000)
